"""What every stage shares: the names of the columns batchyard adds, chunk references, Arrow IPC
files, and the re-batcher that cuts any stream of tables into chunks of exact sizes.

Readers, the import, its retries and the ETL pipeline all spool records into Arrow IPC files and
pass only `ChunkRef`s between tasks: a reference is small, so Prefect hashes and stores it
cheaply, and memory holds a chunk or two whatever the source's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

ROW = "_row_number"
"""The record's number in its source, from 1 (a header and blank lines are not records)."""
PARSE_ERROR = "_parse_error"
"""Why a record could not even be parsed (a ragged CSV row, an invalid JSON line), else null."""
RAW = "_raw"
"""The unparsed text of such a record, kept for the rejects file and retries."""
BATCH = "_batch_id"
"""Lineage column of every loaded row: the batch (or ETL run and batch) that wrote it."""
SOURCE_ID = "_source_id"
"""Lineage column of ETL rows: the pipeline source a record came from."""


class ChunkRef(BaseModel):
    """What a chunk task needs to find its records: small, so it is cheap to pass and hash."""

    index: int
    path: str
    first_row: int
    n_rows: int


def write_ipc(table: pa.Table, path: str | Path) -> None:
    """Write `table` to one Arrow IPC file at `path` (replaced if it exists)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_ipc(path: str | Path) -> pa.Table:
    """Memory-map an Arrow IPC file written by `write_ipc`: its pages are read as they are used."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


def read_ipc_schema(path: str | Path) -> pa.Schema:
    """The schema of an IPC file, from its footer, without reading its records."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).schema


def read_chunk(ref: ChunkRef) -> pa.Table:
    """The records of one spooled chunk."""
    return read_ipc(ref.path)


def rebatch(tables: Iterable[pa.Table | pa.RecordBatch], sizes: Iterator[int]) -> Iterator[pa.Table]:
    """Cut a stream of tables into tables of exactly the sizes `sizes` yields, one after another
    (the last one shorter), whatever the input's own cut.

    `sizes` is asked for the next size only once the previous chunk is full, so a size chosen
    from the machine's load is chosen when that chunk is cut. Tables of different schemas are
    joined with Arrow's permissive promotion (a column missing from one batch becomes null)."""
    target = next(sizes)
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        while table.num_rows:
            take = min(target - count, table.num_rows)
            pending.append(table.slice(0, take))
            count += take
            table = table.slice(take)
            if count == target:
                yield _concat(pending)
                pending, count = [], 0
                target = next(sizes)
    if count:
        yield _concat(pending)


def _concat(tables: list[pa.Table]) -> pa.Table:
    if len(tables) == 1:
        return tables[0]
    if all(t.schema == tables[0].schema for t in tables):
        return pa.concat_tables(tables)
    return pa.concat_tables(tables, promote_options="permissive")

