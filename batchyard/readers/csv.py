"""CSV: a header row, any delimiter and ASCII-compatible encoding, quoted fields with embedded
newlines; a ragged row becomes a parse-error record instead of refusing the file."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from batchyard.chunks import ROW
from batchyard.errors import SourceError
from batchyard.readers import register
from batchyard.readers.base import Reader, arrow_message, record_table

BLOCK_BYTES = 4 << 20
_ARROW_POSITION = re.compile(r"In CSV column #(\d+): Row #(\d+): (.*)")
_ENCODING_HINT = "; if the file is Latin-1 or Windows-1252, pass --encoding latin-1 or cp1252"
_STRADDLES = ("straddling object straddles", "out of sync with chunker")


class _RowHandler:
    """pyarrow's invalid-row callback. pyarrow decodes the row's bytes before calling it, and
    when they do not decode, the exception escapes inside pyarrow, which prints it
    ("Exception ignored in ...") and stops with a parse error. Those are noted here instead
    (see `_quiet_undecodable_rows`), so that the error the user sees says what it was."""

    def __init__(self, rows: dict[int, str] | None = None):
        self.rows, self.undecodable = rows, False

    def __call__(self, row) -> str:
        if self.rows is not None:
            self.rows[row.number - 1] = row.text
        return "skip"


def _quiet_undecodable_rows(unraisable) -> None:
    handler = unraisable.object
    if isinstance(handler, _RowHandler) and isinstance(unraisable.exc_value, UnicodeDecodeError):
        handler.undecodable = True
        return
    _previous_hook(unraisable)


_previous_hook = sys.unraisablehook
sys.unraisablehook = _quiet_undecodable_rows


@register
class CsvReader(Reader):
    name = "csv"
    extensions = (".csv", ".tsv", ".txt")

    def header(self) -> list[str]:
        options = self.options
        handler = _RowHandler()
        try:
            reader = pcsv.open_csv(
                str(self.path),
                read_options=pcsv.ReadOptions(encoding=options.encoding, block_size=1 << 16,
                                              use_threads=False),
                parse_options=pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                                                invalid_row_handler=handler),
                convert_options=pcsv.ConvertOptions(auto_dict_encode=False),
            )
        except pa.ArrowInvalid as exc:
            if handler.undecodable:
                raise SourceError(f"{self.path}: a record with the wrong number of fields near "
                                  f"the start is not valid {options.encoding}{_ENCODING_HINT}") from None
            raise SourceError(f"{self.path}: cannot read the CSV header: {arrow_message(exc)}") from None
        except LookupError:
            raise SourceError(f"{self.path}: unknown encoding {options.encoding!r}") from None
        return [name.lstrip("\ufeff").strip() for name in reader.schema.names]

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        """An unquoted empty cell (or one of `--null-values`) is missing, a quoted one is an empty
        string, as in PostgreSQL's CSV COPY; whitespace is kept (RFC 4180 §2.4). Ragged rows
        are collected by Arrow's invalid-row handler and put back in row order."""
        path, options = self.path, self.options
        invalid: dict[int, str] = {}
        expected = len(header)
        on_invalid = _RowHandler(invalid)

        try:
            reader = pcsv.open_csv(
                str(path),
                read_options=pcsv.ReadOptions(encoding=options.encoding, block_size=BLOCK_BYTES,
                                              use_threads=False),
                parse_options=pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                                                invalid_row_handler=on_invalid),
                convert_options=pcsv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    null_values=["", *options.null_values],
                    strings_can_be_null=True, quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise SourceError(self._error(exc, header, 1, on_invalid)) from None
        fields = list(mapping)
        next_row = 1
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise SourceError(self._error(exc, header, next_row, on_invalid)) from None
            rows = _row_numbers(next_row, batch.num_rows, invalid)
            next_row = int(rows[-1]) + 1 if len(rows) else next_row
            columns = {f: batch.column(header.index(mapping[f])) for f in fields}
            table = record_table(fields, columns, rows)
            late = sorted(r for r in invalid if r < next_row)
            if late:
                ragged = _ragged(fields, late, invalid, expected, options.delimiter)
                table = pa.concat_tables([table, ragged]).sort_by(ROW)
            yield table
        tail = sorted(invalid)
        if tail:
            yield _ragged(fields, tail, invalid, expected, options.delimiter)

    def arrow(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        options = self.options
        try:
            reader = pcsv.open_csv(
                str(self.path), read_options=pcsv.ReadOptions(encoding=options.encoding),
                parse_options=pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(null_values=["", *options.null_values],
                                                    quoted_strings_can_be_null=False))
            yield from reader
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{self.path}: {arrow_message(exc)}") from None

    def _error(self, exc: Exception, header: list[str], near: int,
               handler: _RowHandler | None = None) -> str:
        """Arrow's parse error as one line that names the line and column, with a hint."""
        message = arrow_message(exc)
        if handler is not None and handler.undecodable:
            return (f"{self.path}: near record {near}: a record with the wrong number of fields "
                    f"is not valid {self.options.encoding}{_ENCODING_HINT}")
        if any(s in message for s in _STRADDLES):
            return (f"{self.path}: near record {near}: a record longer than {BLOCK_BYTES >> 20} MB "
                    "(or a quote left open); batchyard reads CSV records of up to that size")
        found = _ARROW_POSITION.search(message)
        if not found:
            return f"{self.path}: near record {near}: {message}"
        column, row, what = int(found.group(1)), int(found.group(2)), found.group(3)
        name = header[column] if column < len(header) else f"#{column + 1}"
        hint = ""
        if "UTF8" in what:
            what = f"not valid {self.options.encoding}"
            hint = _ENCODING_HINT
        where = f"record {row - 1} (line {row} if no field spans lines), column {column + 1} ({name})"
        return f"{self.path}: {where}: {what}{hint}"


def _row_numbers(first: int, count: int, invalid: dict[int, str]) -> np.ndarray:
    """Record numbers of the `count` parsed rows from `first` on, skipping invalid records."""
    skipped = np.array(sorted(r for r in invalid if r >= first), dtype=np.int64)
    candidates = np.arange(first, first + count + len(skipped), dtype=np.int64)
    if len(skipped):
        candidates = candidates[~np.isin(candidates, skipped)]
    return candidates[:count]


def _ragged(fields: list[str], rows: list[int], invalid: dict[int, str], expected: int,
            delimiter: str) -> pa.Table:
    texts = [invalid.pop(r) for r in rows]
    errors = [
        f"record: expected {expected} fields, found {_count_fields(t, delimiter)}" for t in texts
    ]
    return record_table(fields, {}, rows, errors, texts)


def _count_fields(text: str, delimiter: str) -> int:
    try:
        return len(next(csv.reader(io.StringIO(text), delimiter=delimiter)))
    except (StopIteration, csv.Error):
        return 0
