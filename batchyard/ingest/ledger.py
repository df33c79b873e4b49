"""The batch ledger, kept in the target database beside the data (the batch and detail tables
of the PHP batch system this follows): one row per batch, per attempt, per chunk, and per failed
or ignored record (the tables are in `ledger_schema`). This is the only module that writes them.

A chunk's rows and its ledger entries commit in one transaction, so the ledger never disagrees
with the data, and the chunk row doubles as the resume point: a committed chunk is never loaded
again. Every function takes an open `Session` and runs inside its transaction. What a retry of
failed records writes is in `ledger_retries` (re-exported here).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa

from batchyard.errors import BatchStateError
from batchyard.ingest.ledger_retries import RetryOutcome, currently_failed, record_retries
from batchyard.ingest.ledger_schema import attempts, batches, chunks, metadata, records, with_times

__all__ = ["ACTIVE", "FINAL", "RecordEntry", "RetryOutcome", "attempts", "batches", "chunks",
           "currently_failed", "metadata", "record_retries", "records", "with_times"]

ACTIVE = ("pending", "running")
FINAL = ("completed", "failed", "cancelled")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_ledger(session) -> None:
    """Create the ledger tables; add columns a newer batchyard needs to older ones."""
    session.create(metadata)
    for table in metadata.sorted_tables:
        columns, _ = session.describe(table.name)
        for column in table.columns:
            if column.name not in columns:
                session.add_column(table.name, column)


@dataclass
class RecordEntry:
    row_number: int
    status: str  # failed | ignored
    error_code: str
    error: str
    reason: str
    payload: dict


_PAYLOAD = json.JSONEncoder(ensure_ascii=False, default=str)
"""One encoder for every payload: `json.dumps` with options builds a new one per call."""


def records_table(batch_id: str, chunk_index: int, entries: list[RecordEntry],
                  at: dt.datetime | None = None) -> pa.Table:
    """A chunk's record entries as one Arrow table, loaded in bulk like the data (binding them
    row by row cost more than loading the chunk's rows). A chunk builds it before its
    transaction (`commit_chunk(..., table=)`): on SQLite, whose writers take turns, encoding
    7,000 payloads inside it held up every other chunk."""
    at = at or now()
    n = len(entries)
    return pa.table({
        "batch_id": pa.array([batch_id] * n, pa.string()),
        "row_number": pa.array([e.row_number for e in entries], pa.int64()),
        "chunk_index": pa.array([chunk_index] * n, pa.int64()),
        "status": pa.array([e.status for e in entries], pa.string()),
        "error_code": pa.array([e.error_code for e in entries], pa.string()),
        "error": pa.array([e.error for e in entries], pa.string()),
        "reason": pa.array([e.reason for e in entries], pa.string()),
        "retry_count": pa.array([0] * n, pa.int64()),
        "payload": pa.array([_PAYLOAD.encode(e.payload) for e in entries], pa.string()),
        "updated_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
    })


def get_batch(connection, batch_id: str) -> dict | None:
    found = connection.execute(sa.select(batches).where(batches.c.batch_id == batch_id)).mappings()
    return with_times(found[0]) if found else None


def create_batch(connection, created_at: dt.datetime | None = None, **values) -> None:
    connection.execute(batches.insert().values(status="pending", total=0, success=0, failed=0,
                                               ignored=0, created_at=created_at or now(),
                                               stop_requested=False, processed=0, attempts=0,
                                               work_seconds=0.0, **values))


def start_batch(connection, batch_id: str, flow_run_id: str | None, owner: str,
                previous_owner: str | None, allow_completed: bool = False, kind: str = "import",
                started_at: dt.datetime | None = None) -> None:
    """→ running, owned by `owner`, as a new attempt of kind `kind` (import, resume, retry)
    that began at `started_at` (default: now; a run passes the moment it began, so that a wait
    for the database's lock counts). The update only matches the state the caller checked (not
    running, or running under the dead `previous_owner`), so of two racing starts one wins. An
    attempt a dead process left open ends `crashed` at its last heartbeat."""
    condition = batches.c.status != "running"
    if previous_owner is not None:
        condition = sa.or_(condition, batches.c.owner == previous_owner)
    before = get_batch(connection, batch_id)
    started_at = started_at or now()
    result = connection.execute(
        batches.update()
        .where(batches.c.batch_id == batch_id,
               sa.true() if allow_completed else batches.c.status != "completed", condition)
        .values(status="running", started_at=started_at, finished_at=None, error=None,
                error_code=None, flow_run_id=flow_run_id, owner=owner, heartbeat_at=now(),
                stop_requested=False, stage="spooling",
                attempts=sa.func.coalesce(batches.c.attempts, 0) + 1)
    )
    if result.rowcount != 1:
        raise BatchStateError(f"batch {batch_id} is already running")
    _close_attempt(connection, batch_id, "crashed", before["heartbeat_at"] if before else None)
    connection.execute(attempts.insert().values(
        batch_id=batch_id, attempt=(before["attempts"] or 0) + 1 if before else 1, kind=kind,
        status="running", flow_run_id=flow_run_id, started_at=started_at))


def _close_attempt(connection, batch_id: str, status: str, at: dt.datetime | None) -> None:
    """End the batch's open attempt (if any) at `at` (None: now), adding its seconds to the
    batch's work time."""
    found = connection.execute(
        sa.select(attempts.c.attempt, attempts.c.started_at)
        .where(attempts.c.batch_id == batch_id, attempts.c.finished_at.is_(None))).mappings()
    for row in (with_times(dict(r), attempts) for r in found):
        end = max(at or now(), row["started_at"])
        seconds = (end - row["started_at"]).total_seconds()
        connection.execute(
            attempts.update().where(attempts.c.batch_id == batch_id,
                                    attempts.c.attempt == row["attempt"])
            .values(status=status, finished_at=end, seconds=seconds))
        connection.execute(batches.update().where(batches.c.batch_id == batch_id).values(
            work_seconds=sa.func.coalesce(batches.c.work_seconds, 0.0) + seconds))


def set_stage(connection, batch_id: str, stage: str) -> None:
    """What the running batch does now: spooling, loading or closing."""
    connection.execute(batches.update().where(batches.c.batch_id == batch_id).values(stage=stage))


def heartbeat(connection, batch_id: str, owner: str) -> bool:
    """Refresh the lease; False when the stop flag is set."""
    connection.execute(batches.update().where(batches.c.batch_id == batch_id,
                                              batches.c.owner == owner)
                       .values(heartbeat_at=now()))
    return not stop_requested(connection, batch_id)


def stop_requested(connection, batch_id: str) -> bool:
    found = connection.execute(
        sa.select(batches.c.stop_requested).where(batches.c.batch_id == batch_id)
    ).rows
    return bool(found and found[0][0])


def request_stop(connection, batch_id: str) -> bool:
    result = connection.execute(
        batches.update().where(batches.c.batch_id == batch_id, batches.c.status == "running")
        .values(stop_requested=True)
    )
    return result.rowcount == 1


def record_chunk(connection, batch_id: str, ref, total: int) -> None:
    """One chunk's boundaries, recorded as the spool cuts it (before anything loads it), and
    the records read so far as the batch's total until the plan is complete. Written again
    after a fault (a commit whose answer was lost), it finds its row and adds none."""
    if not connection.execute(sa.select(chunks.c.chunk_index).where(
            chunks.c.batch_id == batch_id, chunks.c.chunk_index == ref.index)).rows:
        connection.execute(chunks.insert().values(
            batch_id=batch_id, chunk_index=ref.index, first_row=ref.first_row, n_rows=ref.n_rows,
            status="pending", success=0, failed=0, ignored=0))
    connection.execute(batches.update().where(batches.c.batch_id == batch_id).values(total=total))


def record_plan(connection, batch_id: str, total: int, chunk_rows: Iterable,
                chunk_size: int) -> None:
    """The plan is complete: the boundaries of the chunks not recorded yet (a resumed batch
    keeps the ones it has), the total, and the chunk count that marks it complete."""
    existing = {r[0] for r in connection.execute(
        sa.select(chunks.c.chunk_index).where(chunks.c.batch_id == batch_id)).rows}
    listed = list(chunk_rows)
    rows = [{"batch_id": batch_id, "chunk_index": c.index, "first_row": c.first_row,
             "n_rows": c.n_rows, "status": "pending", "success": 0, "failed": 0, "ignored": 0}
            for c in listed if c.index not in existing]
    if rows:
        connection.execute(chunks.insert(), rows)
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(total=total, chunk_size=chunk_size, chunks=len(listed),
                               stage="loading"))


def plan_complete(connection, batch_id: str) -> bool:
    """Whether the batch's chunk boundaries are all recorded (not only those a spool that was
    interrupted had cut)."""
    found = connection.execute(
        sa.select(batches.c.chunks).where(batches.c.batch_id == batch_id)).rows
    return bool(found) and found[0][0] is not None


def committed_chunks(connection, batch_id: str) -> dict[int, dict]:
    rows = connection.execute(
        sa.select(chunks).where(chunks.c.batch_id == batch_id, chunks.c.status == "committed")
    ).mappings()
    return {r["chunk_index"]: r for r in rows}


def planned_chunks(connection, batch_id: str) -> list[dict]:
    return connection.execute(
        sa.select(chunks).where(chunks.c.batch_id == batch_id).order_by(chunks.c.chunk_index)
    ).mappings()


def claim_chunk(connection, batch_id: str, chunk_index: int) -> bool:
    """Take the chunk's row lock for this transaction; False if it was committed already."""
    result = connection.execute(
        chunks.update()
        .where(chunks.c.batch_id == batch_id, chunks.c.chunk_index == chunk_index,
               chunks.c.status != "committed")
        .values(status="committing")
    )
    return result.rowcount == 1


def displace_records(connection, batch_id: str, displaced: list[RecordEntry]) -> None:
    """Later records of the batch whose key an earlier record took over (the first record in
    file order wins): each becomes an ignored duplicate of its chunk, and its chunk's and the
    batch's counts move from success to ignored, in the loading chunk's transaction."""
    if not displaced:
        return
    import bisect

    planned = planned_chunks(connection, batch_id)
    starts = [c["first_row"] for c in planned]
    by_chunk: dict[int, list[RecordEntry]] = {}
    for entry in displaced:
        chunk = planned[bisect.bisect_right(starts, entry.row_number) - 1]
        by_chunk.setdefault(chunk["chunk_index"], []).append(entry)
    at = now()
    for index, entries in sorted(by_chunk.items()):
        connection.ingest_into(records.name, records_table(batch_id, index, entries, at))
        connection.execute(
            chunks.update().where(chunks.c.batch_id == batch_id, chunks.c.chunk_index == index)
            .values(success=chunks.c.success - len(entries), ignored=chunks.c.ignored + len(entries)))
    connection.execute(batches.update().where(batches.c.batch_id == batch_id).values(
        success=batches.c.success - len(displaced), ignored=batches.c.ignored + len(displaced)))


def commit_chunk(connection, batch_id: str, chunk_index: int, success: int,
                 entries: list[RecordEntry], table: pa.Table | None = None) -> None:
    """Record a loaded chunk: its failed/ignored records, its counts, the batch's counters.
    `table`: `entries` as `records_table` made them, when the caller made it beforehand."""
    at = now()
    failed = sum(1 for e in entries if e.status == "failed")
    ignored = len(entries) - failed
    if entries:
        connection.ingest_into(records.name, table if table is not None
                               else records_table(batch_id, chunk_index, entries, at))
    previous = connection.execute(
        sa.select(chunks.c.failed).where(chunks.c.batch_id == batch_id,
                                         chunks.c.chunk_index == chunk_index)
    ).scalar_one()
    connection.execute(
        chunks.update()
        .where(chunks.c.batch_id == batch_id, chunks.c.chunk_index == chunk_index)
        .values(status="committed", success=success, failed=failed, ignored=ignored,
                error=None, committed_at=at)
    )
    connection.execute(
        batches.update().where(batches.c.batch_id == batch_id).values(
            success=batches.c.success + success,
            failed=batches.c.failed + failed - previous,
            ignored=batches.c.ignored + ignored,
            processed=batches.c.processed + success + len(entries),  # NULL: an older ledger
        )
    )


def fail_chunk(connection, batch_id: str, chunk_index: int, n_rows: int,
               error: str, error_code: str = "PROCESSING_ERROR") -> None:
    """A chunk that exhausted its retries: its records count as failed until it is resumed."""
    result = connection.execute(
        chunks.update()
        .where(chunks.c.batch_id == batch_id, chunks.c.chunk_index == chunk_index,
               chunks.c.status.in_(("pending", "committing")))
        .values(status="failed", failed=n_rows, error=error[:2000], error_code=error_code)
    )
    if result.rowcount:
        connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                           .values(failed=batches.c.failed + n_rows))


def reopen_failed_chunks(connection, batch_id: str) -> None:
    """Before a resume: failed chunks go back to pending and their records stop counting."""
    failed = connection.execute(
        sa.select(sa.func.coalesce(sa.func.sum(chunks.c.failed), 0))
        .where(chunks.c.batch_id == batch_id, chunks.c.status == "failed")
    ).scalar_one()
    connection.execute(
        chunks.update().where(chunks.c.batch_id == batch_id, chunks.c.status != "committed")
        .values(status="pending", failed=0, error=None)
    )
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(failed=batches.c.failed - failed))


def finish_batch(connection, batch_id: str, status: str, error: str | None = None,
                 error_code: str | None = None, rejects_file: str | None = None) -> dict:
    """The final status of the batch and of its attempt; returns the batch row."""
    at = now()
    connection.execute(
        batches.update().where(batches.c.batch_id == batch_id).values(
            status=status, finished_at=at, error=error, error_code=error_code,
            rejects_file=rejects_file, owner=None, stop_requested=False, stage="finished",
        )
    )
    _close_attempt(connection, batch_id, status, at)
    return get_batch(connection, batch_id)


def cancel_batch(connection, batch_id: str, statuses: tuple[str, ...],
                 previous_owner: str | None = None) -> bool:
    """→ cancelled, for a batch in one of `statuses` (or running under the dead
    `previous_owner`); False when it was in none of them by the time of the update."""
    before = get_batch(connection, batch_id)
    condition = batches.c.status.in_(statuses)
    if previous_owner is not None:
        condition = sa.or_(condition, sa.and_(batches.c.status == "running",
                                              batches.c.owner == previous_owner))
    done = connection.execute(batches.update().where(batches.c.batch_id == batch_id, condition)
                              .values(status="cancelled", finished_at=now(), owner=None,
                                      stop_requested=False, stage="finished")).rowcount == 1
    if done:  # a dead process's attempt ends at its last sign of life
        _close_attempt(connection, batch_id, "crashed", before["heartbeat_at"])
    return done


def _failed_records(batch_id: str, statuses: tuple[str, ...]):
    return (sa.select(records.c.row_number, records.c.error_code, records.c.error, records.c.payload)
            .where(records.c.batch_id == batch_id, records.c.status.in_(statuses))
            .order_by(records.c.row_number))


def iter_records(session, batch_id: str, statuses: tuple[str, ...] = ("failed", "abandoned")):
    """Failed records in row order; abandoned ones are failures too, but retries skip them."""
    yield from session.stream(_failed_records(batch_id, statuses))


RECORD_COLUMNS = pa.schema([("row_number", pa.int64()), ("error_code", pa.string()),
                            ("error", pa.string()), ("payload", pa.string())])


def record_tables(session, batch_id: str, size: int = 10_000,
                  statuses: tuple[str, ...] = ("failed", "abandoned")) -> Iterator[pa.Table]:
    """`iter_records` as Arrow tables of `RECORD_COLUMNS`, for writing them out in bulk."""
    yield from session.stream_arrow(_failed_records(batch_id, statuses), RECORD_COLUMNS, size)


def reset_batch(connection, batch_id: str) -> None:
    """Forget a batch's chunks, records and attempts so that it runs again from the first
    record."""
    for table in (records, chunks, attempts):
        connection.execute(table.delete().where(table.c.batch_id == batch_id))
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(status="pending", total=0, chunks=None, success=0, failed=0,
                               ignored=0, rejects_file=None, processed=0, attempts=0, work_seconds=0.0))


def set_content_hash(connection, batch_id: str, digest: str | None) -> None:
    """The source content a keyless batch appends (see `ingest.reimport`)."""
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(content_hash=digest))
