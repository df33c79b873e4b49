"""What users ask of the ledger: a batch's summary, its attempts and failed chunks, lists,
failure reasons, metrics.

Everything here only reads and creates nothing: a database that is not there, or has no ledger,
is refused in one line (`read_ledger`), and a ledger an older batchyard wrote is read as it is
(the columns it lacks read as empty).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import sqlalchemy as sa

from batchyard.engines import Session, check_exists, safe_url, session
from batchyard.errors import BatchStateError, ConfigurationError
from batchyard.ingest.lease import owner_alive
from batchyard.ingest.ledger import FINAL
from batchyard.ingest.ledger_schema import attempts, batches, chunks, records, with_times


def _alive(batch: dict) -> bool:
    return owner_alive(batch.get("owner"), batch.get("heartbeat_at"))


def work_seconds(batch: dict, now: dt.datetime | None = None) -> float | None:
    """The batch's duration: the sum of its attempts' seconds, the running one's so far (up to
    its last heartbeat when its process is gone); for a batch an older batchyard recorded
    without attempts, its last start to its end."""
    started, finished = batch.get("started_at"), batch.get("finished_at")
    if not batch.get("attempts"):
        return (finished - started).total_seconds() if started and finished else None
    seconds = batch.get("work_seconds") or 0.0
    if batch["status"] == "running" and started:
        end = (now or dt.datetime.now(dt.UTC)) if _alive(batch) else batch.get("heartbeat_at")
        seconds += max(0.0, ((end or started) - started).total_seconds())
    return seconds


def progress_percent(batch: dict) -> float:
    """The share of the records whose chunk was committed: records of a chunk that failed as a
    whole are counted as failed, but they are not done (a resume loads them). A batch with no
    records yet (still spooling) is at 0 %, unless it completed."""
    total = batch["total"] or 0
    if not total:
        return 100.0 if batch["status"] == "completed" else 0.0
    processed = batch.get("processed")
    if processed is None:  # an older ledger: no separate count of committed records
        processed = batch["success"] + batch["failed"] + batch["ignored"]
    return round(100.0 * min(processed, total) / total, 2)


def summary(batch: dict) -> dict:
    """The final counts users see (CLI, flow result, artifacts) of a ledger batch row."""
    seconds = work_seconds(batch)
    return {
        "batch_id": batch["batch_id"],
        "status": batch["status"],
        "stage": batch.get("stage") or ("finished" if batch["status"] in FINAL else None),
        "source": batch["source"],
        "schema": batch["schema_name"],
        "table": batch["target_table"],
        "total": batch["total"] or 0,
        "source_read": batch.get("chunks") is not None,
        "success": batch["success"],
        "failed": batch["failed"],
        "ignored": batch["ignored"],
        "progress_percent": progress_percent(batch),
        "duration_seconds": round(seconds, 3) if seconds is not None else None,
        "attempts": batch.get("attempts") or 0,
        "rejects_file": batch["rejects_file"],
        "error": batch["error"],
        "flow_run_id": batch["flow_run_id"],
        "error_code": batch.get("error_code"),
        "stale": batch["status"] == "running" and not _alive(batch),
        "warnings": warnings(batch),
    }


def records_of(summary: dict) -> str:
    """`2,000 records`, or `900 records read so far` for a batch that ended before its source
    was read to the end (a stop while it was still being read): its total is not the file's."""
    read = "" if summary.get("source_read", True) else " read so far"
    return f"{summary['total']:,} records{read}"


def warnings(batch: dict) -> list[str]:
    """What a finished batch's counts suggest the user check: most records ignored as
    duplicates means the key is probably not the column that identifies a record."""
    total, ignored = batch["total"] or 0, batch["ignored"] or 0
    if total and ignored * 2 > total:
        return [f"{ignored:,} of {total:,} records ({ignored / total:.0%}) were ignored as duplicate "
                f"keys of table {batch['target_table']}: is the schema's key right? "
                "(set __batchyard_key__ on the model)"]
    return []


@contextlib.contextmanager
def read_ledger(db: str) -> Iterator[Session]:
    """A read-only session on the ledger in `db`.

    Raises ConfigurationError: `no such database: URL` (a SQLite file that is not there),
    `cannot connect to URL: ...`, or `no batchyard ledger in URL`."""
    check_exists(db)
    with session(db) as connection:
        if connection.describe(batches.name) is None:
            raise ConfigurationError(f"no batchyard ledger in {safe_url(db)}")
        yield connection


def _select(connection, table: sa.Table) -> sa.Select | None:
    """A select of the columns of `table` this ledger has; None when it has no such table."""
    found = connection.describe(table.name)
    if found is None:
        return None
    present = set(found[0])
    return sa.select(*[c for c in table.columns if c.name in present])


def read_batch(connection, batch_id: str) -> dict | None:
    found = connection.execute(_select(connection, batches)
                               .where(batches.c.batch_id == batch_id)).mappings()
    return with_times(found[0]) if found else None


def batch_row(db: str, batch_id: str) -> dict:
    """The ledger row of `batch_id` in `db`. Raises BatchStateError when there is none, and
    ConfigurationError as `read_ledger` does."""
    with read_ledger(db) as connection:
        batch = read_batch(connection, batch_id)
    if batch is None:
        raise BatchStateError(f"no batch {batch_id!r} in {safe_url(db)}")
    return batch


def batch_summary(db: str, batch_id: str) -> dict | None:
    """The summary of `batch_id` with its attempts and failed chunks (`details`), or None when
    `db` has no such batch. Raises ConfigurationError as `read_ledger` does."""
    with read_ledger(db) as connection:
        batch = read_batch(connection, batch_id)
        return {**summary(batch), **details(connection, batch_id), **pace(connection, batch)} \
            if batch else None


def final_report(db: str, batch: dict) -> dict:
    """The summary of a batch just closed (`batch`, its ledger row), with its `details`."""
    with session(db) as connection:
        return {**summary(batch), **details(connection, batch["batch_id"]), **pace(connection, batch)}


def failed_chunk_cause(chunk: dict) -> str:
    """`CODE: cause` of a chunk that failed as a whole (its error without a repeated code)."""
    code = chunk.get("error_code") or "PROCESSING_ERROR"
    return f"{code}: {(chunk.get('error') or 'no reason recorded').removeprefix(code + ': ')}"


def describe_failed_chunk(chunk: dict) -> str:
    """`chunk 2, rows 201-300 (100 records): TIMEOUT_ERROR: database is locked`."""
    return (f"chunk {chunk['chunk']}, rows {chunk['first_row']}-{chunk['last_row']} "
            f"({chunk['records']:,} records): {chunk['cause']}")


def details(connection, batch_id: str) -> dict:
    """A batch's attempts (kind, start, end, seconds, status), the time from its first start to
    its last end, and its chunks that failed as a whole, with their rows and causes."""
    history = []
    query = _select(connection, attempts)
    if query is not None:
        rows = connection.execute(query.where(attempts.c.batch_id == batch_id)
                                  .order_by(attempts.c.attempt)).mappings()
        history = [with_times(dict(r), attempts) for r in rows]
    failed = [
        {"chunk": c["chunk_index"], "first_row": c["first_row"],
         "last_row": c["first_row"] + c["n_rows"] - 1, "records": c["n_rows"],
         "error_code": c["error_code"], "cause": failed_chunk_cause(c)}
        for c in connection.execute(_select(connection, chunks).where(
            chunks.c.batch_id == batch_id, chunks.c.status == "failed")
            .order_by(chunks.c.chunk_index)).mappings()
    ]
    ends = [a["finished_at"] for a in history if a["finished_at"]]
    elapsed = (max(ends) - history[0]["started_at"]).total_seconds() if ends else None
    return {
        "attempt_history": [
            {"attempt": a["attempt"], "kind": a["kind"], "status": a["status"],
             "started_at": a["started_at"].isoformat(),
             "finished_at": a["finished_at"].isoformat() if a["finished_at"] else None,
             "seconds": round(a["seconds"], 3) if a["seconds"] is not None else None}
            for a in history],
        "elapsed_seconds": round(elapsed, 3) if elapsed is not None else None,
        "failed_chunks": failed,
    }


def pace(connection, batch: dict) -> dict:
    """`rows_per_second` of the batch's last attempt and, while it runs, its `eta_seconds`."""
    import datetime as dt

    from batchyard.ingest.pace import ledger_pace

    query = _select(connection, attempts)
    last = None
    if query is not None:
        found = connection.execute(query.where(attempts.c.batch_id == batch["batch_id"])
                                   .order_by(attempts.c.attempt.desc()).limit(1)).mappings()
        last = with_times(dict(found[0]), attempts) if found else None
    described = connection.describe(chunks.name)
    if last is None or described is None or "committed_at" not in described[0]:
        return ledger_pace(0, 0, batch["status"], None, [], None)  # an older ledger: no pace
    committed = [with_times(dict(r), chunks) for r in connection.execute(
        sa.select(chunks.c.n_rows, chunks.c.committed_at)
        .where(chunks.c.batch_id == batch["batch_id"], chunks.c.status == "committed")).mappings()]
    return ledger_pace(batch["total"] or 0, batch.get("processed") or 0, batch["status"], last,
                       [(c["n_rows"], c["committed_at"]) for c in committed], dt.datetime.now(dt.UTC))


def failure_reasons(connection, batch_id: str, limit: int = 10) -> list[tuple]:
    """The commonest (status, reason, records) of a batch's records that are still failed (or
    abandoned) or ignored; records a retry loaded are no longer failures."""
    count = sa.func.count().label("n")
    return list(connection.execute(
        sa.select(records.c.status, records.c.reason, count)
        .where(records.c.batch_id == batch_id,
               records.c.status.in_(("failed", "abandoned", "ignored")))
        .group_by(records.c.status, records.c.reason)
        .order_by(count.desc(), records.c.reason)
        .limit(limit)
    ))


def sample_records(connection, batch_id: str, limit: int = 5) -> list[dict]:
    """The first `limit` still failed records of a batch: row number, error, payload."""
    return connection.execute(
        sa.select(records.c.row_number, records.c.error, records.c.payload)
        .where(records.c.batch_id == batch_id, records.c.status.in_(("failed", "abandoned")))
        .order_by(records.c.row_number).limit(limit)
    ).mappings()


def list_batches(connection, status: str | None = None, limit: int = 100) -> list[dict]:
    """The newest `limit` batch rows, of one status if given."""
    query = _select(connection, batches).order_by(batches.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(batches.c.status == status)
    return [with_times(r) for r in connection.execute(query).mappings()]


def metrics(connection) -> dict:
    """Batches by status, record success rate, and durations: per batch the sum of its
    attempts' seconds (average and total), and the attempts themselves."""
    rows = [with_times(r) for r in connection.execute(_select(connection, batches)).mappings()]
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    total, success, failed, ignored = (sum(r[k] or 0 for r in rows)
                                       for k in ("total", "success", "failed", "ignored"))
    finished = [(r, work_seconds(r)) for r in rows if r["status"] in FINAL]
    durations = [s for _, s in finished if s is not None]
    attempt_count = sum(r["attempts"] or 1 for r, s in finished if s is not None)
    return {
        "batches": len(rows),
        "by_status": by_status,
        "records": {"total": total, "success": success, "failed": failed, "ignored": ignored},
        "success_rate": round(success / total, 4) if total else None,
        "average_duration_seconds": round(sum(durations) / len(durations), 3) if durations else None,
        "total_duration_seconds": round(sum(durations), 3),
        "attempts": attempt_count,
        "average_attempt_seconds": round(sum(durations) / attempt_count, 3) if attempt_count else None,
    }
