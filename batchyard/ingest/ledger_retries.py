"""The ledger's part that a retry of failed records writes (`ingest/retry.py`): which records
are still failed, and their new states with the batch's counters, in the retry's transaction.
`ledger` re-exports these; with it, this is the only module that writes the ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from batchyard.ingest.ledger_schema import batches, records


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
