"""The failed records of a batch as CSV: the rejects file, and `batchyard errors`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.csv as pcsv

from batchyard.engines import session
from batchyard.ingest import ledger
from batchyard.ingest.job import ImportJob
from batchyard.schemas import load_schema

BLOCK = 10_000


def write_failed(db: str, batch_id: str, schema_name: str, handle: TextIO) -> int:
    """Write the failed records as CSV with their original columns first, so they can be fixed
    and imported (or retried) again; then `_raw` (the text of a record that could not be parsed
    into columns, such as a ragged row), `_row_number`, `_error_code` and `_error`.

    A missing value is an empty cell and an empty string a quoted `""`, as the CSV reader reads
    them, so a rejects file imported again gives back the same values. Returns the count."""
    plan = load_schema(schema_name)
    fields = [*plan.field_names, "_raw"]
    schema = pa.schema([pa.field(f, pa.string()) for f in fields]
                       + [pa.field("_row_number", pa.int64()), pa.field("_error_code", pa.string()),
                          pa.field("_error", pa.string())])
    count = 0
    block: list[dict] = []

    def flush(header: bool) -> None:
        out = io.BytesIO()
        pcsv.write_csv(pa.Table.from_pylist(block, schema=schema), out,
                       write_options=pcsv.WriteOptions(include_header=header))
        handle.write(out.getvalue().decode("utf-8"))
        block.clear()

    with session(db) as connection:
        for row_number, code, error, payload in ledger.iter_records(connection, batch_id):
            values = json.loads(payload)
            block.append({**{f: _text(values.get(f)) for f in fields}, "_row_number": row_number,
                          "_error_code": code, "_error": error})
            count += 1
            if len(block) >= BLOCK:
                flush(header=count == len(block))
    if block or not count:
        flush(header=count == len(block))
    return count


def _text(value) -> str | None:
    return None if value is None else str(value)


def write_rejects(job: ImportJob, path: Path) -> int:
    """Write the batch's failed records to `path`; returns how many."""
    with path.open("w", newline="") as handle:
        return write_failed(job.db, job.batch_id, job.schema_name, handle)


def rejects_path(source: str, batch_id: str) -> Path:
    """`<source>.<batch_id>.rejects.csv` beside the source."""
    path = Path(source)
    return path.with_name(f"{path.stem}.{batch_id}.rejects.csv")
