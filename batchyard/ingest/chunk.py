"""One chunk, read → prepare → load, with its ledger entries in the same transaction."""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import pyarrow as pa

from batchyard.chunks import ChunkRef, read_chunk
from batchyard.engines import bulk_form, checkpoint, session
from batchyard.errors import PROCESSING_ERROR, is_deadlock
from batchyard.faults import pause_point
from batchyard.ingest import ledger
from batchyard.ingest.batch_lock import lock_batch
from batchyard.ingest.job import ChunkResult, ImportJob
from batchyard.ingest.load import load_rows
from batchyard.ingest.prepare import Prepared, duplicate_entry, load_entries, prepare_chunk
from batchyard.quality.profile import profile_chunk
from batchyard.quality.store import record_chunk_profile
from batchyard.schemas import load_schema
from batchyard.settings import get_settings


def work_slot_count() -> int:
    """How many chunks of one process do their CPU work at once (default: the cores)."""
    return get_settings().work_slots or os.cpu_count() or 2


@functools.cache
def _work_slots() -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(work_slot_count())


def process_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    """Read, validate, transform and load one chunk; its rows and ledger entries commit together.

    A chunk committed before (a resumed batch, a retried task) is skipped. A committed chunk's
    file is deleted at once, so the spool holds only the chunks still to load. Up to --max-parallel
    chunks are in flight, but only `work_slot_count()` do their CPU work at once: more threads
    than cores only fight over the GIL. The engine's housekeeping (SQLite's WAL checkpoint)
    runs after the work slot is freed, so it holds up no other chunk.

    Raises whatever the database raised; the caller's retry policy decides what is transient."""
    with _work_slots():
        result = _process_chunk(job, ref)
    with contextlib.suppress(OSError):  # committed: a resume spools the source afresh
        os.unlink(ref.path)
    checkpoint(job.db)
    return result


def _committed(job: ImportJob, ref: ChunkRef) -> bool:
    with session(job.db) as connection:
        return ref.index in ledger.committed_chunks(connection, job.batch_id)


def _process_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    plan = load_schema(job.schema_name)
    try:
        raw = read_chunk(ref)
    except FileNotFoundError:  # deleted once committed: this is a retry of a finished chunk
        if _committed(job, ref):
            return ChunkResult(ref.index, ref.n_rows, skipped=True)
        raise
    prepared = prepare_chunk(plan, raw)
    entries = prepared.entries
    rejected = [e.reason for e in entries if e.status == "failed"]  # errors without values
    profile = profile_chunk({c.name: c.kind for c in plan.columns}, prepared.output,
                            len(rejected), rejected)  # from the chunk in memory: no second read
    pause_point("chunk-prepared", ref.index)
    # what needs no database is done before the transaction: SQLite's writers take turns
    prepared = Prepared(bulk_form(job.db, prepared.output), entries)
    table = ledger.records_table(job.batch_id, ref.index, entries) if entries else None
    for attempt in range(DEADLOCK_REDOS + 1):
        try:
            loaded = _load_chunk(job, ref, plan, prepared, table, profile)
            break
        except Exception as exc:
            if not is_deadlock(exc) or attempt == DEADLOCK_REDOS:
                raise
    if loaded is None:
        return ChunkResult(ref.index, ref.n_rows, skipped=True)
    entries, success = loaded
    pause_point("chunk-committed")
    failed = sum(1 for e in entries if e.status == "failed")
    return ChunkResult(ref.index, ref.n_rows, success, failed, len(entries) - failed)


DEADLOCK_REDOS = 5
"""How often a chunk's transaction runs again at once after the database broke a deadlock with
it (two chunks upgrading the batch's lock at the same moment), before its task's retries."""


def _load_chunk(job: ImportJob, ref: ChunkRef, plan, prepared: Prepared, table: pa.Table | None,
                profile: dict) -> tuple[list, int] | None:
    """The chunk's one transaction: claim it, load its rows, record its entries (`table`:
    those of `prepared` as `ledger.records_table`) and profile. Returns all its record
    entries and the records written, or None when another run committed it first."""
    with session(job.db, write=True) as connection:
        if not ledger.claim_chunk(connection, job.batch_id, ref.index):
            return None
        loaded = load_rows(connection, job.table, prepared.output, plan.table_key, job.batch_id,
                           first_wins=functools.partial(lock_batch, connection, job.batch_id))
        found = load_entries(prepared.output, loaded)
        entries = prepared.entries + found
        if found:
            table = pa.concat_tables([t for t in (table, ledger.records_table(
                job.batch_id, ref.index, found)) if t is not None])
        success = prepared.output.num_rows - len(loaded.duplicates) - len(loaded.refused)
        ledger.displace_records(connection, job.batch_id, [
            duplicate_entry(row, first, key) for row, first, key in loaded.displaced])
        pause_point("chunk-loaded")
        ledger.commit_chunk(connection, job.batch_id, ref.index, success, entries, table)
        record_chunk_profile(connection, job.batch_id, ref.index, profile)
    return entries, success


def fail_chunk(job: ImportJob, ref: ChunkRef, error: str, code: str = PROCESSING_ERROR) -> None:
    """Record a chunk that exhausted its retries: its records count as failed until a resume."""
    with session(job.db, write=True) as connection:
        ledger.fail_chunk(connection, job.batch_id, ref.index, ref.n_rows, error, code)
