"""The batch ledger, kept in the target database beside the data (the batch and detail tables
of the PHP batch system this follows): one row per batch, one per chunk, one per failed or
ignored record. This is the only module that writes them.

A chunk's rows and its ledger entries commit in one transaction, so the ledger never disagrees
with the data, and the chunk row doubles as the resume point: a committed chunk is never loaded
again. Every function takes an open `Session` and runs inside its transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from batchyard.engines.base import columns
from batchyard.errors import BatchStateError

metadata = sa.MetaData()


def _counters(kind: type) -> list[sa.Column]:
    """The success, failed and ignored counts a batch and a chunk keep."""
    return columns("success failed ignored", kind, nullable=False, default=0)


batches = sa.Table(
    "batchyard_batches", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    *columns("source schema_name target_table", nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False, default=0),
    *_counters(sa.BigInteger),
    *columns("chunk_size chunks", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    *columns("started_at finished_at", sa.DateTime(timezone=True)),
    sa.Column("flow_run_id", sa.String(64)),
    *columns("rejects_file error"),
    sa.Column("error_code", sa.String(32)),
    sa.Column("options", sa.Text),
    sa.Column("owner", sa.String(200)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("stop_requested", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
)

chunks = sa.Table(
    "batchyard_chunks", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("chunk_index", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    *_counters(sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("error_code", sa.String(32)),
    sa.Column("committed_at", sa.DateTime(timezone=True)),
)

records = sa.Table(
    "batchyard_records", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("row_number", sa.BigInteger, primary_key=True),
    sa.Column("chunk_index", sa.Integer, nullable=False),
    *columns("status", sa.String(16), nullable=False),
    *columns("error_code", sa.String(32), nullable=False),
    *columns("error reason", nullable=False),
    sa.Column("retry_count", sa.Integer, nullable=False, default=0),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_batchyard_records_status", "batch_id", "status"),
)

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

    def row(self, batch_id: str, chunk_index: int, at: dt.datetime) -> dict:
        return {
            "batch_id": batch_id, "row_number": self.row_number, "chunk_index": chunk_index,
            "status": self.status, "error_code": self.error_code, "error": self.error,
            "reason": self.reason, "retry_count": 0,
            "payload": json.dumps(self.payload, ensure_ascii=False, default=str),
            "updated_at": at,
        }


def get_batch(connection, batch_id: str) -> dict | None:
    found = connection.execute(sa.select(batches).where(batches.c.batch_id == batch_id)).mappings()
    return with_times(found[0]) if found else None


def with_times(row: dict) -> dict:
    """SQLite hands timestamps back as text and MariaDB as naive UTC datetimes; make them aware
    datetimes as PostgreSQL does."""
    for name in ("created_at", "started_at", "finished_at", "committed_at", "heartbeat_at"):
        value = row.get(name)
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime):
            row[name] = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return row


def create_batch(connection, **values) -> None:
    connection.execute(batches.insert().values(status="pending", total=0, success=0, failed=0,
                                               ignored=0, created_at=now(), stop_requested=False,
                                               **values))


def start_batch(connection, batch_id: str, flow_run_id: str | None, owner: str,
                previous_owner: str | None, allow_completed: bool = False) -> None:
    """→ running, owned by `owner`. The update only matches the state the caller checked (not
    running, or running under the dead `previous_owner`), so of two racing starts one wins."""
    condition = batches.c.status != "running"
    if previous_owner is not None:
        condition = sa.or_(condition, batches.c.owner == previous_owner)
    result = connection.execute(
        batches.update()
        .where(batches.c.batch_id == batch_id,
               sa.true() if allow_completed else batches.c.status != "completed", condition)
        .values(status="running", started_at=now(), finished_at=None, error=None,
                error_code=None, flow_run_id=flow_run_id, owner=owner, heartbeat_at=now(),
                stop_requested=False)
    )
    if result.rowcount != 1:
        raise BatchStateError(f"batch {batch_id} is already running")


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


def record_plan(connection, batch_id: str, total: int, chunk_rows: Iterable,
                chunk_size: int) -> None:
    """Write the chunk boundaries once; a resumed batch keeps the ones it already has."""
    existing = connection.execute(
        sa.select(sa.func.count()).select_from(chunks).where(chunks.c.batch_id == batch_id)
    ).scalar_one()
    rows = [{"batch_id": batch_id, "chunk_index": c.index, "first_row": c.first_row,
             "n_rows": c.n_rows, "status": "pending", "success": 0, "failed": 0, "ignored": 0}
            for c in chunk_rows]
    if not existing and rows:
        connection.execute(chunks.insert(), rows)
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(total=total, chunk_size=chunk_size, chunks=len(rows)))


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


def commit_chunk(connection, batch_id: str, chunk_index: int, success: int,
                 entries: list[RecordEntry]) -> None:
    """Record a loaded chunk: its failed/ignored records, its counts, the batch's counters."""
    at = now()
    failed = sum(1 for e in entries if e.status == "failed")
    ignored = len(entries) - failed
    if entries:
        connection.execute(records.insert(), [e.row(batch_id, chunk_index, at) for e in entries])
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
    connection.execute(
        batches.update().where(batches.c.batch_id == batch_id).values(
            status=status, finished_at=now(), error=error, error_code=error_code,
            rejects_file=rejects_file, owner=None, stop_requested=False,
        )
    )
    return get_batch(connection, batch_id)


def iter_records(session, batch_id: str, statuses: tuple[str, ...] = ("failed", "abandoned")):
    """Failed records in row order; abandoned ones are failures too, but retries skip them."""
    yield from session.stream(
        sa.select(records.c.row_number, records.c.error_code, records.c.error,
                  records.c.payload)
        .where(records.c.batch_id == batch_id, records.c.status.in_(statuses))
        .order_by(records.c.row_number)
    )


def reset_batch(connection, batch_id: str) -> None:
    """Forget a batch's chunks and records so that it runs again from the first record."""
    connection.execute(records.delete().where(records.c.batch_id == batch_id))
    connection.execute(chunks.delete().where(chunks.c.batch_id == batch_id))
    connection.execute(batches.update().where(batches.c.batch_id == batch_id)
                       .values(status="pending", total=0, success=0, failed=0, ignored=0,
                               rejects_file=None))


def currently_failed(connection, batch_id: str, rows: list[int]) -> dict[int, int]:
    """Of these row numbers, the records still `failed`, with their retry counts."""
    found: dict[int, int] = {}
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        result = connection.execute(
            sa.select(records.c.row_number, records.c.retry_count)
            .where(records.c.batch_id == batch_id, records.c.status == "failed",
                   records.c.row_number.in_(part))
        )
        found.update({r[0]: r[1] for r in result.rows})
    return found


@dataclass
class RetryOutcome:
    """A retried record's new state: `succeeded`, `ignored`, `failed` again or `abandoned`."""

    row_number: int
    status: str
    retry_count: int
    error: str = ""
    reason: str = ""


def record_retries(connection, batch_id: str, outcomes: list[RetryOutcome]) -> None:
    """Write retried records' new states, and move the batch's counters with them: records that
    succeeded or were ignored stop counting as failed."""
    at = now()
    if outcomes:
        connection.execute(
            records.update()
            .where(records.c.batch_id == sa.bindparam("b_batch"),
                   records.c.row_number == sa.bindparam("b_row"))
            .values(status=sa.bindparam("v_status"), retry_count=sa.bindparam("v_count"),
                    error=sa.bindparam("v_error"), reason=sa.bindparam("v_reason"),
                    updated_at=sa.bindparam("v_at", type_=sa.DateTime(timezone=True))),
            [{"b_batch": batch_id, "b_row": o.row_number, "v_status": o.status,
              "v_count": o.retry_count, "v_error": o.error or "", "v_reason": o.reason or "",
              "v_at": at} for o in outcomes],
        )
    succeeded = sum(o.status == "succeeded" for o in outcomes)
    ignored = sum(o.status == "ignored" for o in outcomes)
    connection.execute(
        batches.update().where(batches.c.batch_id == batch_id).values(
            success=batches.c.success + succeeded,
            ignored=batches.c.ignored + ignored,
            failed=batches.c.failed - succeeded - ignored,
        )
    )
