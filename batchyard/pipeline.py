"""The import core, free of Prefect: open a batch, process one chunk, close the batch.

Flows and other features (resume, retry, ETL, benchmarks) call these functions; the Prefect
layer only decides where and how often they run.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from batchyard import ledger
from batchyard.bytescan import contains_any
from batchyard.db import check_connection, checkpoint, safe_url, session
from batchyard.errors import (
    PROCESSING_ERROR,
    VALIDATION_ERROR,
    BatchStateError,
    ConfigurationError,
)
from batchyard.faults import pause_point
from batchyard.lease import describe_owner, owner_alive, owner_id
from batchyard.load import ensure_table, load_rows
from batchyard.schemas import default_table, load_schema
from batchyard.settings import get_settings
from batchyard.sizing import SizeRange, auto_sizes
from batchyard.sources import PARSE_ERROR, RAW, ChunkRef, SourceOptions, read_chunk, spool_source
from batchyard.transform import ROW, dedupe, derive, normalise
from batchyard.validate import validate_table


class ImportJob(BaseModel):
    """Everything a chunk needs to know about its batch; small and serialisable."""

    batch_id: str
    source: str
    schema_name: str = Field("users", description="users, orders or module:Class")
    db: str
    table: str


@dataclass
class ChunkResult:
    index: int
    n_rows: int
    success: int = 0
    failed: int = 0
    ignored: int = 0
    skipped: bool = False


def new_batch_id() -> str:
    return "b" + uuid.uuid4().hex[:12]


def resolve_job(source: str, schema_name: str, db: str, table: str | None,
                batch_id: str | None) -> ImportJob:
    plan = load_schema(schema_name)
    return ImportJob(batch_id=batch_id or new_batch_id(), source=str(source),
                     schema_name=schema_name, db=db, table=table or default_table(plan))


def open_batch(job: ImportJob, chunk_size: ChunkSize, options: SourceOptions | None = None,
               flow_run_id: str | None = None, fresh: bool = False) -> dict:
    """Create (or take up again) the batch row and the target table; refuse a double start.

    A batch left `running` by a dead process (a crash, `kill -9`) is taken over at once; one
    whose owner still lives is refused, also across processes and hosts.
    """
    plan = load_schema(job.schema_name)
    check_connection(job.db)
    options = options or SourceOptions()
    with session(job.db, write=True) as connection:
        ledger.ensure_ledger(connection)
        ensure_table(connection, plan, job.table)
        batch = ledger.get_batch(connection, job.batch_id)
        if batch is None:
            ledger.create_batch(connection, batch_id=job.batch_id, source=job.source,
                                schema_name=job.schema_name, target_table=job.table,
                                chunk_size=recorded_size(chunk_size),
                                options=options.model_dump_json())
        check_startable(batch, fresh)
        if batch is not None and (fresh or batch["status"] == "completed"):
            reset_batch(connection, job.batch_id)
        elif batch is not None:
            ledger.reopen_failed_chunks(connection, job.batch_id)
        previous = batch["owner"] if batch and batch["status"] == "running" else None
        ledger.start_batch(connection, job.batch_id, flow_run_id, owner_id(), previous)
        return ledger.get_batch(connection, job.batch_id)


class BatchLease:
    """Keeps the batch's lease fresh from a background thread while the run works, and tells
    the run when `batchyard stop` asked it to stop."""

    def __init__(self, job: ImportJob, interval: float = 5.0):
        self.job, self.interval = job, interval
        self.owner = owner_id()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="batchyard-lease", daemon=True)
        self.stopped = False

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                with session(self.job.db, write=True) as connection:
                    ledger.heartbeat(connection, self.job.batch_id, self.owner)

    def stop_requested(self) -> bool:
        """Asked between chunks; a database that is briefly away means no stop was seen yet."""
        if not self.stopped:
            with contextlib.suppress(Exception), session(self.job.db) as connection:
                self.stopped = ledger.stop_requested(connection, self.job.batch_id)
        return self.stopped

    def __enter__(self) -> BatchLease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def request_stop(db: str, batch_id: str) -> dict:
    """Ask a running batch to stop after the chunks in flight (`batchyard stop`)."""
    with session(db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, batch_id)
        if batch is None:
            raise BatchStateError(f"no batch {batch_id!r} in {safe_url(db)}")
        if batch["status"] != "running":
            raise BatchStateError(f"batch {batch_id} is {batch['status']}, not running")
        ledger.request_stop(connection, batch_id)
        return batch


def reset_batch(connection, batch_id: str) -> None:
    """Forget a batch's chunks and records so that it runs again from the first record."""
    connection.execute(ledger.records.delete().where(ledger.records.c.batch_id == batch_id))
    connection.execute(ledger.chunks.delete().where(ledger.chunks.c.batch_id == batch_id))
    connection.execute(ledger.batches.update().where(ledger.batches.c.batch_id == batch_id)
                       .values(status="pending", total=0, success=0, failed=0, ignored=0,
                               rejects_file=None))


def spool_dir(batch_id: str) -> Path:
    return get_settings().work_dir / "spool" / batch_id


def remove_spool(batch_id: str) -> None:
    """A closed batch's chunk files are not needed again (a resume spools the source afresh),
    and they are as large as the source: keep the work directory from filling up."""
    shutil.rmtree(spool_dir(batch_id), ignore_errors=True)


def fixed_sizes(chunk_size: int) -> Iterator[int]:
    while True:
        yield chunk_size


ChunkSize = int | Literal["auto"]


def chunk_sizes(chunk_size: ChunkSize) -> Iterator[int]:
    if chunk_size == "auto":
        return auto_sizes(SizeRange(*get_settings().auto_chunk_sizes))
    return fixed_sizes(int(chunk_size))


def recorded_size(chunk_size: ChunkSize) -> int:
    """The chunk size the batch row records (auto: the middle size)."""
    return get_settings().auto_chunk_sizes[1] if chunk_size == "auto" else int(chunk_size)


def plan_batch(job: ImportJob, options: SourceOptions, chunk_size: ChunkSize,
               ) -> tuple[list[ChunkRef], int, list[str]]:
    """Spool the source into chunks and record the boundaries in the ledger.

    A resumed batch re-reads the source and must find the same boundaries it recorded.
    """
    plan = load_schema(job.schema_name)
    with session(job.db) as connection:
        recorded = ledger.planned_chunks(connection, job.batch_id)
    source_plan = spool_source(job.source, options, plan, spool_dir(job.batch_id),
                               _sizes(recorded, chunk_sizes(chunk_size)))
    if recorded:
        got = [(c.first_row, c.n_rows) for c in source_plan.chunks]
        want = [(c["first_row"], c["n_rows"]) for c in recorded]
        if got != want:
            raise BatchStateError(
                f"batch {job.batch_id}: the source no longer matches the recorded chunks "
                f"({len(want)} recorded, {len(got)} now); start a new batch or pass --fresh"
            )
    with session(job.db, write=True) as connection:
        ledger.record_plan(connection, job.batch_id, source_plan.total, source_plan.chunks,
                           recorded_size(chunk_size))
        done = ledger.committed_chunks(connection, job.batch_id)
    todo = [c for c in source_plan.chunks if c.index not in done]
    pause_point("spooled")
    return todo, source_plan.total, source_plan.warnings


def _sizes(recorded: list[dict], then: Iterator[int]) -> Iterator[int]:
    """A resumed batch replays the boundaries it recorded, whatever sizing chose them."""
    for chunk in recorded:
        yield chunk["n_rows"]
    yield from then


_NUMBERS = re.compile(r"\b\d+\b")


def _parse_failures(raw: pa.Table) -> tuple[pa.Table, list[ledger.RecordEntry]]:
    broken = pc.is_valid(raw[PARSE_ERROR])
    if not pc.any(broken).as_py():
        return raw, []
    entries = [
        ledger.RecordEntry(r[ROW], "failed", VALIDATION_ERROR, r[PARSE_ERROR],
                           _NUMBERS.sub("N", r[PARSE_ERROR]), {"_raw": r[RAW]})
        for r in raw.filter(broken).select([ROW, PARSE_ERROR, RAW]).to_pylist()
    ]
    return raw.filter(pc.invert(broken)), entries


@dataclass
class Prepared:
    """A chunk after validation and transforms, ready to load: the typed rows, and the records
    that failed or were ignored on the way (with their ledger entries)."""

    output: pa.Table
    entries: list[ledger.RecordEntry]


def _nul_failures(raw: pa.Table, fields: list[str]) -> tuple[pa.Table, list[ledger.RecordEntry]]:
    """A NUL byte is valid in Arrow and pydantic but refused by PostgreSQL and breaks most
    tools downstream: reject the record, naming the field."""
    masks = {f: pc.fill_null(pc.match_substring(raw[f], "\x00"), False) for f in fields
             if contains_any(raw[f], b"\x00")}
    hits = [f for f, m in masks.items() if pc.any(m).as_py()]
    if not hits:
        return raw, []
    bad = masks[hits[0]]
    for f in hits[1:]:
        bad = pc.or_(bad, masks[f])
    entries = []
    for record in raw.filter(bad).to_pylist():
        named = [f for f in hits if record[f] is not None and "\x00" in record[f]]
        message = "; ".join(f"{f}: contains a NUL byte (\\x00)" for f in named)
        payload = {k: v for k, v in record.items() if k in fields}
        entries.append(ledger.RecordEntry(record[ROW], "failed", VALIDATION_ERROR, message,
                                          message, payload))
    return raw.filter(pc.invert(bad)), entries


def prepare_chunk(plan, raw: pa.Table) -> Prepared:
    """validate → transform: pure, no I/O, so a chunk task retry redoes nothing it needn't."""
    raw, entries = _parse_failures(raw)
    raw, nul_entries = _nul_failures(raw, plan.field_names)
    entries += nul_entries
    raw = raw.drop_columns([PARSE_ERROR, RAW])
    checked = validate_table(normalise(raw, plan), raw, plan)
    entries += [
        ledger.RecordEntry(r.row_number, "failed", r.code, r.error, r.reason, r.payload)
        for r in checked.rejects
    ]
    valid, duplicates = dedupe(checked.valid, plan.key)
    entries += [_duplicate_entry(d.row_number, d.first_row, d.key) for d in duplicates]
    output = derive(valid, plan)
    schema = plan.output_schema()
    output = output.select([*schema.names, ROW]).cast(schema.append(pa.field(ROW, pa.int64())))
    return Prepared(output, entries)


def work_slot_count() -> int:
    return get_settings().work_slots or os.cpu_count() or 2


@functools.cache
def _work_slots() -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(work_slot_count())


def process_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    """Read → validate → transform → load one chunk; its rows and ledger entries commit together.

    Up to --max-parallel chunks are in flight, but only as many as there are cores do their
    CPU work at once: more threads than cores only fight over the GIL (measured: 10 threads on
    2 cores were slower than 2). The chunk's pages are then checkpointed from the write-ahead
    log into the database file while the next chunk is written (SQLite), rather than inside a
    commit that holds up the next writer and a work slot (0.2-0.3 s per 80 MB, measured)."""
    with _work_slots():
        result = _process_chunk(job, ref)
    checkpoint(job.db)
    return result


def _process_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    plan = load_schema(job.schema_name)
    prepared = prepare_chunk(plan, read_chunk(ref))
    entries = prepared.entries
    with session(job.db, write=True) as connection:
        if not ledger.claim_chunk(connection, job.batch_id, ref.index):
            return ChunkResult(ref.index, ref.n_rows, skipped=True)
        loaded = load_rows(connection, job.table, prepared.output, plan.key, job.batch_id)
        entries += [_duplicate_entry(row, first, key) for row, first, key in loaded.duplicates]
        success = prepared.output.num_rows - len(loaded.duplicates)
        pause_point("chunk-loaded")
        ledger.commit_chunk(connection, job.batch_id, ref.index, success, entries)
    pause_point("chunk-committed")
    failed = sum(1 for e in entries if e.status == "failed")
    return ChunkResult(ref.index, ref.n_rows, success, failed, len(entries) - failed)


def _duplicate_entry(row: int, first: int, key: dict) -> ledger.RecordEntry:
    shown = ", ".join(f"{k}={v}" for k, v in key.items())
    return ledger.RecordEntry(
        row, "ignored", VALIDATION_ERROR,
        f"duplicate key {shown}: already loaded from row {first} of this batch",
        "duplicate key in this batch", key,
    )


def fail_chunk(job: ImportJob, ref: ChunkRef, error: str, code: str = PROCESSING_ERROR) -> None:
    with session(job.db, write=True) as connection:
        ledger.fail_chunk(connection, job.batch_id, ref.index, ref.n_rows, error, code)


def write_failed(db: str, batch_id: str, schema_name: str, handle) -> int:
    """The failed records as CSV with their original columns first, so they can be fixed and
    imported (or retried) again; `_row_number`, `_error_code` and `_error` come last."""
    plan = load_schema(schema_name)
    fields = [*plan.field_names, "_raw", "_row_number", "_error_code", "_error"]
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    count = 0
    with session(db) as connection:
        for row_number, code, error, payload in ledger.iter_records(connection, batch_id):
            writer.writerow({**json.loads(payload), "_row_number": row_number,
                             "_error_code": code, "_error": error})
            count += 1
    return count


def write_rejects(job: ImportJob, path: Path) -> int:
    with path.open("w", newline="") as handle:
        return write_failed(job.db, job.batch_id, job.schema_name, handle)


def rejects_path(source: str, batch_id: str) -> Path:
    path = Path(source)
    return path.with_name(f"{path.stem}.{batch_id}.rejects.csv")


def close_batch(job: ImportJob, cancelled: bool = False, rejects: str | None = None) -> dict:
    """Check the invariant, write the rejects file, and set the final status."""
    with session(job.db) as connection:
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
        error = f"{len(failed_chunks)} chunk(s) failed; resume the batch"
    elif accounted != batch["total"]:
        status, code = "failed", "PROCESSING_ERROR"
        error = (f"ledger invariant broken: total {batch['total']} != success + failed + "
                 f"ignored {accounted}")
    else:
        status = "completed"
    rejects_file = None
    if batch["failed"] and status == "completed":
        target = Path(rejects) if rejects else rejects_path(job.source, job.batch_id)
        if write_rejects(job, target):
            rejects_file = str(target)
    pause_point("batch-closing")
    with session(job.db, write=True) as connection:
        final = ledger.finish_batch(connection, job.batch_id, status, error, code, rejects_file)
    remove_spool(job.batch_id)
    return final


def fail_batch(job: ImportJob, error: str, code: str) -> None:
    """A fatal error ends the batch as failed (resumable), with the one-line reason."""
    try:
        with session(job.db, write=True) as connection:
            if ledger.get_batch(connection, job.batch_id):
                ledger.finish_batch(connection, job.batch_id, "failed", error, code)
    except Exception:  # the database may be what failed; the caller reports the error anyway
        pass


def summary(batch: dict) -> dict:
    """The final counts users see (CLI, flow result, artifacts)."""
    started, finished = batch.get("started_at"), batch.get("finished_at")
    duration = (finished - started).total_seconds() if started and finished else None
    total = batch["total"] or 0
    done = batch["success"] + batch["failed"] + batch["ignored"]
    return {
        "batch_id": batch["batch_id"],
        "status": batch["status"],
        "source": batch["source"],
        "schema": batch["schema_name"],
        "table": batch["target_table"],
        "total": total,
        "success": batch["success"],
        "failed": batch["failed"],
        "ignored": batch["ignored"],
        "progress_percent": round(100.0 * done / total, 2) if total else 100.0,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "rejects_file": batch["rejects_file"],
        "error": batch["error"],
        "flow_run_id": batch["flow_run_id"],
        "error_code": batch.get("error_code"),
        "stale": batch["status"] == "running" and not owner_alive(batch.get("owner"),
                                                                  batch.get("heartbeat_at")),
    }




def preflight(source: str, schema_name: str, db: str, table: str | None, batch_id: str | None,
              fmt: str | None, delimiter: str, encoding: str, sheet: str | None,
              fresh: bool = False) -> tuple[ImportJob, SourceOptions]:
    """Every check that can refuse an import in one line before Prefect starts: the schema,
    the file (exists, format, header), the table name and the database connection."""
    from batchyard.identifiers import check_identifier
    from batchyard.sources import inspect_source

    plan = load_schema(schema_name)
    try:
        options = SourceOptions(format=fmt, delimiter=delimiter, encoding=encoding, sheet=sheet)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid source option: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}"
        ) from None
    inspect_source(source, options, plan)
    job = resolve_job(str(Path(source).resolve()), schema_name, db, table, batch_id)
    check_identifier(job.table)
    if batch_id is not None:
        check_identifier(batch_id.replace("-", "_"), "batch id")
    check_connection(db)
    if batch_id is not None:
        with session(db, write=True) as connection:
            ledger.ensure_ledger(connection)
            check_startable(ledger.get_batch(connection, batch_id), fresh)
    return job, options


def check_startable(batch: dict | None, fresh: bool) -> None:
    """No double start, and no accidental second run of a completed batch."""
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


def batch_row(db: str, batch_id: str) -> dict:
    check_connection(db)
    with session(db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, batch_id)
    if batch is None:
        raise BatchStateError(f"no batch {batch_id!r} in {safe_url(db)}")
    return batch


def batch_summary(db: str, batch_id: str) -> dict | None:
    check_connection(db)
    with session(db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, batch_id)
    return summary(batch) if batch else None
