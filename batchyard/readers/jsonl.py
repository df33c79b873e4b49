"""JSON Lines: one JSON object per line; a line that is not one becomes a parse-error record.
A JSON null (or an absent key) is missing; "" is an empty string.

Records carry their own keys, so there is no header to check: each schema field is looked up
(case-insensitively) in every record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from batchyard.errors import SourceError
from batchyard.readers import register
from batchyard.readers.base import BLOCK_ROWS, Reader, record_table, records_batch

RAW_LIMIT = 10_000
"""Characters of an invalid line kept as its raw text."""


@register
class JsonLinesReader(Reader):
    name = "jsonl"
    extensions = (".jsonl", ".ndjson", ".json")
    header_names_columns = False

    def header(self) -> list[str]:
        """The keys of the first valid object stand for a header."""
        with self.path.open("r", encoding=self.options.encoding, errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line.strip().lstrip("\ufeff"))
                except ValueError:
                    continue
                if isinstance(record, dict):
                    return [str(k) for k in record]
        return []

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        fields = list(mapping)
        buffer: dict[str, list] = {f: [] for f in fields}
        rows: list[int] = []
        errors: list[str | None] = []
        raws: list[str | None] = []
        row = 0

        def flush() -> pa.Table:
            table = record_table(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                                 rows, errors, raws)
            for values in buffer.values():
                values.clear()
            rows.clear(), errors.clear(), raws.clear()
            return table

        encoding = self.options.encoding
        nulls = set(self.options.null_values)
        with self.path.open("r", encoding=encoding, errors="strict", newline="") as handle:
            line_no = 0
            while True:
                try:
                    line = handle.readline()
                except UnicodeDecodeError as exc:
                    raise SourceError(
                        f"{self.path}: line {line_no + 1}: not valid {encoding} ({exc.reason})"
                    ) from None
                if not line:
                    break
                line_no += 1
                text = line.strip().lstrip("\ufeff")
                if not text:
                    continue
                row += 1
                rows.append(row)
                try:
                    record = json.loads(text)
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
                    text = json_text(record.get(f.lower()))
                    buffer[f].append(None if text in nulls else text)
                errors.append(None)
                raws.append(None)
                if len(rows) >= BLOCK_ROWS:
                    yield flush()
        if rows:
            yield flush()

    def arrow(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """A line holding a JSON value other than an object becomes the record {"value": ...}."""
        pending: list[dict] = []
        with self.path.open(encoding=self.options.encoding) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise SourceError(f"{self.path}: line {number}: invalid JSON: {exc}") from None
                pending.append(record if isinstance(record, dict) else {"value": record})
                if len(pending) >= batch_rows:
                    yield records_batch(pending)
                    pending = []
        if pending:
            yield records_batch(pending)


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
