"""The interface every reader implements, the options of a source, and the record tables they
yield.

A reader streams one file as tables of text columns, one per schema field, plus the record's
row number and, for a record that could not even be parsed (a ragged CSV row, an invalid JSON
line), the parse error and the raw text. Text, because then every format takes the same
checks; the schema decides the types.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, field_validator

from batchyard.chunks import PARSE_ERROR, RAW, ROW

BLOCK_ROWS = 65_536
"""Records per table a row-wise reader (JSON Lines, Excel, Parquet) yields."""


class SourceOptions(BaseModel):
    """How to read the source file."""

    format: str | None = Field(
        None, description="csv, jsonl, parquet or xlsx; default: from the extension."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")
    encoding: str = Field("utf-8", description="Text encoding of CSV and JSON Lines files.")
    sheet: str | None = Field(None, description="Excel sheet name; default: the first sheet.")
    null_values: list[str] = Field(
        default_factory=list,
        description="Cell values that mean missing, besides an empty unquoted CSV cell (e.g. NA, N/A, \\N). "
                    "In CSV only unquoted cells match; a quoted \"\" is always an empty string.",
    )

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        from batchyard.readers import format_names

        if value is not None and value not in format_names():
            raise ValueError(f"unknown format {value!r}: use {', '.join(format_names())}")
        return value


class Reader:
    """One file format. Subclasses set the class attributes, implement `header` and `records`,
    and register themselves with `batchyard.readers.register`.

    `path` exists and is a file; the registry has checked its first bytes against `magic`."""

    name: ClassVar[str]
    """The format's name, as `--format` takes it."""
    extensions: ClassVar[tuple[str, ...]] = ()
    """File name endings (lower case, with the dot) that mean this format."""
    magic: ClassVar[tuple[bytes, ...]] = ()
    """Leading bytes that identify a file of this (binary) format; empty for text formats."""
    look_alikes: ClassVar[dict[bytes, str]] = {}
    """Leading bytes of formats that are refused with a hint (an old .xls file)."""
    header_names_columns: ClassVar[bool] = True
    """False when records carry their own field names (JSON Lines): the header is then only a
    sample, and no column is required of it."""

    def __init__(self, path: Path, options: SourceOptions):
        self.path, self.options = path, options

    def header(self) -> list[str]:
        """The column names, in file order; empty for a file with no header and no records.

        Raises SourceError when the file cannot be read as this format."""
        raise NotImplementedError

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        """Stream the records as record tables (see `record_table`), in file order.

        `mapping` takes each schema field to the header name it is read from; `header` is what
        `header()` returned. Raises SourceError for a problem that refuses the whole file."""
        raise NotImplementedError

    def typed_columns(self) -> dict[str, pa.DataType]:
        """The types a typed format declares for its columns (Parquet), else nothing: schema
        inference then knows a float column whose values happen to be whole is a float."""
        return {}

    def arrow(self, batch_rows: int) -> Iterator[pa.Table | pa.RecordBatch]:
        """Stream every column with the types the format gives (CSV: inferred by Arrow), in
        pieces of at most about `batch_rows` records: what the ETL pipeline loads, which takes
        data as it finds it instead of validating it against a schema.

        Raises SourceError for a record or file that cannot be read."""
        raise NotImplementedError


def record_table(fields: list[str], columns: dict[str, Any], rows: Any,
                 errors: list[str | None] | None = None,
                 raws: list[str | None] | None = None) -> pa.Table:
    """A table of `fields` (text; a field without a column is null), the row numbers `rows`,
    and the parse error and raw text of each record (null when it parsed)."""
    n = len(rows)
    data = {f: columns.get(f, pa.nulls(n, pa.string())) for f in fields}
    data[ROW] = pa.array(rows, pa.int64())
    data[PARSE_ERROR] = pa.array(errors, pa.string()) if errors is not None else pa.nulls(n, pa.string())
    data[RAW] = pa.array(raws, pa.string()) if raws is not None else pa.nulls(n, pa.string())
    return pa.table(data)


def record_schema(fields: list[str]) -> pa.Schema:
    """The schema of every record table and spooled chunk for these fields."""
    return pa.schema([pa.field(f, pa.string()) for f in fields]
                     + [pa.field(ROW, pa.int64()), pa.field(PARSE_ERROR, pa.string()),
                        pa.field(RAW, pa.string())])


def plain(value: Any) -> Any:
    """Nested JSON and decimals become text and floats, which every target can store."""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def rows_to_batch(columns: list[str], rows: list) -> pa.RecordBatch:
    """Python rows (tuples or dicts) to one batch; a column that is null throughout stays null."""
    if rows and isinstance(rows[0], dict):
        data = {c: [plain(r.get(c)) for r in rows] for c in columns}
    else:
        data = {c: [plain(r[i]) for r in rows] for i, c in enumerate(columns)}
    return pa.RecordBatch.from_pydict(data)


def records_batch(records: list[dict]) -> pa.RecordBatch:
    """Dict records to one batch with the union of their keys, in first-seen order."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    return rows_to_batch(columns, records)


def as_text(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Typed input (Parquet, Excel) becomes text so every source takes the same checks.

    Timestamps are written in ISO 8601 with their fraction of a second; an aware timestamp as
    its UTC instant with a `Z`, so the same instant reads the same from every format."""
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return values
    if pa.types.is_null(values.type):
        return pc.cast(values, pa.string())
    if pa.types.is_timestamp(values.type):
        if values.type.tz is None:
            return pc.strftime(values, format="%Y-%m-%dT%H:%M:%S")
        utc = pc.cast(values, pa.timestamp(values.type.unit, tz="UTC"))
        return pc.binary_join_element_wise(pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S"), "Z", "")
    return pc.cast(values, pa.string())


def without_null_values(values: pa.ChunkedArray | pa.Array, null_values: list[str]):
    """Text cells that spell a missing value (`--null-values`) become nulls."""
    if not null_values:
        return values
    return pc.if_else(pc.is_in(values, value_set=pa.array(null_values, pa.string())),
                      pa.scalar(None, pa.string()), values)


def arrow_message(exc: Exception) -> str:
    """An Arrow error as one line of at most 300 characters; characters that do not print
    (binary junk a message quotes) are shown as `?`."""
    text = " ".join(str(exc).split())[:300]
    return "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
