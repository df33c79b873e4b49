"""Retrying a batch's failed records (the reference's retrier), free of Prefect.

The failed records come from the ledger (their raw values, re-validated with the current schema
and transforms) or from a corrected rejects file (`_row_number` says which record a row fixes).
Each retried record's retry count goes up; those that now pass are loaded and marked
`succeeded`; those still failing past the retry limit become `abandoned` and stop coming back.
Batch counters move in the same transaction as the data, so the invariant holds after every
retry: total == success + failed + ignored (abandoned records count as failed).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa

from batchyard import ledger
from batchyard.db import session
from batchyard.errors import SourceError
from batchyard.load import load_rows
from batchyard.pipeline import ImportJob, _duplicate_entry, prepare_chunk
from batchyard.schemas import load_schema
from batchyard.sources import PARSE_ERROR, RAW, ChunkRef, _Spooler, read_chunk
from batchyard.transform import ROW


@dataclass
class RetryResult:
    index: int
    retried: int = 0
    succeeded: int = 0
    ignored: int = 0
    still_failed: int = 0
    abandoned: int = 0
    not_failed: int = 0


def _fixed_records(path: Path, fields: list[str]) -> Iterator[pa.Table]:
    """A corrected rejects file: schema columns by name (any case) plus `_row_number`."""
    try:
        reader = pcsv.open_csv(
            str(path), convert_options=pcsv.ConvertOptions(strings_can_be_null=False),
            read_options=pcsv.ReadOptions(block_size=8 << 20),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: cannot read the corrected file: {exc}") from None
    names = {n.strip().lower(): n for n in reader.schema.names}
    if "_row_number" not in names:
        raise SourceError(f"{path}: line 1: no _row_number column; it says which record a row fixes")
    for batch in reader:
        table = pa.Table.from_batches([batch])
        columns = {f: pc.cast(table[names[f.lower()]], pa.string()) if f.lower() in names
                   else pa.nulls(table.num_rows, pa.string()) for f in fields}
        columns[ROW] = pc.cast(table[names["_row_number"]], pa.int64())
        columns[PARSE_ERROR] = pa.nulls(table.num_rows, pa.string())
        columns[RAW] = pa.nulls(table.num_rows, pa.string())
        yield pa.table(columns)


def _ledger_records(job: ImportJob, fields: list[str], block: int) -> Iterator[pa.Table]:
    """Failed records as the ledger kept them; unparsable ones keep their parse error."""
    rows: list[dict] = []
    with session(job.db) as connection:
        for row_number, _code, error, payload in ledger.iter_records(connection, job.batch_id,
                                                                      ("failed",)):
            values = json.loads(payload)
            record = {f: values.get(f) for f in fields}
            record[ROW] = row_number
            record[PARSE_ERROR] = error if "_raw" in values else None
            record[RAW] = values.get("_raw")
            rows.append(record)
            if len(rows) >= block:
                yield _table(rows, fields)
                rows = []
    if rows:
        yield _table(rows, fields)


def _table(rows: list[dict], fields: list[str]) -> pa.Table:
    schema = pa.schema([pa.field(f, pa.string()) for f in fields]
                       + [pa.field(ROW, pa.int64()), pa.field(PARSE_ERROR, pa.string()),
                          pa.field(RAW, pa.string())])
    return pa.Table.from_pylist([{k: (None if v is None else v if k == ROW else str(v))
                                  for k, v in r.items()} for r in rows], schema=schema)


def spool_retry(job: ImportJob, directory: Path, chunk_size: int,
                from_file: str | None = None) -> list[ChunkRef]:
    plan = load_schema(job.schema_name)
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    spooler = _Spooler(directory, plan.field_names, iter(lambda: chunk_size, None))
    tables = (_fixed_records(Path(from_file), plan.field_names) if from_file
              else _ledger_records(job, plan.field_names, chunk_size))
    for table in tables:
        spooler.add(table)
    return spooler.finish()


def _currently_failed(connection, batch_id: str, rows: list[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        result = connection.execute(
            sa.select(ledger.records.c.row_number, ledger.records.c.retry_count)
            .where(ledger.records.c.batch_id == batch_id, ledger.records.c.status == "failed",
                   ledger.records.c.row_number.in_(part))
        )
        found.update({r[0]: r[1] for r in result.rows})
    return found


def retry_chunk(job: ImportJob, ref: ChunkRef, max_retries: int) -> RetryResult:
    plan = load_schema(job.schema_name)
    raw = read_chunk(ref)
    result = RetryResult(ref.index)
    with session(job.db, write=True) as connection:
        failed_now = _currently_failed(connection, job.batch_id, raw[ROW].to_pylist())
        result.not_failed = raw.num_rows - len(failed_now)
        raw = raw.filter(pc.is_in(raw[ROW], value_set=pa.array(list(failed_now), pa.int64())))
        prepared = prepare_chunk(plan, raw)
        loaded = load_rows(connection, job.table, prepared.output, plan.key, job.batch_id)
        entries = prepared.entries + [_duplicate_entry(r, f, k) for r, f, k in loaded.duplicates]
        outcome = {e.row_number: e for e in entries}
        at = ledger.now()
        updates = []
        for row_number, retries in failed_now.items():
            entry = outcome.get(row_number)
            count = retries + 1
            if entry is None:
                status, error, reason = "succeeded", "", ""
                result.succeeded += 1
            elif entry.status == "ignored":
                status, error, reason = "ignored", entry.error, entry.reason
                result.ignored += 1
            else:
                status = "abandoned" if count >= max_retries else "failed"
                error, reason = entry.error, entry.reason
                result.abandoned += status == "abandoned"
                result.still_failed += status == "failed"
            updates.append({"b_batch": job.batch_id, "b_row": row_number, "v_status": status,
                            "v_count": count, "v_error": error or "", "v_reason": reason or "",
                            "v_at": at})
        result.retried = len(updates)
        if updates:
            records = ledger.records
            connection.execute(
                records.update()
                .where(records.c.batch_id == sa.bindparam("b_batch"),
                       records.c.row_number == sa.bindparam("b_row"))
                .values(status=sa.bindparam("v_status"), retry_count=sa.bindparam("v_count"),
                        error=sa.bindparam("v_error"), reason=sa.bindparam("v_reason"),
                        updated_at=sa.bindparam("v_at", type_=sa.DateTime(timezone=True))),
                updates,
            )
        moved = result.succeeded + result.ignored
        connection.execute(
            ledger.batches.update().where(ledger.batches.c.batch_id == job.batch_id).values(
                success=ledger.batches.c.success + result.succeeded,
                ignored=ledger.batches.c.ignored + result.ignored,
                failed=ledger.batches.c.failed - moved,
            )
        )
    return result


def begin_retry(job: ImportJob) -> dict:
    """The batch is `running` (owned by this process) while its records are retried."""
    from batchyard.lease import owner_id
    from batchyard.pipeline import check_startable

    with session(job.db, write=True) as connection:
        batch = ledger.get_batch(connection, job.batch_id)
        check_startable(batch, fresh=True)
        previous = batch["owner"] if batch["status"] == "running" else None
        ledger.start_batch(connection, job.batch_id, None, owner_id(), previous,
                           allow_completed=True)
        return batch


def job_for(db: str, batch_id: str) -> ImportJob:
    from batchyard.pipeline import batch_row

    batch = batch_row(db, batch_id)
    return ImportJob(batch_id=batch_id, source=batch["source"], schema_name=batch["schema_name"],
                     db=db, table=batch["target_table"])
