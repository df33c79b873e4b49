"""The failed records of a batch as CSV: the rejects file, and `batchyard errors`."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pajson

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
    with session(db) as connection:
        for block in ledger.record_tables(connection, batch_id, BLOCK):
            _write_block(handle, _block_table(block, fields, schema), header=not count)
            count += block.num_rows
    if not count:
        _write_block(handle, schema.empty_table(), header=True)
    return count


def _write_block(handle: TextIO, table: pa.Table, header: bool) -> None:
    out = io.BytesIO()
    pcsv.write_csv(table, out, write_options=pcsv.WriteOptions(include_header=header))
    handle.write(out.getvalue().decode("utf-8"))


def _block_table(block: pa.Table, fields: list[str], schema: pa.Schema) -> pa.Table:
    """Ledger records (`ledger.RECORD_COLUMNS`) as the rejects file's table; the payloads are
    parsed by Arrow's JSON reader in one go (they hold the raw text values)."""
    payloads = block["payload"].to_pylist()
    try:
        values = pajson.read_json(
            io.BytesIO("\n".join(payloads).encode("utf-8")),
            parse_options=pajson.ParseOptions(explicit_schema=pa.schema([pa.field(f, pa.string())
                                                                        for f in fields]),
                                              unexpected_field_behavior="ignore"),
        )
        columns = {f: values[f] for f in fields}
    except pa.ArrowInvalid:  # a value that is not text: the slow, general way
        parsed = [json.loads(p) for p in payloads]
        columns = {f: pa.array([_text(v.get(f)) for v in parsed], pa.string()) for f in fields}
    data = {f: columns[f] for f in fields}
    data.update(_row_number=block["row_number"], _error_code=block["error_code"],
                _error=block["error"])
    return pa.table(data, schema=schema)


def _text(value) -> str | None:
    return None if value is None else str(value)


def write_rejects(job: ImportJob, path: Path) -> int:
    """Write the batch's failed records to `path`; returns how many."""
    with path.open("w", newline="") as handle:
        return write_failed(job.db, job.batch_id, job.schema_name, handle)


def rejects_size(job: ImportJob) -> int:
    """About how many bytes the rejects file takes: its records' values and errors."""
    import sqlalchemy as sa

    records = ledger.records
    with session(job.db) as connection:
        found = connection.execute(
            sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(records.c.payload)
                                                   + sa.func.length(records.c.error) + 40), 0))
            .where(records.c.batch_id == job.batch_id,
                   records.c.status.in_(("failed", "abandoned")))).scalar_one()
    return int(found)


def rejects_path(source: str, batch_id: str) -> Path:
    """`<source>.<batch_id>.rejects.csv` beside the source."""
    path = Path(source)
    return path.with_name(f"{path.stem}.{batch_id}.rejects.csv")
