"""Reading a source once, front to back, into one Arrow IPC file per chunk.

Chunk files hold text columns (one per schema field), the record's row number, and for records
that could not be parsed the parse error and the raw text (see `batchyard.readers.base`). Chunk
tasks then receive only a `ChunkRef` and memory-map their own chunk, so memory stays flat
whatever the file's size and Prefect never hashes or stores record data.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from batchyard.chunks import ROW, ChunkRef, rebatch, write_ipc
from batchyard.diskspace import no_space, no_space_error
from batchyard.errors import SourceError
from batchyard.faults import pause_point
from batchyard.readers import Reader, SourceOptions, open_reader
from batchyard.readers.base import record_schema
from batchyard.schemas.base import SchemaPlan
from batchyard.settings import get_settings


@dataclass
class SourcePlan:
    """A spooled source: its chunks, record count and what the user should be told."""

    columns: list[str]
    chunks: list[ChunkRef]
    total: int
    extra_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class InspectedSource:
    """A source that passed every check made before a record is written."""

    reader: Reader
    header: list[str]
    mapping: dict[str, str]
    extra: list[str]


def spool_dir(batch_id: str) -> Path:
    """Where a batch's chunk files live while it runs."""
    return get_settings().work_dir / "spool" / batch_id


def remove_spool(batch_id: str) -> None:
    """A closed batch's chunk files are not needed again (a resume spools the source afresh),
    and they are as large as the source: keep the work directory from filling up."""
    shutil.rmtree(spool_dir(batch_id), ignore_errors=True)


def match_columns(header: list[str], plan: SchemaPlan, path: Path) -> tuple[dict[str, str], list[str]]:
    """Map schema fields to header names (trimmed, case-insensitive) and list the extra columns.

    Raises SourceError naming the missing required columns, with a delimiter hint when the
    header is one column that holds a likely delimiter."""
    by_lower = {name.strip().lower(): name for name in header}
    mapping = {}
    for spec in plan.columns:  # a field with an alias is read from the header it names
        for name in dict.fromkeys([spec.source_name.lower(), spec.name.lower()]):
            if name in by_lower:
                mapping[spec.name] = by_lower[name]
                break
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


def inspect_source(path: str | Path, options: SourceOptions, plan: SchemaPlan) -> InspectedSource:
    """Everything that can refuse a file before a single record is written: it exists, it is
    what its extension or `--format` says, it has a header with every required column.

    Raises SourceError, one line naming the file."""
    reader = open_reader(path, options)
    header = reader.header()
    if not header:
        raise SourceError(f"{reader.path}: no header and no records")
    if not reader.header_names_columns:  # records name their fields: extra keys are ignored
        return InspectedSource(reader, header, {spec.name: spec.source_name for spec in plan.columns},
                               [])
    for position, name in enumerate(header, 1):
        if any(ord(c) < 32 and c not in "\t" for c in name):
            raise SourceError(f"{reader.path}: line 1: header column {position} ({name!r}) "
                              "contains a control character (a NUL byte?): not a column name")
    mapping, extra = match_columns(header, plan, reader.path)
    return InspectedSource(reader, header, mapping, extra)


def iter_spool(path: str | Path, options: SourceOptions, plan: SchemaPlan, directory: Path,
               chunk_sizes: Iterator[int], result: SourcePlan) -> Iterator[ChunkRef]:
    """Read the source once into chunk files under `directory` (emptied first), yielding each
    chunk as soon as it is written, so loading can start while the rest is still being read.
    `result` is filled in as it goes (total and warnings are final once the iterator ends).

    The file is checked unchanged after each chunk is cut, before it is yielded: the chunks
    handed out all come from one version of it, and a change is reported with how many of
    its records were handed out before it."""
    before = file_identity(path)
    source = inspect_source(path, options, plan)
    result.columns, result.extra_columns = list(source.mapping), source.extra
    result.warnings = [extra_warning(source.extra)] if source.extra else []
    handed_out = 0
    try:
        for ref in _spool(source.reader.records(source.mapping, source.header), plan.field_names,
                          directory, chunk_sizes, result):
            _check_unchanged(path, before, handed_out)
            yield ref
            handed_out += ref.n_rows
    except (SourceError, OSError, pa.ArrowException) as exc:
        _check_unchanged(path, before, handed_out)
        if no_space(exc):
            shutil.rmtree(directory, ignore_errors=True)  # give the room back at once
            raise no_space_error(
                f"spooling {path} into {directory}", directory,
                int(Path(path).stat().st_size * 1.2),
                "free some space or set BATCHYARD_WORK_DIR, then resume the batch") from None
        raise
    _check_unchanged(path, before, handed_out)


def extra_warning(extra: list[str], shown: int = 20) -> str:
    """`extra column(s) ignored: a, b, c` (the first `shown` of them, and how many more)."""
    more = f" and {len(extra) - shown:,} more" if len(extra) > shown else ""
    return f"extra column(s) ignored: {', '.join(extra[:shown])}{more}"


def file_identity(path: str | Path) -> tuple[int, int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _check_unchanged(path: str | Path, before: tuple[int, int, int] | None,
                     handed_out: int = 0) -> None:
    """A source written to (appended to, truncated, replaced) while it was read gives records
    of no one version of it: refuse it rather than load a mix. `handed_out` records, read
    before the change, were already given to the load."""
    after = file_identity(path)
    if after != before:
        sizes = (f" (size {before[1]:,} -> {after[1]:,} bytes)" if before and after
                 and before[1] != after[1] else "")
        if not handed_out:
            raise SourceError(f"{path}: the file changed while it was read{sizes}; nothing was "
                              "loaded from it: import it again once it is complete")
        raise SourceError(f"{path}: the file changed while it was read{sizes}; only its first "
                          f"{handed_out:,} records, read before the change, were given to the "
                          "load: resume the batch once the file is complete, or import it "
                          "again with --fresh")


def spool_tables(tables: Iterable[pa.Table], fields: list[str], directory: Path,
                 chunk_sizes: Iterator[int]) -> list[ChunkRef]:
    """Spool record tables that come from elsewhere than a file (the records a retry takes up)
    into chunk files under `directory` (emptied first)."""
    result = SourcePlan(fields, [], 0)
    return list(_spool(tables, fields, directory, chunk_sizes, result))


def _spool(tables: Iterable[pa.Table], fields: list[str], directory: Path,
           chunk_sizes: Iterator[int], result: SourcePlan) -> Iterator[ChunkRef]:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    schema = record_schema(fields)
    casted = (_conform(t, schema) for t in tables if t.num_rows)
    for chunk in rebatch(casted, chunk_sizes):
        yield _write_chunk(chunk.combine_chunks(), directory, result)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The record table in the chunk schema: a field the source has no column for (an optional
    one) is a column of nulls."""
    for name in schema.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return table.select(schema.names).cast(schema)


def _write_chunk(chunk: pa.Table, directory: Path, result: SourcePlan) -> ChunkRef:
    index = len(result.chunks)
    path = directory / f"chunk-{index:06d}.arrow"
    write_ipc(chunk, path)
    pause_point("chunk-spooled", index)
    ref = ChunkRef(index=index, path=str(path), first_row=chunk[ROW][0].as_py(), n_rows=chunk.num_rows)
    result.chunks.append(ref)
    result.total += ref.n_rows
    return ref


def spool_source(path: str | Path, options: SourceOptions, plan: SchemaPlan, directory: Path,
                 chunk_sizes: Iterator[int]) -> SourcePlan:
    """Read the whole source into chunk files; return their references."""
    result = SourcePlan([], [], 0)
    for _ in iter_spool(path, options, plan, directory, chunk_sizes, result):
        pass
    return result
