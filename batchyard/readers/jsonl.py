"""JSON Lines: one JSON object per line; a line that is not one becomes a parse-error record.
A JSON null (or an absent key) is missing; "" is an empty string.

Records carry their own keys, so there is no header to check: each schema field is looked up
(case-insensitively) in every record."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from batchyard.errors import SourceError
from batchyard.readers import register
from batchyard.readers.base import BLOCK_ROWS, Reader, record_table, records_batch, without_null_values
from batchyard.settings import get_settings

RAW_LIMIT = 10_000
"""Characters of an invalid line kept as its raw text."""


@register
class JsonLinesReader(Reader):
    name = "jsonl"
    extensions = (".jsonl", ".ndjson", ".json")
    header_names_columns = False

    def header(self) -> list[str]:
        """The keys of the first valid object stand for a header."""
        limit = get_settings().max_record_bytes
        with self.path.open("r", encoding=self.options.encoding, errors="replace") as handle:
            for number in itertools.count(1):
                line = self._line(handle, limit, number)
                if not line:
                    break
                try:
                    record = _loads(line.strip().lstrip("\ufeff"))
                except ValueError:
                    continue
                if isinstance(record, dict):
                    return [str(k) for k in record]
        return []

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        """Lines are read in blocks; a block whose lines are all objects with text, boolean or
        integer values is parsed by Arrow's JSON reader in one go, any other block line by line
        (the same values either way)."""
        fields = list(mapping)
        nulls = list(self.options.null_values)
        encoding = self.options.encoding
        block: list[tuple[int, str]] = []
        row = 0
        limit = get_settings().max_record_bytes
        with self.path.open("r", encoding=encoding, errors="strict", newline="") as handle:
            line_no = 0
            while True:
                try:
                    line = handle.readline(limit + 1)
                except UnicodeDecodeError as exc:
                    raise SourceError(
                        f"{self.path}: line {line_no + 1}: not valid {encoding} ({exc.reason})"
                    ) from None
                if not line:
                    break
                line_no += 1
                self._check_length(line, limit, line_no)
                text = line.strip().lstrip("\ufeff")
                if text:
                    block.append((line_no, text))
                if len(block) >= BLOCK_ROWS:
                    yield self._block(block, row, fields, nulls)
                    row += len(block)
                    block = []
        if block:
            yield self._block(block, row, fields, nulls)

    def _check_length(self, line: str, limit: int, number: int) -> None:
        """A line read with `readline(limit + 1)` that is still longer than the limit: refuse
        the file before the rest of the line is read (a 1 GB line never sits in memory)."""
        if len(line) > limit and not line.endswith("\n"):
            raise SourceError(
                f"{self.path}: line {number}: longer than {limit:,} characters, the limit of "
                "one record (BATCHYARD_MAX_RECORD_BYTES); nothing loaded")

    def _line(self, handle, limit: int, number: int) -> str:
        line = handle.readline(limit + 1)
        self._check_length(line, limit, number)
        return line

    def _block(self, block: list[tuple[int, str]], row: int, fields: list[str],
               nulls: list[str]) -> pa.Table:
        rows = list(range(row + 1, row + len(block) + 1))
        fast = _parsed_at_once(block, fields)
        if fast is not None:
            return record_table(fields, {f: without_null_values(c, nulls) for f, c in fast.items()}, rows)
        buffer: dict[str, list] = {f: [] for f in fields}
        errors: list[str | None] = []
        raws: list[str | None] = []
        null_set = set(nulls)
        for line_no, text in block:
            try:
                record = _loads(text)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, found {type(record).__name__}")
            except ValueError as exc:
                for values in buffer.values():
                    values.append(None)
                errors.append(f"record: line {line_no}: invalid JSON: {str(exc).splitlines()[0]}")
                raws.append(text[:RAW_LIMIT])
                continue
            record = {k.strip().lower(): v for k, v in record.items()}
            for f in fields:
                value = json_text(record.get(f.lower()))
                buffer[f].append(None if value in null_set else value)
            errors.append(None)
            raws.append(None)
        return record_table(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                            rows, errors, raws)

    def arrow(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """A line holding a JSON value other than an object becomes the record {"value": ...}."""
        pending: list[dict] = []
        limit = get_settings().max_record_bytes
        with self.path.open(encoding=self.options.encoding) as handle:
            for number in itertools.count(1):
                line = self._line(handle, limit, number)
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    record = _loads(line)
                except ValueError as exc:
                    raise SourceError(f"{self.path}: line {number}: invalid JSON: {exc}") from None
                pending.append(record if isinstance(record, dict) else {"value": record})
                if len(pending) >= batch_rows:
                    yield records_batch(pending)
                    pending = []
        if pending:
            yield records_batch(pending)


def _loads(text: str):
    """json.loads, with nesting deeper than Python's recursion limit as an invalid line."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply (over about 1,000 levels)") from None


def _parsed_at_once(block: list[tuple[int, str]], fields: list[str]) -> dict | None:
    """The block's fields as text columns when Arrow parses every line as an object whose
    values are text, booleans or integers (what `json_text` gives them); else None."""
    data = pa.py_buffer("\n".join(text for _, text in block).encode("utf-8"))
    try:
        table = pajson.read_json(data)
        stamps = [f for f in table.schema if pa.types.is_timestamp(f.type)]
        if stamps:  # JSON has no timestamps: Arrow took text for one; read that column as text
            table = pajson.read_json(data, parse_options=pajson.ParseOptions(
                explicit_schema=pa.schema([pa.field(f.name, pa.string()) for f in stamps])))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(block):
        return None
    by_lower = {name.strip().lower(): name for name in table.column_names}
    if len(by_lower) != table.num_columns:
        return None
    columns = {}
    for f in fields:
        name = by_lower.get(f.lower())
        if name is None:
            continue
        column = table[name]
        kind = column.type
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind):
            column = pc.cast(column, pa.string())
        elif not pa.types.is_string(kind):
            return None
        columns[f] = column
    return columns


def json_text(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold (objects and arrays as JSON)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False)
