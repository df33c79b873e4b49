"""What users ask of the ledger: a batch's summary, lists, failure reasons, metrics.

Everything here only reads.
"""

from __future__ import annotations

import sqlalchemy as sa

from batchyard.engines import check_connection, safe_url, session
from batchyard.errors import BatchStateError
from batchyard.ingest import ledger
from batchyard.ingest.lease import owner_alive
from batchyard.ingest.ledger import batches, records, with_times


def summary(batch: dict) -> dict:
    """The final counts users see (CLI, flow result, artifacts) of a ledger batch row."""
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
        "warnings": warnings(batch),
    }


def warnings(batch: dict) -> list[str]:
    """What a finished batch's counts suggest the user check: most records ignored as
    duplicates means the key is probably not the column that identifies a record."""
    total, ignored = batch["total"] or 0, batch["ignored"] or 0
    if total and ignored * 2 > total:
        return [f"{ignored:,} of {total:,} records ({ignored / total:.0%}) were ignored as duplicate "
                f"keys of table {batch['target_table']}: is the schema's key right? "
                "(set __batchyard_key__ on the model)"]
    return []


def batch_row(db: str, batch_id: str) -> dict:
    """The ledger row of `batch_id` in `db`. Raises BatchStateError when there is none."""
    check_connection(db)
    with session(db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, batch_id)
    if batch is None:
        raise BatchStateError(f"no batch {batch_id!r} in {safe_url(db)}")
    return batch


def batch_summary(db: str, batch_id: str) -> dict | None:
    """The summary of `batch_id`, or None when `db` has no such batch."""
    check_connection(db)
    with session(db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, batch_id)
    return summary(batch) if batch else None


def failure_reasons(connection, batch_id: str, limit: int = 10) -> list[tuple]:
    """The commonest (status, reason, records) of a batch's failed and ignored records."""
    count = sa.func.count().label("n")
    return list(connection.execute(
        sa.select(records.c.status, records.c.reason, count)
        .where(records.c.batch_id == batch_id)
        .group_by(records.c.status, records.c.reason)
        .order_by(count.desc(), records.c.reason)
        .limit(limit)
    ))


def sample_records(connection, batch_id: str, status: str = "failed",
                   limit: int = 5) -> list[dict]:
    """The first `limit` records of a batch with this status: row number, error, payload."""
    return connection.execute(
        sa.select(records.c.row_number, records.c.error, records.c.payload)
        .where(records.c.batch_id == batch_id, records.c.status == status)
        .order_by(records.c.row_number).limit(limit)
    ).mappings()


def list_batches(connection, status: str | None = None, limit: int = 100) -> list[dict]:
    """The newest `limit` batch rows, of one status if given."""
    query = sa.select(batches).order_by(batches.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(batches.c.status == status)
    return [with_times(r) for r in connection.execute(query).mappings()]


def metrics(connection) -> dict:
    """Batches by status, record success rate, average and total batch duration."""
    by_status = dict(connection.execute(
        sa.select(batches.c.status, sa.func.count()).group_by(batches.c.status)
    ).rows)
    totals = connection.execute(
        sa.select(sa.func.coalesce(sa.func.sum(batches.c.total), 0),
                  sa.func.coalesce(sa.func.sum(batches.c.success), 0),
                  sa.func.coalesce(sa.func.sum(batches.c.failed), 0),
                  sa.func.coalesce(sa.func.sum(batches.c.ignored), 0))
    ).rows[0]
    durations = [
        (b["finished_at"] - b["started_at"]).total_seconds()
        for b in (with_times(r) for r in connection.execute(
            sa.select(batches.c.started_at, batches.c.finished_at)
            .where(batches.c.finished_at.is_not(None), batches.c.started_at.is_not(None))
        ).mappings())
    ]
    total, success, failed, ignored = (int(v) for v in totals)
    return {
        "batches": sum(by_status.values()),
        "by_status": by_status,
        "records": {"total": total, "success": success, "failed": failed, "ignored": ignored},
        "success_rate": round(success / total, 4) if total else None,
        "average_duration_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "total_duration_seconds": round(sum(durations), 3),
    }
