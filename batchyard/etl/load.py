"""Loading, the part every target shares: one schema for the run, each batch conformed to it.

The target itself (a database table, a DuckDB table, a directory of files) is reached only
through `batchyard.etl.targets.EtlTarget`: it is prepared once per run, before any batch loads
(tables created from the run's unified Arrow schema, missing columns added), so that parallel
batches only ever insert. With `replace` every batch goes to a staging table (or directory) that
takes the target's place only when all of them loaded; until then, and for good if one fails,
readers see the old data.

Every loaded row carries two lineage columns: `_batch_id` (run, source and batch) and
`_row_number` (the record's position in its source during that run).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from batchyard.chunks import BATCH, ROW, SOURCE_ID, write_ipc
from batchyard.errors import BatchyardError
from batchyard.etl.spec import Target, WriteDisposition
from batchyard.etl.targets import LoadValidationError, target_for

__all__ = ["LoadJob", "LoadValidationError", "conform", "dedupe_last", "load_table",
           "refuse_lossy", "save_schema", "unify_schemas"]


class LoadJob(BaseModel):
    """What a load task needs to know about its run; small, so it is cheap to pass."""

    pipeline_id: str
    run_id: str
    target: Target
    disposition: WriteDisposition
    schema_path: str
    integer_columns: list[str] = []
    """Columns of the prepared target that hold whole numbers: a float batch value must fit."""

    @property
    def key(self) -> tuple[str, ...]:
        """The target's primary key columns (empty when it has none)."""
        return tuple(self.target.primary_key)

    @property
    def table(self) -> str:
        """The table (or directory) batches are written to: the staging one under replace."""
        return target_for(self.target).destination(self.run_id, self.disposition)


def _unified_type(types: list[pa.DataType]) -> pa.DataType:
    known = [t for t in types if not pa.types.is_null(t)]
    if not known:
        return pa.string()
    if all(t == known[0] for t in known):
        kind = known[0]
    elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in known):
        kind = pa.float64() if any(pa.types.is_floating(t) for t in known) else pa.int64()
    else:
        return pa.string()
    if pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return pa.string()
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
            or pa.types.is_string(kind) or pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        return pa.string()
    return kind


def unify_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for the whole run: a column in any batch is in it; conflicting types widen
    (integers to floats) or fall back to text, so no batch is refused for a type cut."""
    seen: dict[str, list[pa.DataType]] = defaultdict(list)
    for schema in schemas:
        for field in schema:
            seen[field.name].append(field.type)
    names = [n for n in seen if n not in (BATCH, ROW)]
    return pa.schema([pa.field(n, _unified_type(seen[n])) for n in names]
                     + [pa.field(BATCH, pa.string()), pa.field(ROW, pa.int64())])


def save_schema(schema: pa.Schema, path: Path) -> str:
    """Write `schema` as an empty Arrow IPC file, so load tasks get a path, not the schema;
    returns the path as text."""
    write_ipc(schema.empty_table(), path)
    return str(path)


def conform(table: pa.Table, schema: pa.Schema, batch_id: str, first_row: int) -> pa.Table:
    """The batch in the run's schema: every column, in order, of its type, with lineage."""
    n = table.num_rows
    columns = []
    for field in schema:
        if field.name == BATCH:
            columns.append(pa.array([batch_id] * n, pa.string()))
        elif field.name == ROW:
            columns.append(pa.array(range(first_row, first_row + n), pa.int64()))
        elif field.name in table.column_names:
            column = table[field.name]
            if column.type != field.type:
                column = pc.cast(column, field.type) if not pa.types.is_string(field.type) \
                    else _as_text(column)
            columns.append(column)
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        import json

        return pa.chunked_array([pa.array([None if v is None else json.dumps(v, default=str)
                                           for v in column.to_pylist()], pa.string())])


def dedupe_last(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Under merge, a key twice in one batch keeps its last record, as a later batch would."""
    if not key or table.num_rows < 2:
        return table
    indexed = table.select(list(key)).append_column("_i", pa.array(range(table.num_rows)))
    last = indexed.group_by(list(key), use_threads=False).aggregate([("_i", "max")])["_i_max"]
    return table.take(pc.take(last, pc.sort_indices(last)))


def refuse_lossy(table: pa.Table, integer_columns: list[str], where: str) -> pa.Table:
    """The batch with its float values for integer columns as integers, when they are whole;
    no target may round a value silently (DuckDB would store 1.5 as 2, PostgreSQL refuses "2.0").

    Raises:
        LoadValidationError: naming the target, the column, the value and its record."""
    for name in integer_columns:
        if name not in table.column_names or not pa.types.is_floating(table[name].type):
            continue
        column = table[name]
        broken = pc.fill_null(pc.not_equal(column, pc.floor(column)), False)
        if pc.any(broken).as_py() or pc.any(pc.is_nan(column)).as_py():
            bad = pc.fill_null(pc.or_(broken, pc.is_nan(column)), False)
            first = table.filter(bad).slice(0, 1).to_pylist()[0]
            record = (f" (record {first[ROW]} of source {first.get(SOURCE_ID)})"
                      if ROW in first else "")
            raise LoadValidationError(
                f"{where}: column {name} holds whole numbers; the value {first[name]!r}{record} does "
                "not fit it: the batch is refused, not rounded")
        table = table.set_column(table.column_names.index(name), name, pc.cast(column, pa.int64()))
    return table


def _is_data_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"IntegrityError", "DataError", "ConstraintException", "ConversionException"}) \
        or "constraint failed" in str(exc)


def load_table(job: LoadJob, table: pa.Table) -> int:
    """Write one conformed batch to the job's target in one transaction.

    Under merge a key twice in the batch keeps its last record first (`dedupe_last`). A driver's
    integrity or conversion error becomes a LoadValidationError, so the flow does not retry a
    batch that would be refused again; any other error propagates as it is (the flow retries the
    transient ones).

    Returns:
        The number of records received: every record counts as loaded, also one that a later
        record of its key replaced, so that total == successful + failed holds under merge too.

    Raises:
        LoadValidationError: the target refused the data (its message names the target, with
            any password masked, and the driver's first line).
    """
    received = table.num_rows
    if job.disposition == "merge":
        table = dedupe_last(table, job.key)
    target = target_for(job.target)
    table = refuse_lossy(table, job.integer_columns, target.describe())
    try:
        target.load(job, table)
    except BatchyardError:
        raise
    except Exception as exc:
        if _is_data_error(exc):
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LoadValidationError(f"{target.describe()} refused the batch: {reason}") from None
        raise
    return received
