"""Excel .xlsx: one sheet (the first, or `--sheet`), streamed row by row; the first non-empty
row is the header and empty rows are not records."""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from batchyard.errors import SourceError
from batchyard.readers import register
from batchyard.readers.base import BLOCK_ROWS, Reader, record_table, rows_to_batch
from batchyard.settings import get_settings

BOMB_SIZE = 64 << 20
BOMB_RATIO = 200
"""A part over BOMB_SIZE that compresses more than BOMB_RATIO to 1 is refused: sheet XML
compresses about 10 to 30 to 1, a run of zeros about 1,000 to 1."""


@register
class ExcelReader(Reader):
    name = "xlsx"
    extensions = (".xlsx", ".xlsm")
    magic = (b"PK\x03\x04",)
    look_alikes = {b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
                   "this is an old binary Excel (.xls) file; save it as .xlsx"}

    def _check_archive(self) -> None:
        """Refuse, from the ZIP's directory alone, an archive that is not a workbook, and one
        whose parts unpack to more than `BATCHYARD_XLSX_MAX_BYTES` or that compress more than
        any spreadsheet does (a ZIP bomb): nothing is unpacked to find out. zipfile reads no
        more of a part than its declared size."""
        try:
            with zipfile.ZipFile(self.path) as archive:
                parts = archive.infolist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{self.path}: not a readable Excel workbook: {exc}") from None
        names = {p.filename for p in parts}
        if "xl/workbook.xml" not in names:
            raise SourceError(f"{self.path}: a ZIP archive but not an Excel workbook "
                              "(no xl/workbook.xml)")
        limit = get_settings().xlsx_max_bytes
        unpacked = sum(p.file_size for p in parts)
        if unpacked > limit:
            raise SourceError(f"{self.path}: its parts unpack to {unpacked >> 20:,} MB, over the "
                              f"limit of {limit >> 20:,} MB (BATCHYARD_XLSX_MAX_BYTES)")
        for part in parts:
            ratio = part.file_size / max(part.compress_size, 1)
            if part.file_size > BOMB_SIZE and ratio > BOMB_RATIO:
                raise SourceError(
                    f"{self.path}: {part.filename} unpacks to {part.file_size >> 20:,} MB from "
                    f"{max(part.compress_size >> 10, 1):,} KB ({ratio:,.0f} to 1): refused as a "
                    f"ZIP bomb (spreadsheets compress under {BOMB_RATIO} to 1)")

    def _open_sheet(self):
        from openpyxl import load_workbook

        self._check_archive()
        try:
            book = load_workbook(str(self.path), read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: not a readable Excel workbook: {exc}") from None
        sheet = self.options.sheet
        if sheet is None:
            return book, book.worksheets[0]
        if sheet not in book.sheetnames:
            raise SourceError(f"{self.path}: no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})")
        return book, book[sheet]

    def header(self) -> list[str]:
        book, sheet = self._open_sheet()
        try:
            for values in sheet.iter_rows(values_only=True):
                if any(v is not None for v in values):
                    names = [str(v).strip() if v is not None else "" for v in values]
                    while names and not names[-1]:
                        names.pop()
                    return names
            if self.options.sheet is None and len(book.sheetnames) > 1:
                raise SourceError(f"{self.path}: the first sheet, {sheet.title!r}, is empty (sheets: "
                                  f"{', '.join(book.sheetnames)}); pass --sheet NAME")
            return []
        finally:
            book.close()

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        fields = list(mapping)
        positions = {f: header.index(mapping[f]) for f in fields}
        width = len([h for h in header if h])
        nulls = set(self.options.null_values)
        book, sheet = self._open_sheet()
        buffer: dict[str, list] = {f: [] for f in fields}
        rows: list[int] = []
        errors: list[str | None] = []
        raws: list[str | None] = []
        row = 0
        seen_header = False
        try:
            for line_no, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                if not any(v is not None for v in values):
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                row += 1
                rows.append(row)
                cells = [None if (text := cell_text(v)) in nulls else text for v in values]
                beyond = [c for c in cells[len(header):] if c is not None]
                for f in fields:
                    position = positions[f]
                    buffer[f].append(cells[position] if position < len(cells) else None)
                if beyond:
                    errors.append(f"record: sheet row {line_no}: {width + len(beyond)} values "
                                  f"but the header has {width} columns")
                    raws.append(json.dumps(cells, ensure_ascii=False))
                else:
                    errors.append(None)
                    raws.append(None)
                if len(rows) >= BLOCK_ROWS:
                    yield record_table(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                                       rows, errors, raws)
                    buffer = {f: [] for f in fields}
                    rows, errors, raws = [], [], []
        finally:
            book.close()
        if rows:
            yield record_table(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                               rows, errors, raws)

    def arrow(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The sheet's cells as Excel typed them, under the header's names."""
        header = self.header()
        names = [h or f"column_{i + 1}" for i, h in enumerate(header)]
        book, sheet = self._open_sheet()
        pending: list[tuple] = []
        seen_header = False
        try:
            for values in sheet.iter_rows(values_only=True):
                if not any(v is not None for v in values):
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                pending.append(tuple(values[:len(names)]) + (None,) * (len(names) - len(values)))
                if len(pending) >= batch_rows:
                    yield rows_to_batch(names, pending)
                    pending = []
        finally:
            book.close()
        if pending:
            yield rows_to_batch(names, pending)


def cell_text(value: Any) -> str | None:
    """A cell's value as text: dates in ISO form, whole floats without '.0'."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return value.isoformat() + "Z"
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
