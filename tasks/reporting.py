"""Progress and result artifacts for a batch (what users watch in the Prefect UI)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from batchyard.chunks import ChunkRef
from batchyard.engines import session
from batchyard.ingest.job import ChunkResult, ImportJob
from batchyard.ingest.pace import eta_seconds, rows_per_second
from batchyard.ingest.summary import failure_reasons, records_of, sample_records
from batchyard.quality.report import batch_profile, render_profile
from tasks.policies import REPORTING


def artifact_key(batch_id: str, suffix: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"batch-{batch_id}-{suffix}".lower()).strip("-")


class BatchProgress:
    """Counts chunk results as they arrive and mirrors them to a progress artifact and the log,
    with the batch's stage: spooling, loading, closing, then how it finished.

    The percentage is of the records whose chunk committed: a chunk that failed as a whole
    counts its records as failed but not as done (a resume loads them), so a batch whose
    chunks all failed stays at 0 %. The artifact is updated at most once per `interval`
    seconds (and at each stage): each update is a round trip and a database write on the
    server, which shares the machine's cores with the import; the UI polls no faster."""

    def __init__(self, job: ImportJob, already: dict, interval: float = 1.0):
        self.job = job
        self.total = 0
        self.stage = "spooling"
        self.success = already.get("success", 0)
        self.failed = already.get("failed", 0)
        self.ignored = already.get("ignored", 0)
        self.chunk_failed = 0
        self.logger = get_run_logger()
        self.interval, self._shown_at = interval, time.monotonic()
        self.artifact_id = None
        self._shown = None
        self._loading_since, self._processed_before = time.monotonic(), self.processed
        self._read_all = False
        self.partial_total = already.get("chunks") is None
        """Whether `total` is only the records read so far (the source is still being read, or
        the batch ended before it was read to its end); a resumed batch whose plan was complete
        knows its total from the start."""
        if not self.partial_total:
            self.total = already.get("total") or 0

    def publish(self) -> None:
        """Create the progress artifact (once): called when the first chunks are under way, so
        that the round trip overlaps their work instead of delaying their start."""
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                progress=self.percent, key=artifact_key(self.job.batch_id, "progress"),
                description=self.description,
            )
            self._shown_at, self._shown = time.monotonic(), self.description

    @property
    def processed(self) -> int:
        """Records of committed chunks."""
        return self.success + self.failed + self.ignored - self.chunk_failed

    @property
    def percent(self) -> float:
        if not self.total:
            return 100.0 if self.stage == "completed" else 0.0
        return round(100.0 * min(self.processed, self.total) / self.total, 2)

    @property
    def description(self) -> str:
        in_chunks = (f"; {self.chunk_failed:,} of them in chunks that failed as a whole"
                     if self.chunk_failed else "")
        read = " read so far" if self.partial_total else ""
        return (f"Batch {self.job.batch_id}: {self.processed:,} of {self.total:,} records{read} "
                f"({self.success:,} loaded, {self.failed:,} failed, {self.ignored:,} ignored"
                f"{in_chunks}); stage: {self.stage}{self.pace}")

    @property
    def pace(self) -> str:
        """`; 41,200 rows/s, ETA 6 s` while loading, from the chunks this run committed since
        it began (chunks load while the source is still being read)."""
        rate = rows_per_second(self.processed - self._processed_before, self._loading_since)
        if rate is None or self.stage != "loading":
            return ""
        eta = eta_seconds(self.total - self.processed, rate)
        return f"; {rate:,.0f} rows/s" + (f", ETA {eta:,.0f} s" if eta is not None else "")

    def reading(self, chunks: Iterable[ChunkRef]) -> Iterator[ChunkRef]:
        """The chunks as the spool cuts them, counted: until the source is read, the total
        is the records read so far."""
        for ref in chunks:
            if self.partial_total:  # a resume hands out only the chunks still to load
                self.total = max(self.total, ref.first_row + ref.n_rows - 1)
            yield ref
        self._read_all = True

    def planned(self, total: int) -> None:
        """The source is read: `total` records to load."""
        if self.stage == "spooling":
            self.total, self.stage, self.partial_total = total, "loading", False
            self._show(final=True)

    def _show(self, final: bool = False) -> None:
        if self.artifact_id is None:
            self.publish()
        now = time.monotonic()
        due = final or self.processed >= self.total or now - self._shown_at >= self.interval
        if due and self.description != self._shown:
            update_progress_artifact(self.artifact_id, progress=self.percent,
                                     description=self.description)
            self._shown_at, self._shown = now, self.description

    def add(self, result: ChunkResult) -> None:
        if self._read_all:
            self.planned(self.total)
        if not result.skipped:
            self.success += result.success
            self.failed += result.failed
            self.ignored += result.ignored
        self._show()
        self.logger.info("chunk %d done: %s%% (%s)", result.index, self.percent, self.description)

    def finish(self) -> None:
        """Every chunk is in: the counts whatever the throttle held back, stage closing."""
        self.stage = "closing"
        self._show(final=True)

    def closed(self, summary: dict) -> None:
        """How the batch finished (a stopped batch ends short of 100 %)."""
        self.stage, self.total = summary["status"], summary["total"]
        self.partial_total = not summary.get("source_read", True)
        self.success, self.failed, self.ignored = (summary[k] for k in ("success", "failed", "ignored"))
        self.chunk_failed = sum(c["records"] for c in summary.get("failed_chunks", []))
        self._show(final=True)

    def add_failed_chunk(self, index: int, n_rows: int, error: str) -> None:
        self.failed += n_rows
        self.chunk_failed += n_rows
        self._show()
        self.logger.error("chunk %d failed after its retries: %s", index, error)


@task(name="report-batch", cache_policy=NO_CACHE, **REPORTING.options())
def publish_summary(job: ImportJob, summary: dict) -> None:
    """A table of the final counts, a markdown page with the commonest failure reasons, and
    one with the batch's quality profile (a small chart per column)."""
    create_table_artifact(
        table=[{k: summary[k] for k in ("batch_id", "status", "total", "success", "failed",
                                        "ignored", "duration_seconds")}],
        key=artifact_key(job.batch_id, "counts"),
        description=f"Final counts of batch {job.batch_id}",
    )
    with session(job.db) as connection:
        reasons = failure_reasons(connection, job.batch_id)
        samples = sample_records(connection, job.batch_id)
        profile = batch_profile(connection, job.batch_id)
    lines = [f"# Batch {job.batch_id}: {summary['status']}", "",
             f"{summary['success']:,} loaded into `{job.table}`, {summary['failed']:,} failed, "
             f"{summary['ignored']:,} ignored, of {records_of(summary)}.", ""]
    if summary.get("error"):
        lines += [f"**Error:** {summary['error']}", ""]
    lines += [f"**Warning:** {warning}" for warning in summary.get("warnings") or []]
    if summary.get("warnings"):
        lines.append("")
    if summary.get("failed_chunks"):
        lines += ["## Chunks that failed as a whole", "",
                  "Their records are counted as failed; resume the batch to load them.", "",
                  "| chunk | rows | records | error code | cause |", "|---|---|---|---|---|"]
        lines += [f"| {c['chunk']} | {c['first_row']}-{c['last_row']} | {c['records']:,} | "
                  f"{c['error_code']} | {_cell(c['cause'])} |" for c in summary["failed_chunks"]] + [""]
    if reasons:
        lines += ["## Commonest reasons (records still failed or ignored)", "",
                  "| status | reason | records |", "|---|---|---|"]
        lines += [f"| {s} | {_cell(r)} | {n:,} |" for s, r, n in reasons] + [""]
    if samples:
        lines += ["## Sample rejected rows", "", "| row | error | values |", "|---|---|---|"]
        lines += [f"| {s['row_number']} | {_cell(s['error'])} | "
                  f"{_cell(json.dumps(json.loads(s['payload']), ensure_ascii=False))} |"
                  for s in samples] + [""]
    if summary.get("rejects_file"):
        lines += [f"Rejected records: `{summary['rejects_file']}`"]
    create_markdown_artifact("\n".join(lines), key=artifact_key(job.batch_id, "report"),
                             description=f"Failures of batch {job.batch_id}")
    if profile is not None:
        create_markdown_artifact(render_profile(profile, job.batch_id, job.table),
                                 key=artifact_key(job.batch_id, "profile"),
                                 description=f"Quality profile of batch {job.batch_id}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
