"""Retrying a batch's failed records (the retrier of the PHP batch system this follows).

The failed records come from the ledger (their raw values, re-validated with the current schema
and transforms) or from a corrected rejects file (`_row_number` says which record a row fixes).
Each retried record's retry count goes up; those that now pass are loaded and marked
`succeeded`; those still failing past the retry limit become `abandoned` and stop coming back.
Batch counters move in the same transaction as the data, so the invariant holds after every
retry: total == success + failed + ignored (abandoned records count as failed).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from batchyard.chunks import PARSE_ERROR, RAW, ROW, ChunkRef, read_chunk
from batchyard.engines import safe_url, session
from batchyard.errors import RunNotCompleted, SourceError
from batchyard.ingest import ledger
from batchyard.ingest.job import ImportJob
from batchyard.ingest.lease import owner_id
from batchyard.ingest.lifecycle import check_startable
from batchyard.ingest.load import load_rows
from batchyard.ingest.prepare import load_entries, prepare_chunk
from batchyard.ingest.spool import spool_tables
from batchyard.ingest.summary import batch_row
from batchyard.readers.base import record_schema
from batchyard.schemas import load_schema
from batchyard.sizing import fixed_sizes


@dataclass
class RetryResult:
    """What one retried chunk did to its records."""

    index: int
    retried: int = 0
    succeeded: int = 0
    ignored: int = 0
    still_failed: int = 0
    abandoned: int = 0
    not_failed: int = 0


def _fixed_records(path: Path, fields: list[str]) -> Iterator[pa.Table]:
    """A corrected rejects file: schema columns by name (any case) plus `_row_number`. Every
    column is read as text (so `007` stays `007`); an empty cell is missing and `""` an empty
    string, as in an import."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        reader = pcsv.open_csv(
            str(path), read_options=pcsv.ReadOptions(block_size=8 << 20),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError, csv.Error) as exc:
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
    schema = record_schema(fields)
    with session(job.db) as connection:
        for row_number, _code, error, payload in ledger.iter_records(connection, job.batch_id,
                                                                      ("failed",)):
            values = json.loads(payload)
            record = {f: values.get(f) for f in fields}
            record[ROW] = row_number
            record[PARSE_ERROR] = error if RAW in values else None
            record[RAW] = values.get(RAW)
            rows.append(record)
            if len(rows) >= block:
                yield _table(rows, schema)
                rows = []
    if rows:
        yield _table(rows, schema)


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{k: (None if v is None else v if k == ROW else str(v))
                                  for k, v in r.items()} for r in rows], schema=schema)


def spool_retry(job: ImportJob, directory: Path, chunk_size: int,
                from_file: str | None = None) -> list[ChunkRef]:
    """Spool the records to retry (the ledger's failed ones, or a corrected file's) into chunks."""
    plan = load_schema(job.schema_name)
    tables = (_fixed_records(Path(from_file), plan.field_names) if from_file
              else _ledger_records(job, plan.field_names, chunk_size))
    refs = spool_tables(tables, plan.field_names, directory, fixed_sizes(chunk_size))
    with session(job.db, write=True) as connection:
        ledger.set_stage(connection, job.batch_id, "loading")
    return refs


def retry_chunk(job: ImportJob, ref: ChunkRef, max_retries: int) -> RetryResult:
    """Re-validate and load one chunk of retried records, in one transaction with their new
    ledger states. Records that are no longer failed (retried meanwhile) are left alone."""
    plan = load_schema(job.schema_name)
    raw = read_chunk(ref)
    result = RetryResult(ref.index)
    with session(job.db, write=True) as connection:
        failed_now = ledger.currently_failed(connection, job.batch_id, raw[ROW].to_pylist())
        result.not_failed = raw.num_rows - len(failed_now)
        raw = raw.filter(pc.is_in(raw[ROW], value_set=pa.array(list(failed_now), pa.int64())))
        prepared = prepare_chunk(plan, raw)
        loaded = load_rows(connection, job.table, prepared.output, plan.table_key, job.batch_id)
        entries = prepared.entries + load_entries(prepared.output, loaded)
        outcome = {e.row_number: e for e in entries}
        outcomes = []
        for row_number, retries in failed_now.items():
            entry = outcome.get(row_number)
            count = retries + 1
            if entry is None:
                outcomes.append(ledger.RetryOutcome(row_number, "succeeded", count))
                result.succeeded += 1
            elif entry.status == "ignored":
                outcomes.append(ledger.RetryOutcome(row_number, "ignored", count, entry.error,
                                                    entry.reason))
                result.ignored += 1
            else:
                status = "abandoned" if count >= max_retries else "failed"
                outcomes.append(ledger.RetryOutcome(row_number, status, count, entry.error,
                                                    entry.reason))
                result.abandoned += status == "abandoned"
                result.still_failed += status == "failed"
        result.retried = len(outcomes)
        ledger.record_retries(connection, job.batch_id, outcomes)
    return result


def begin_retry(job: ImportJob, flow_run_id: str | None = None,
                started_at: dt.datetime | None = None) -> dict:
    """Mark the batch `running` (owned by this process) while its records are retried, as an
    attempt of kind `retry` that began at `started_at`; a completed batch may be retried too.
    Returns the batch row as it was."""
    with session(job.db, write=True) as connection:
        ledger.ensure_ledger(connection)
        batch = ledger.get_batch(connection, job.batch_id)
        check_startable(batch, fresh=True)
        previous = batch["owner"] if batch["status"] == "running" else None
        ledger.start_batch(connection, job.batch_id, flow_run_id, owner_id(), previous,
                           allow_completed=True, kind="retry", started_at=started_at)
        return batch


def not_completed(summary: dict, totals: dict, max_retries: int, db: str) -> RunNotCompleted | None:
    """What a retry run that left records failing ends with (None when none is left): the
    batch, the counts, and how to go on (`db` as it may be shown, without a password)."""
    left = totals["still_failed"] + totals["abandoned"]
    if not left and summary["status"] == "completed":
        return None
    shown = db if db.startswith("block:") else safe_url(db)
    batch_id = summary["batch_id"]
    return RunNotCompleted(
        f"retry of batch {batch_id}: {totals['retried']:,} records retried, "
        f"{totals['succeeded']:,} loaded, {totals['ignored']:,} ignored, {totals['still_failed']:,} "
        f"still failed, {totals['abandoned']:,} abandoned after {max_retries} retries; the batch has "
        f"{summary['failed']:,} failed records: list them with batchyard errors {batch_id} --db "
        f"{shown}, fix them and retry with: batchyard retry {batch_id} --db {shown} --from FIXED.csv",
        {**summary, "retry": totals})


def job_for(db: str, batch_id: str) -> ImportJob:
    """The job of an existing batch. Raises BatchStateError when there is no such batch."""
    batch = batch_row(db, batch_id)
    return ImportJob(batch_id=batch_id, source=batch["source"], schema_name=batch["schema_name"],
                     db=db, table=batch["target_table"])
