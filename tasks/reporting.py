"""Progress and result artifacts for a batch (what users watch in the Prefect UI)."""

from __future__ import annotations

import json
import re
import time

from prefect import task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from batchyard.engines import session
from batchyard.ingest.job import ChunkResult, ImportJob
from batchyard.ingest.summary import failure_reasons, sample_records
from tasks.policies import REPORTING


def artifact_key(batch_id: str, suffix: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"batch-{batch_id}-{suffix}".lower()).strip("-")


class BatchProgress:
    """Counts chunk results as they arrive and mirrors them to a progress artifact and the log.

    The artifact is updated at most once per `interval` seconds (and at the end): each update is
    a round trip and a database write on the server, which shares the machine's cores with the
    import; the UI polls no faster than that anyway."""

    def __init__(self, job: ImportJob, total: int, already: dict, interval: float = 1.0):
        self.job = job
        self.total = total
        self.success = already.get("success", 0)
        self.failed = already.get("failed", 0)
        self.ignored = already.get("ignored", 0)
        self.logger = get_run_logger()
        self.interval, self._shown_at = interval, time.monotonic()
        self.artifact_id = None
        self._shown = None

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
        return self.success + self.failed + self.ignored

    @property
    def percent(self) -> float:
        return round(100.0 * self.processed / self.total, 2) if self.total else 100.0

    @property
    def description(self) -> str:
        return (f"Batch {self.job.batch_id}: {self.processed:,} of {self.total:,} records "
                f"({self.success:,} loaded, {self.failed:,} failed, {self.ignored:,} ignored)")

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
        if not result.skipped:
            self.success += result.success
            self.failed += result.failed
            self.ignored += result.ignored
        self._show()
        self.logger.info("chunk %d done: %s%% (%s)", result.index, self.percent, self.description)

    def finish(self) -> None:
        """The last state, whatever the throttle held back (a stopped batch ends short of 100 %)."""
        self._show(final=True)

    def add_failed_chunk(self, index: int, n_rows: int, error: str) -> None:
        self.failed += n_rows
        self._show()
        self.logger.error("chunk %d failed after its retries: %s", index, error)


@task(name="report-batch", cache_policy=NO_CACHE, **REPORTING.options())
def publish_summary(job: ImportJob, summary: dict) -> None:
    """A table of the final counts and a markdown page with the commonest failure reasons."""
    create_table_artifact(
        table=[{k: summary[k] for k in ("batch_id", "status", "total", "success", "failed",
                                        "ignored", "duration_seconds")}],
        key=artifact_key(job.batch_id, "counts"),
        description=f"Final counts of batch {job.batch_id}",
    )
    with session(job.db) as connection:
        reasons = failure_reasons(connection, job.batch_id)
        samples = sample_records(connection, job.batch_id)
    lines = [f"# Batch {job.batch_id}: {summary['status']}", "",
             f"{summary['success']:,} loaded into `{job.table}`, {summary['failed']:,} failed, "
             f"{summary['ignored']:,} ignored, of {summary['total']:,} records.", ""]
    if summary.get("error"):
        lines += [f"**Error:** {summary['error']}", ""]
    lines += [f"**Warning:** {warning}" for warning in summary.get("warnings") or []]
    if summary.get("warnings"):
        lines.append("")
    if reasons:
        lines += ["## Commonest reasons", "", "| status | reason | records |", "|---|---|---|"]
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


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]
