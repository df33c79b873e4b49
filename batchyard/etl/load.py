"""Loaders: one transformed batch into a database table, a DuckDB table or a directory of files.

The target is prepared once per run, before any batch loads (tables created from the run's
unified Arrow schema, missing columns added), so that parallel batches only ever insert. With
`replace` every batch goes to a staging table (or directory) that takes the target's place only
when all of them loaded; until then, and for good if one fails, readers see the old data.

Every loaded row carries two lineage columns: `_batch_id` (run, source and batch) and
`_row_number` (the record's position in its source during that run).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import BaseModel

from batchyard.engines import safe_url, session
from batchyard.errors import BatchyardError
from batchyard.etl.extract import write_table
from batchyard.etl.spec import DatabaseTarget, FileTarget, Target, WarehouseTarget, WriteDisposition
from batchyard.identifiers import check_identifier, quote
from batchyard.chunks import BATCH
from batchyard.ingest.load import load_rows
from batchyard.chunks import ROW


class LoadValidationError(BatchyardError):
    """The data itself was refused (a duplicate key, a value the column cannot hold): never
    retried, since the same batch would be refused again."""


class LoadJob(BaseModel):
    """What a load task needs to know about its run; small, so it is cheap to pass."""

    pipeline_id: str
    run_id: str
    target: Target
    disposition: WriteDisposition
    schema_path: str

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.target.primary_key)

    @property
    def table(self) -> str:
        """The table (or directory) batches are written to: the staging one under replace."""
        if self.target.type == "file":
            return self.target.path + (f".staging-{self.run_id}" if self.disposition == "replace" else "")
        if self.disposition == "replace":
            return check_identifier(f"{self.target.table[:40]}__new_{self.run_id[:12]}")
        return self.target.table


def describe_target(target: Target) -> str:
    """The target for messages and artifacts, with any password masked."""
    if target.type == "database":
        return f"{safe_url(target.url)} table {target.table}"
    if target.type == "warehouse":
        return f"duckdb {target.path} table {target.table}"
    return f"{target.format} files in {target.path}"


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


def read_schema(path: str) -> pa.Schema:
    with pa.memory_map(path, "r") as source:
        return pa.ipc.open_file(source).schema


def save_schema(schema: pa.Schema, path: Path) -> str:
    write_table(schema.empty_table(), path)
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


def _is_data_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"IntegrityError", "DataError", "ConstraintException", "ConversionException"}) \
        or "constraint failed" in str(exc)


def _sql_type(arrow_type: pa.DataType):
    if pa.types.is_boolean(arrow_type):
        return sa.Boolean()
    if pa.types.is_integer(arrow_type):
        return sa.BigInteger()
    if pa.types.is_floating(arrow_type):
        return sa.Float()
    if pa.types.is_timestamp(arrow_type):
        return sa.DateTime(timezone=arrow_type.tz is not None)
    if pa.types.is_date(arrow_type):
        return sa.Date()
    return sa.Text()


def _duck_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_date(arrow_type):
        return "DATE"
    return "VARCHAR"


def _sa_table(name: str, schema: pa.Schema, key: tuple[str, ...]) -> sa.Table:
    metadata = sa.MetaData()
    columns = [sa.Column(check_identifier(f.name, "column name"), _sql_type(f.type),
                         primary_key=f.name in key, nullable=f.name not in key) for f in schema]
    return sa.Table(check_identifier(name), metadata, *columns)


_duck_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


@contextlib.contextmanager
def duckdb_connection(path: str):
    """One writer at a time per DuckDB file: DuckDB allows one writing process, and its
    optimistic transactions would make parallel upserts of one key fail."""
    import duckdb

    resolved = str(Path(path).resolve())
    with _duck_locks[resolved]:
        Path(resolved).parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(resolved)
        try:
            yield connection
        finally:
            connection.close()


def prepare_target(job: LoadJob, schema: pa.Schema) -> None:
    """Create the table (or staging table) the batches go to, before any batch loads."""
    target = job.target
    if target.type == "file":
        if job.disposition == "replace":
            shutil.rmtree(job.table, ignore_errors=True)
        Path(job.table).mkdir(parents=True, exist_ok=True)
        return
    missing_key = [k for k in job.key if k not in schema.names]
    if missing_key:
        raise LoadValidationError(f"primary key column(s) {', '.join(missing_key)} not in the data "
                                  f"(columns: {', '.join(schema.names)})")
    if target.type == "database":
        _prepare_database(job, target, schema)
    else:
        _prepare_duckdb(job, target, schema)


def _prepare_database(job: LoadJob, target: DatabaseTarget, schema: pa.Schema) -> None:
    with session(target.url, write=True) as current:
        if job.disposition == "replace":
            current.sql(f"DROP TABLE IF EXISTS {quote(job.table)}")
        existing = current.describe(job.table)
        table = _sa_table(job.table, schema, job.key)
        if existing is None:
            current.create(table.metadata)
            return
        columns, keys = existing
        if job.disposition == "merge" and set(keys) != set(job.key):
            raise LoadValidationError(f"table {job.table} exists with primary key "
                                      f"({', '.join(keys) or 'none'}), not ({', '.join(job.key)})")
        for column in table.columns:
            if column.name not in columns:
                current.add_column(job.table, sa.Column(column.name, column.type))


def _prepare_duckdb(job: LoadJob, target: WarehouseTarget, schema: pa.Schema) -> None:
    with duckdb_connection(target.path) as connection:
        if job.disposition == "replace":
            connection.execute(f"DROP TABLE IF EXISTS {quote(job.table)}")
        existing = {r[0] for r in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [job.table]).fetchall()}
        if not existing:
            columns = [f"{quote(f.name)} {_duck_type(f.type)}" for f in schema]
            if job.key:
                columns.append(f"PRIMARY KEY ({', '.join(quote(k) for k in job.key)})")
            connection.execute(f"CREATE TABLE {quote(job.table)} ({', '.join(columns)})")
            return
        for field in schema:
            if field.name not in existing:
                connection.execute(f"ALTER TABLE {quote(job.table)} ADD COLUMN {quote(field.name)} "
                                   f"{_duck_type(field.type)}")


def load_table(job: LoadJob, table: pa.Table) -> int:
    """Write one conformed batch in one transaction; a refused batch raises LoadValidationError.
    Every record of the batch counts as loaded, also one that a later record of its key replaced
    (so that total == successful + failed holds under merge too)."""
    received = table.num_rows
    if job.disposition == "merge":
        table = dedupe_last(table, job.key)
    try:
        if job.target.type == "database":
            _load_database(job, table)
        elif job.target.type == "warehouse":
            _load_duckdb(job, table)
        else:
            _load_files(job, job.target, table)
    except BatchyardError:
        raise
    except Exception as exc:
        if _is_data_error(exc):
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LoadValidationError(f"{describe_target(job.target)} refused the batch: {reason}") \
                from None
        raise
    return received


def _load_database(job: LoadJob, table: pa.Table) -> None:
    with session(job.target.url, write=True) as current:
        if job.disposition == "merge":
            load_rows(current, job.table, table.drop_columns([BATCH]), job.key,
                      table[BATCH][0].as_py())
        else:
            current.ingest_into(job.table, table)


def _load_duckdb(job: LoadJob, table: pa.Table) -> None:
    columns = ", ".join(quote(n) for n in table.column_names)
    verb = "INSERT OR REPLACE INTO" if job.disposition == "merge" else "INSERT INTO"
    with duckdb_connection(job.target.path) as connection:
        connection.register("batchyard_batch", table)
        connection.execute("BEGIN TRANSACTION")
        try:
            connection.execute(f"{verb} {quote(job.table)} ({columns}) "
                               f"SELECT {columns} FROM batchyard_batch")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def _load_files(job: LoadJob, target: FileTarget, table: pa.Table) -> None:
    """One file per batch (per partition value), named after the batch so a retried batch
    overwrites its own file rather than adding a second copy."""
    import pyarrow.dataset as ds

    batch_id = table[BATCH][0].as_py()
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in batch_id)
    ds.write_dataset(
        table, job.table, format=target.format,
        partitioning=[target.partition_by] if target.partition_by else None,
        partitioning_flavor="hive" if target.partition_by else None,
        basename_template=f"part-{safe}-{{i}}.{target.format}",
        existing_data_behavior="overwrite_or_ignore",
    )


def finish_target(job: LoadJob, complete: bool) -> bool:
    """Under replace, put the staging data in the target's place if every batch loaded, else
    drop it; returns whether the new data became visible."""
    if job.disposition != "replace":
        return complete
    target = job.target
    if target.type == "file":
        if not complete:
            shutil.rmtree(job.table, ignore_errors=True)
            return False
        old = Path(f"{target.path}.old-{job.run_id}")
        if Path(target.path).exists():
            Path(target.path).rename(old)
        Path(job.table).rename(target.path)
        shutil.rmtree(old, ignore_errors=True)
        return True
    swap = [f"DROP TABLE IF EXISTS {quote(target.table)}",
            f"ALTER TABLE {quote(job.table)} RENAME TO {quote(target.table)}"]
    if not complete:
        swap = [f"DROP TABLE IF EXISTS {quote(job.table)}"]
    if target.type == "database":
        with session(target.url, write=True) as current:
            for statement in swap:
                current.sql(statement)
    else:
        with duckdb_connection(target.path) as connection:
            connection.execute("BEGIN TRANSACTION")
            for statement in swap:
                connection.execute(statement)
            connection.execute("COMMIT")
    return complete
