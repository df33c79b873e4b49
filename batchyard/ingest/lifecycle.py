"""A batch's life in the ledger: checked, opened, planned into chunks, closed (or failed).

Statuses: pending → running → completed | failed | cancelled; a failed or cancelled batch (or
one left running by a dead process) can be taken up again, a completed one only afresh. Each
start is an attempt in the ledger, with its own start, end and seconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError

from batchyard.chunks import ChunkRef
from batchyard.diskspace import no_space, no_space_error
from batchyard.engines import check_connection, safe_url, session
from batchyard.errors import (
    PROCESSING_ERROR,
    BatchStateError,
    ConfigurationError,
    RunNotCompleted,
    is_retryable,
)
from batchyard.faults import pause_point
from batchyard.identifiers import check_identifier
from batchyard.ingest import early_spool, ledger
from batchyard.ingest.job import ImportJob, resolve_job
from batchyard.ingest.lease import describe_owner, owner_alive, owner_id
from batchyard.ingest.load import delete_batch_rows, ensure_table
from batchyard.ingest.reimport import check_not_reimported, content_hash
from batchyard.ingest.rejects import rejects_path, rejects_size, write_rejects
from batchyard.ingest.spool import (
    SourcePlan,
    inspect_source,
    iter_spool,
    remove_spool,
    spool_dir,
    spool_source,
)
from batchyard.ingest.summary import (
    batch_row,
    describe_failed_chunk,
    failed_chunk_cause,
    read_batch,
    records_of,
)
from batchyard.quality.store import ensure_profiles, forget_profiles
from batchyard.readers import SourceOptions
from batchyard.schemas import load_schema
from batchyard.settings import chunk_retry_delays, get_settings
from batchyard.sizing import ChunkSize, chunk_sizes, recorded_size

_log = logging.getLogger(__name__)


def check_startable(batch: dict | None, fresh: bool) -> None:
    """No double start, and no accidental second run of a completed batch.

    Raises BatchStateError for a completed batch (unless `fresh`) and for one whose owner lives."""
    if batch is None:
        return
    if batch["status"] == "completed" and not fresh:
        raise BatchStateError(
            f"batch {batch['batch_id']} already completed ({batch['success']} loaded); "
            "pass --fresh to import it again"
        )
    if batch["status"] == "running" and owner_alive(batch["owner"], batch["heartbeat_at"]):
        raise BatchStateError(
            f"batch {batch['batch_id']} is already running ({describe_owner(batch['owner'])}); "
            f"stop it with: batchyard stop {batch['batch_id']}"
        )


def preflight(source: str, schema_name: str, db: str, table: str | None, batch_id: str | None,
              fmt: str | None, delimiter: str, encoding: str, sheet: str | None,
              fresh: bool = False, null_values: list[str] | None = None,
              ) -> tuple[ImportJob, SourceOptions]:
    """Every check that can refuse an import in one line before Prefect starts: the schema,
    the file (exists, format, header), the table name and the database connection.

    Returns the job and the source options; raises a BatchyardError saying what and where."""
    plan = load_schema(schema_name)
    options = source_options(fmt, delimiter, encoding, sheet, null_values)
    inspect_source(source, options, plan)
    job = resolve_job(str(Path(source).resolve()), schema_name, db, table, batch_id)
    check_identifier(job.table)
    if batch_id is not None:
        check_batch_id(batch_id)
    check_connection(db)
    with session(db) as connection:  # reads: no lock is waited for before the run starts
        described = connection.describe(ledger.batches.name)
        if described is not None and batch_id is not None:
            check_startable(read_batch(connection, batch_id), fresh)
        if described is not None and plan.keyless and not fresh and "content_hash" in described[0]:
            check_not_reimported(connection, job.table, job.source, content_hash(job.source),
                                 options.model_dump_json(), job.batch_id)
    return job, options


def source_options(fmt: str | None, delimiter: str = ",", encoding: str = "utf-8",
                   sheet: str | None = None, null_values: list[str] | None = None) -> SourceOptions:
    """The source options of a command line. Raises ConfigurationError naming a bad one."""
    try:
        return SourceOptions(format=fmt, delimiter=delimiter, encoding=encoding, sheet=sheet,
                             null_values=null_values or [])
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigurationError(f"invalid source option: {first['loc'][0]}: {message}") from None


def check_batch_id(batch_id: str) -> str:
    """Letters, digits, hyphens and underscores, starting with a letter or digit, at most 64.

    Raises ConfigurationError naming the id and the rule."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", batch_id):
        raise ConfigurationError(f"invalid batch id {batch_id!r}: use letters, digits, hyphens and "
                                 "underscores, starting with a letter or digit, at most 64")
    return batch_id


def open_batch(job: ImportJob, chunk_size: ChunkSize, options: SourceOptions | None = None,
               flow_run_id: str | None = None, fresh: bool = False,
               started_at: dt.datetime | None = None) -> dict:
    """Create (or take up again) the batch row and the target table, and mark it running, as a
    new attempt (`import`, or `resume` of a batch that has committed chunks to keep) that began
    at `started_at` (when the run began: waiting here for the database's lock is part of it).

    A batch left `running` by a dead process (a crash, `kill -9`) is taken over at once; one
    whose owner still lives is refused, also across processes and hosts. A completed batch
    (with `fresh`) starts again from its first record; a failed one keeps its committed chunks.
    Returns the batch row; raises BatchStateError or ConfigurationError."""
    plan = load_schema(job.schema_name)
    check_connection(job.db)
    options = options or SourceOptions()
    sizes = get_settings().auto_chunk_sizes
    with session(job.db, write=True) as connection:
        ledger.ensure_ledger(connection)
        ensure_profiles(connection)
        ensure_table(connection, plan, job.table)
        batch = ledger.get_batch(connection, job.batch_id)
        again = batch is not None and (fresh or batch["status"] == "completed")
        digest = None
        if plan.keyless and (batch is None or again):  # the content this batch appends
            digest = content_hash(job.source)
            if not fresh:
                check_not_reimported(connection, job.table, job.source, digest,
                                     options.model_dump_json(), job.batch_id)
        if batch is None:
            ledger.create_batch(connection, batch_id=job.batch_id, source=job.source,
                                schema_name=job.schema_name, target_table=job.table,
                                chunk_size=recorded_size(chunk_size, sizes),
                                options=options.model_dump_json(), created_at=started_at,
                                content_hash=digest)
        check_startable(batch, fresh)
        kind = "import"
        if again:
            if plan.keyless:  # its rows were appended: a fresh run replaces them, not adds to them
                delete_batch_rows(connection, plan, job.table, job.batch_id)
                ledger.set_content_hash(connection, job.batch_id, digest)
            ledger.reset_batch(connection, job.batch_id)
            forget_profiles(connection, job.batch_id)
        elif batch is not None:
            ledger.reopen_failed_chunks(connection, job.batch_id)
            kind = "resume"
        previous = batch["owner"] if batch and batch["status"] == "running" else None
        ledger.start_batch(connection, job.batch_id, flow_run_id, owner_id(), previous, kind=kind,
                           started_at=started_at)
        return ledger.get_batch(connection, job.batch_id)


def plan_batch(job: ImportJob, options: SourceOptions, chunk_size: ChunkSize,
               ) -> tuple[list[ChunkRef], int, list[str]]:
    """The whole plan at once (see `iter_plan`): the chunks still to load, the record count
    and warnings."""
    result = SourcePlan([], [], 0)
    todo = list(iter_plan(job, options, chunk_size, result))
    return todo, result.total, result.warnings


def iter_plan(job: ImportJob, options: SourceOptions, chunk_size: ChunkSize,
              result: SourcePlan) -> Iterator[ChunkRef]:
    """Spool the source into chunks, record their boundaries in the ledger and yield the
    chunks still to load; `result` holds the record count and warnings once it ends.

    A batch with no recorded chunks yields each chunk as soon as the spool has cut and the
    ledger recorded it, so that loading overlaps reading. A resumed batch re-reads the source
    first and must find the boundaries it recorded (all of them, or the first ones of a
    spool that was interrupted), so that none of its chunks loads from a source that changed
    (raises BatchStateError if not)."""
    plan = load_schema(job.schema_name)
    sizes = get_settings().auto_chunk_sizes

    def read_recorded(connection) -> tuple[list[dict], bool]:
        return ([dict(c) for c in ledger.planned_chunks(connection, job.batch_id)],
                ledger.plan_complete(connection, job.batch_id))

    def record_plan() -> None:
        _patiently(job.db, lambda c: ledger.record_plan(
            c, job.batch_id, result.total, result.chunks, recorded_size(chunk_size, sizes)),
            write=True)
        pause_point("spooled")

    recorded, complete = _patiently(job.db, read_recorded)
    if recorded:  # new chunks recorded before any is handed out: a chunk loads once recorded
        early_spool.discard(job.batch_id)
        todo = _resumed_plan(job, options, plan, chunk_size, recorded, complete, result)
        record_plan()
        yield from todo
    else:
        cut = early_spool.take(job, options, chunk_size, result)
        if cut is None:
            cut = iter_spool(job.source, options, plan, spool_dir(job.batch_id),
                             chunk_sizes(chunk_size, sizes), result)
        read = 0
        for ref in cut:
            read += ref.n_rows
            _patiently(job.db, lambda c, ref=ref, read=read: ledger.record_chunk(
                c, job.batch_id, ref, read), write=True)
            yield ref
        record_plan()


def _patiently(db: str, step: Callable, write: bool = False):
    """Run `step(connection)` in its own session, again after a transient fault (as often and
    after as long as a chunk is retried). The plan hands out chunks while it records them, so its
    task cannot simply run again: the chunks it handed out would be handed out twice."""
    settings = get_settings()
    delays = chunk_retry_delays(settings) or (1.0,)
    for attempt in range(settings.chunk_retries + 1):
        try:
            with session(db, write=write) as connection:
                return step(connection)
        except Exception as exc:
            if attempt == settings.chunk_retries or not is_retryable(exc):
                raise
            delay = delays[min(attempt, len(delays) - 1)]
            _log.warning("the plan's ledger step failed (%s), again in %g s",
                         (str(exc).strip().splitlines() or [type(exc).__name__])[0], delay)
            time.sleep(delay)


def _resumed_plan(job: ImportJob, options: SourceOptions, plan, chunk_size: ChunkSize,
                  recorded: list[dict], complete: bool, result: SourcePlan) -> list[ChunkRef]:
    sizes = chunk_sizes(chunk_size, get_settings().auto_chunk_sizes)
    spooled = spool_source(job.source, options, plan, spool_dir(job.batch_id),
                           _replayed(recorded, sizes))
    for name in ("columns", "chunks", "total", "extra_columns", "warnings"):
        setattr(result, name, getattr(spooled, name))
    got = [(c.first_row, c.n_rows) for c in spooled.chunks]
    want = [(c["first_row"], c["n_rows"]) for c in recorded]
    if got != want and (complete or got[:len(want)] != want):
        raise BatchStateError(
            f"batch {job.batch_id}: the source no longer matches the recorded chunks "
            f"({len(want)} recorded, {len(got)} now); start a new batch or pass --fresh"
        )
    with session(job.db) as connection:
        done = ledger.committed_chunks(connection, job.batch_id)
    return [c for c in spooled.chunks if c.index not in done]


def _replayed(recorded: list[dict], then: Iterator[int]) -> Iterator[int]:
    """A resumed batch replays the boundaries it recorded, whatever sizing chose them."""
    for chunk in recorded:
        yield chunk["n_rows"]
    yield from then


def request_stop(db: str, batch_id: str) -> dict:
    """Ask a running batch to stop after the chunks in flight (`batchyard stop`).

    Returns the batch row; raises BatchStateError when there is no such batch, or it is not
    running (saying what to use instead), and ConfigurationError when `db` has no ledger."""
    batch = batch_row(db, batch_id)
    if batch["status"] == "running" and not owner_alive(batch["owner"], batch["heartbeat_at"]):
        raise BatchStateError(f"batch {batch_id} is running, but its process is gone: nothing to "
                              f"stop; resume it with: batchyard resume {batch_id}, or cancel it with: "
                              f"batchyard cancel {batch_id}")
    if batch["status"] != "running":
        raise BatchStateError(f"batch {batch_id} is {batch['status']}, not running: nothing to stop"
                              + _instead(batch))
    with session(db, write=True) as connection:
        if not ledger.request_stop(connection, batch_id):
            raise BatchStateError(f"batch {batch_id} is no longer running: nothing to stop")
    return batch


def _instead(batch: dict) -> str:
    batch_id = batch["batch_id"]
    if batch["status"] == "completed":
        return ""
    if batch["status"] == "cancelled":
        return f"; resume it with: batchyard resume {batch_id}"
    return (f"; cancel it with: batchyard cancel {batch_id}, or resume it with: "
            f"batchyard resume {batch_id}")


def cancel_batch(db: str, batch_id: str) -> dict:
    """Mark a batch that is not running (pending, failed, or left running by a dead process)
    `cancelled` (`batchyard cancel`); it can still be resumed. A cancelled batch stays as it is.

    Returns the batch row; raises BatchStateError for a completed or a live running batch."""
    batch = batch_row(db, batch_id)
    status = batch["status"]
    if status == "cancelled":
        return batch
    if status == "completed":
        raise BatchStateError(f"batch {batch_id} already completed: nothing to cancel")
    alive = status == "running" and owner_alive(batch["owner"], batch["heartbeat_at"])
    if alive:
        raise BatchStateError(f"batch {batch_id} is running ({describe_owner(batch['owner'])}): "
                              f"stop it with: batchyard stop {batch_id}")
    with session(db, write=True) as connection:
        previous = batch["owner"] if status == "running" else None
        if not ledger.cancel_batch(connection, batch_id, ("pending", "failed"), previous):
            raise BatchStateError(f"batch {batch_id} changed meanwhile; look again with: "
                                  f"batchyard status {batch_id}")
        return ledger.get_batch(connection, batch_id)


def close_batch(job: ImportJob, cancelled: bool = False, rejects: str | None = None) -> dict:
    """Check the invariant (total == success + failed + ignored), write the rejects file, set
    the final status and remove the spool. Returns the final batch row."""
    with session(job.db, write=True) as connection:
        ledger.set_stage(connection, job.batch_id, "closing")
        batch = ledger.get_batch(connection, job.batch_id)
        chunk_rows = ledger.planned_chunks(connection, job.batch_id)
    accounted = batch["success"] + batch["failed"] + batch["ignored"]
    error = code = None
    if cancelled:
        status = "cancelled"
    elif any(c["status"] != "committed" for c in chunk_rows):
        failed_chunks = [c for c in chunk_rows if c["status"] != "committed"]
        status = "failed"
        code = failed_chunks[0]["error_code"] or PROCESSING_ERROR
        error = _chunks_failed(failed_chunks)
    elif accounted != batch["total"]:
        status, code = "failed", PROCESSING_ERROR
        error = (f"ledger invariant broken: total {batch['total']} != success + failed + "
                 f"ignored {accounted}")
    else:
        status = "completed"
    rejects_file = None
    if batch["failed"] and status == "completed":
        target = Path(rejects) if rejects else rejects_path(job.source, job.batch_id)
        try:
            if write_rejects(job, target):
                rejects_file = str(target)
        except OSError as exc:
            if not no_space(exc):
                raise
            target.unlink(missing_ok=True)  # no half-written rejects file
            full = no_space_error(f"writing the rejects file {target}", target,
                                  rejects_size(job), "free some space, then resume the batch")
            status, code, error = "failed", full.code, str(full)
    pause_point("batch-closing")
    with session(job.db, write=True) as connection:
        final = ledger.finish_batch(connection, job.batch_id, status, error, code, rejects_file)
    remove_spool(job.batch_id)
    return final


def _chunks_failed(failed: list[dict], shown: int = 3) -> str:
    """`2 chunk(s) failed: chunk 2, rows 201-300 (100 records): TIMEOUT_ERROR: ...; ...`."""
    described = [describe_failed_chunk({
        "chunk": c["chunk_index"], "first_row": c["first_row"], "records": c["n_rows"],
        "last_row": c["first_row"] + c["n_rows"] - 1,
        "cause": failed_chunk_cause(c) if c["status"] == "failed" else "not loaded"})
        for c in failed[:shown]]
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"{len(failed)} chunk(s) failed: {'; '.join(described)}{more}"


def not_completed(summary: dict, db: str) -> RunNotCompleted | None:
    """What a batch run that did not complete ends with (None when it completed): a message
    naming the batch, its counts, why, and the command that resumes it (`db` as it may be
    shown: a block name, or a URL without its password)."""
    if summary["status"] == "completed":
        return None
    done = summary["success"] + summary["failed"] + summary["ignored"]
    of = records_of(summary) if summary.get("source_read", True) else f"the {records_of(summary)}"
    counts = (f"{summary['success']:,} of {of} loaded, "
              f"{summary['failed']:,} failed, {summary['ignored']:,} ignored")
    if summary["status"] == "cancelled":
        counts = (f"(stopped on request) after {done:,} of {records_of(summary)}: "
                  f"{summary['success']:,} loaded, {summary['failed']:,} failed, "
                  f"{summary['ignored']:,} ignored")
    why = f"; {summary['error']}" if summary.get("error") else ""
    shown = db if db.startswith("block:") else safe_url(db)
    separator = " " if summary["status"] == "cancelled" else ": "
    return RunNotCompleted(
        f"batch {summary['batch_id']} {summary['status']}{separator}{counts}{why}; resume it with: "
        f"batchyard resume {summary['batch_id']} --db {shown}",
        summary, cancelled=summary["status"] == "cancelled")


def fail_batch(job: ImportJob, error: str, code: str) -> None:
    """A fatal error ends the batch as failed (resumable), with the one-line reason. Never
    raises: the database may be what failed, and the caller reports the error anyway."""
    try:
        with session(job.db, write=True) as connection:
            if ledger.get_batch(connection, job.batch_id):
                ledger.finish_batch(connection, job.batch_id, "failed", error, code)
    except Exception:
        pass
