"""Reading sources as a stream of chunks.

A source (CSV, JSON Lines, Parquet, Excel) is read once, front to back, and spooled into one
Arrow IPC file per chunk: text columns, the record's row number, and for records that could not
even be parsed (a ragged CSV row, an invalid JSON line) the parse error and the raw text. Chunk
tasks then receive only a reference (the spool path) and memory-map their own chunk, so memory
stays flat whatever the file's size and Prefect never hashes or stores record data.

Row numbers count data records from 1 (the header is not a record; blank lines are not records).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from batchyard.errors import SourceError
from batchyard.schemas.base import SchemaPlan
from batchyard.transform import ROW, as_text

PARSE_ERROR = "_parse_error"
RAW = "_raw"
Format = Literal["csv", "jsonl", "parquet", "xlsx"]
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".xlsx": "xlsx", ".xlsm": "xlsx",
}


class SourceOptions(BaseModel):
    """How to read the source file."""

    format: Format | None = Field(
        None, description="csv, jsonl, parquet or xlsx; default: from the extension."
    )
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")
    encoding: str = Field("utf-8", description="Text encoding of CSV and JSON Lines files.")
    sheet: str | None = Field(None, description="Excel sheet name; default: the first sheet.")


class ChunkRef(BaseModel):
    """What a chunk task needs to find its records: small, so it is cheap to pass and hash."""

    index: int
    path: str
    first_row: int
    n_rows: int


@dataclass
class SourcePlan:
    columns: list[str]
    chunks: list[ChunkRef]
    total: int
    extra_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def detect_format(path: Path, options: SourceOptions) -> Format:
    """The declared or extension format, checked against the file's first bytes."""
    fmt = options.format or EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(f"{path}: unknown file type {path.suffix!r}; pass --format")
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        raise SourceError(f"{path}: the file is empty")
    actual = "parquet" if head[:4] == b"PAR1" else "xlsx" if head[:4] == b"PK\x03\x04" else None
    if head[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise SourceError(f"{path}: this is an old binary Excel (.xls) file; save it as .xlsx")
    if fmt in ("parquet", "xlsx") and actual != fmt:
        raise SourceError(f"{path}: not a {fmt} file (its first bytes are {head[:4]!r})")
    if fmt in ("csv", "jsonl") and actual is not None:
        raise SourceError(f"{path}: declared {fmt} but the file is {actual} (binary data)")
    return fmt


def match_columns(header: list[str], plan: SchemaPlan, path: Path) -> tuple[dict[str, str], list[str]]:
    """Map header names to schema fields (trimmed, case-insensitive); refuse missing required."""
    by_lower = {name.strip().lower(): name for name in header}
    mapping = {spec.name: by_lower[spec.name.lower()] for spec in plan.columns
               if spec.name.lower() in by_lower}
    missing = [name for name in plan.required_names if name not in mapping]
    if missing:
        hint = ""
        if len(header) == 1:
            guess = next((d for d in (";", "\t", "|", ",") if d in header[0]), None)
            if guess:
                hint = f"; the header is one column: is the delimiter {guess!r}? pass --delimiter"
        shown = ", ".join(header) or "nothing"
        raise SourceError(
            f"{path}: line 1: missing required column(s) {', '.join(missing)} "
            f"(header has {shown[:200]}){hint}"
        )
    used = set(mapping.values())
    extra = [name for name in header if name not in used]
    return mapping, extra


class _Spooler:
    """Writes records into chunk files of exactly `chunk_size` records (the last one shorter)."""

    def __init__(self, directory: Path, fields: list[str], chunk_sizes: Iterator[int]):
        self.directory = directory
        self.schema = pa.schema(
            [pa.field(f, pa.string()) for f in fields]
            + [pa.field(ROW, pa.int64()), pa.field(PARSE_ERROR, pa.string()), pa.field(RAW, pa.string())]
        )
        self.sizes = chunk_sizes
        self.target = next(self.sizes)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.chunks: list[ChunkRef] = []
        self.total = 0

    def add(self, table: pa.Table) -> None:
        table = table.select(self.schema.names).cast(self.schema)
        while table.num_rows:
            take = min(self.target - self.pending_rows, table.num_rows)
            self.pending.append(table.slice(0, take))
            self.pending_rows += take
            table = table.slice(take)
            if self.pending_rows == self.target:
                self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        chunk = pa.concat_tables(self.pending).combine_chunks()
        index = len(self.chunks)
        path = self.directory / f"chunk-{index:06d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
            writer.write_table(chunk)
        first = chunk[ROW][0].as_py()
        self.chunks.append(ChunkRef(index=index, path=str(path), first_row=first, n_rows=chunk.num_rows))
        self.total += chunk.num_rows
        self.pending, self.pending_rows = [], 0
        self.target = next(self.sizes)

    def finish(self) -> list[ChunkRef]:
        self._flush()
        return self.chunks


def _records(fields: list[str], columns: dict[str, Any], rows: list[int],
             errors: list[str | None] | None = None, raws: list[str | None] | None = None) -> pa.Table:
    n = len(rows)
    data = {f: columns.get(f, pa.nulls(n, pa.string())) for f in fields}
    data[ROW] = pa.array(rows, pa.int64())
    data[PARSE_ERROR] = pa.array(errors, pa.string()) if errors is not None else pa.nulls(n, pa.string())
    data[RAW] = pa.array(raws, pa.string()) if raws is not None else pa.nulls(n, pa.string())
    return pa.table(data)


def _csv_header(path: Path, options: SourceOptions) -> list[str]:
    try:
        reader = pcsv.open_csv(
            str(path),
            read_options=pcsv.ReadOptions(encoding=options.encoding, block_size=1 << 16,
                                          use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                                            invalid_row_handler=lambda row: "skip"),
            convert_options=pcsv.ConvertOptions(auto_dict_encode=False),
        )
    except pa.ArrowInvalid as exc:
        raise SourceError(f"{path}: cannot read the CSV header: {_arrow_message(exc)}") from None
    except LookupError:
        raise SourceError(f"{path}: unknown encoding {options.encoding!r}") from None
    return [name.lstrip("\ufeff").strip() for name in reader.schema.names]


def _arrow_message(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def read_csv(path: Path, options: SourceOptions, mapping: dict[str, str], header: list[str],
             block_size: int) -> Iterator[pa.Table]:
    """Stream a CSV file as record tables; ragged rows become parse-error records."""
    invalid: dict[int, str] = {}
    expected = len(header)

    def on_invalid(row) -> str:
        invalid[row.number - 1] = row.text
        return "skip"

    try:
        reader = pcsv.open_csv(
            str(path),
            read_options=pcsv.ReadOptions(encoding=options.encoding, block_size=block_size,
                                          use_threads=False),
            parse_options=pcsv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                                            invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False, quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        raise SourceError(_csv_error(path, exc, header, options, 1)) from None
    fields = list(mapping)
    next_row = 1
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise SourceError(_csv_error(path, exc, header, options, next_row)) from None
        rows = _row_numbers(next_row, batch.num_rows, invalid)
        next_row = int(rows[-1]) + 1 if len(rows) else next_row
        columns = {f: batch.column(header.index(mapping[f])) for f in fields}
        table = _records(fields, columns, rows)
        late = sorted(r for r in invalid if r < next_row)
        if late:
            ragged = _ragged(fields, late, invalid, expected, options.delimiter)
            table = pa.concat_tables([table, ragged]).sort_by(ROW)
        yield table
    tail = sorted(invalid)
    if tail:
        yield _ragged(fields, tail, invalid, expected, options.delimiter)


_ARROW_POSITION = re.compile(r"In CSV column #(\d+): Row #(\d+): (.*)")


def _csv_error(path: Path, exc: Exception, header: list[str], options: SourceOptions,
               near: int) -> str:
    """Arrow's parse error as one line that names the line and column, with a hint."""
    message = _arrow_message(exc)
    found = _ARROW_POSITION.search(message)
    if not found:
        return f"{path}: near record {near}: {message}"
    column, row, what = int(found.group(1)), int(found.group(2)), found.group(3)
    name = header[column] if column < len(header) else f"#{column + 1}"
    hint = ""
    if "UTF8" in what:
        what = f"not valid {options.encoding}"
        hint = "; if the file is Latin-1 or Windows-1252, pass --encoding latin-1 or cp1252"
    where = f"record {row - 1} (line {row} if no field spans lines), column {column + 1} ({name})"
    return f"{path}: {where}: {what}{hint}"


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
    return _records(fields, {}, rows, errors, texts)


def _count_fields(text: str, delimiter: str) -> int:
    import csv
    import io

    try:
        return len(next(csv.reader(io.StringIO(text), delimiter=delimiter)))
    except (StopIteration, csv.Error):
        return 0


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, ensure_ascii=False)


def read_jsonl(path: Path, options: SourceOptions, fields: list[str], block_rows: int,
               ) -> Iterator[pa.Table]:
    """Stream JSON Lines; a line that is not a JSON object becomes a parse-error record."""
    buffer: dict[str, list] = {f: [] for f in fields}
    rows: list[int] = []
    errors: list[str | None] = []
    raws: list[str | None] = []
    row = 0

    def flush() -> pa.Table:
        table = _records(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                         rows, errors, raws)
        for values in buffer.values():
            values.clear()
        rows.clear(), errors.clear(), raws.clear()
        return table

    with path.open("r", encoding=options.encoding, errors="strict", newline="") as handle:
        line_no = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{path}: line {line_no + 1}: not valid {options.encoding} ({exc.reason})"
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
                raws.append(text[:10_000])
                continue
            record = {k.strip().lower(): v for k, v in record.items()}
            for f in fields:
                buffer[f].append(_json_text(record.get(f.lower())))
            errors.append(None)
            raws.append(None)
            if len(rows) >= block_rows:
                yield flush()
    if rows:
        yield flush()


def read_parquet(path: Path, mapping: dict[str, str], block_rows: int) -> Iterator[pa.Table]:
    try:
        parquet = pq.ParquetFile(str(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {_arrow_message(exc)}") from None
    fields = list(mapping)
    next_row = 1
    try:
        for batch in parquet.iter_batches(batch_size=block_rows, columns=list(mapping.values())):
            columns = {f: as_text(batch.column(mapping[f])) for f in fields}
            rows = list(range(next_row, next_row + batch.num_rows))
            next_row += batch.num_rows
            yield _records(fields, columns, rows)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: near record {next_row}: {_arrow_message(exc)}") from None


def parquet_header(path: Path) -> list[str]:
    try:
        return list(pq.ParquetFile(str(path)).schema_arrow.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"{path}: not a readable Parquet file: {_arrow_message(exc)}") from None


def _cell_text(value: Any) -> str | None:
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _open_sheet(path: Path, options: SourceOptions):
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(str(path), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise SourceError(f"{path}: not a readable Excel workbook: {exc}") from None
    if options.sheet is None:
        return book, book.worksheets[0]
    if options.sheet not in book.sheetnames:
        raise SourceError(
            f"{path}: no sheet {options.sheet!r} (sheets: {', '.join(book.sheetnames)})"
        )
    return book, book[options.sheet]


def excel_header(path: Path, options: SourceOptions) -> list[str]:
    book, sheet = _open_sheet(path, options)
    try:
        for values in sheet.iter_rows(values_only=True):
            if any(v is not None for v in values):
                names = [str(v).strip() if v is not None else "" for v in values]
                while names and not names[-1]:
                    names.pop()
                return names
        return []
    finally:
        book.close()


def read_excel(path: Path, options: SourceOptions, mapping: dict[str, str], header: list[str],
               block_rows: int) -> Iterator[pa.Table]:
    """Stream one sheet; the first non-empty row is the header; empty rows are not records."""
    fields = list(mapping)
    positions = {f: header.index(mapping[f]) for f in fields}
    width = len([h for h in header if h])
    book, sheet = _open_sheet(path, options)
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
            cells = [_cell_text(v) for v in values]
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
            if len(rows) >= block_rows:
                yield _records(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                               rows, errors, raws)
                buffer = {f: [] for f in fields}
                rows, errors, raws = [], [], []
    finally:
        book.close()
    if rows:
        yield _records(fields, {f: pa.array(v, pa.string()) for f, v in buffer.items()},
                       rows, errors, raws)


def read_header(path: Path, fmt: Format, options: SourceOptions) -> list[str]:
    if fmt == "csv":
        return _csv_header(path, options)
    if fmt == "parquet":
        return parquet_header(path)
    if fmt == "xlsx":
        return excel_header(path, options)
    return _jsonl_header(path, options)


def _jsonl_header(path: Path, options: SourceOptions) -> list[str]:
    """JSON Lines has no header: the keys of the first valid object stand for it."""
    with path.open("r", encoding=options.encoding, errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line.strip().lstrip("\ufeff"))
            except ValueError:
                continue
            if isinstance(record, dict):
                return [str(k) for k in record]
    return []


def inspect_source(path: str | Path, options: SourceOptions, plan: SchemaPlan,
                   ) -> tuple[Format, list[str], dict[str, str], list[str]]:
    """Everything that can refuse a file before a single record is written."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    fmt = detect_format(path, options)
    header = read_header(path, fmt, options)
    if not header:
        raise SourceError(f"{path}: no header and no records")
    if fmt == "jsonl":
        mapping = {spec.name: spec.name for spec in plan.columns}
        return fmt, header, mapping, []
    mapping, extra = match_columns(header, plan, path)
    return fmt, header, mapping, extra


def iter_spool(path: str | Path, options: SourceOptions, plan: SchemaPlan, directory: Path,
               chunk_sizes: Iterator[int], result: SourcePlan) -> Iterator[ChunkRef]:
    """Read the source once into chunk files under `directory`, yielding each chunk as soon as
    it is written, so loading starts while the rest of the file is still being read. `result`
    is filled in as it goes (total and warnings are final once the iterator is exhausted)."""
    path = Path(path)
    fmt, header, mapping, extra = inspect_source(path, options, plan)
    result.columns, result.extra_columns = list(mapping), extra
    result.warnings = [f"extra column(s) ignored: {', '.join(extra)}"] if extra else []
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    spooler = _Spooler(directory, plan.field_names, chunk_sizes)
    block_rows = 65_536
    if fmt == "csv":
        tables = read_csv(path, options, mapping, header, block_size=4 << 20)
    elif fmt == "jsonl":
        tables = read_jsonl(path, options, plan.field_names, block_rows)
    elif fmt == "parquet":
        tables = read_parquet(path, mapping, block_rows)
    else:
        tables = read_excel(path, options, mapping, header, block_rows)
    for table in tables:
        if table.num_rows:
            spooler.add(table)
            yield from _drain(spooler, result)
    spooler.finish()
    yield from _drain(spooler, result)


def _drain(spooler: _Spooler, result: SourcePlan) -> Iterator[ChunkRef]:
    while len(result.chunks) < len(spooler.chunks):
        ref = spooler.chunks[len(result.chunks)]
        result.chunks.append(ref)
        result.total += ref.n_rows
        yield ref


def spool_source(path: str | Path, options: SourceOptions, plan: SchemaPlan, directory: Path,
                 chunk_sizes: Iterator[int]) -> SourcePlan:
    """Read the whole source into chunk files; return their references."""
    result = SourcePlan([], [], 0)
    for _ in iter_spool(path, options, plan, directory, chunk_sizes, result):
        pass
    return result


def read_chunk(ref: ChunkRef) -> pa.Table:
    """Memory-map one spooled chunk."""
    with pa.memory_map(ref.path, "r") as source:
        return pa.ipc.open_file(source).read_all()
