"""The warehouse target: a table of a DuckDB file, the embedded warehouse.

Every connection goes through `duckdb_connection`, one writer at a time per file; the state
lives in two tables of the same file.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa

from batchyard.etl import state
from batchyard.etl.extract import Cursor
from batchyard.etl.targets import TableTarget, column_kind, is_integer_type, swap_statements
from batchyard.identifiers import quote

if TYPE_CHECKING:
    from batchyard.etl.load import LoadJob

_STATE_DDL = [
    f"CREATE TABLE IF NOT EXISTS {state.STATE_TABLE} (pipeline_id VARCHAR, source_id VARCHAR, "
    "cursor_column VARCHAR, cursor_kind VARCHAR, cursor_value VARCHAR, run_id VARCHAR, "
    "updated_at VARCHAR, PRIMARY KEY (pipeline_id, source_id))",
    f"CREATE TABLE IF NOT EXISTS {state.FAILED_TABLE} (pipeline_id VARCHAR, run_id VARCHAR, "
    "source_id VARCHAR, batch_index BIGINT, n_rows BIGINT, path VARCHAR, error VARCHAR, "
    "recorded_at VARCHAR)",
]

_duck_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)


@contextlib.contextmanager
def duckdb_connection(path: str):
    """A connection to the DuckDB file at `path` (created, with its directory, when missing),
    closed on exit.

    One writer at a time per file, held for the whole block: DuckDB allows one writing process,
    and its optimistic transactions would make parallel upserts of one key fail.
    """
    import duckdb

    resolved = str(Path(path).resolve())
    with _duck_locks[resolved]:
        Path(resolved).parent.mkdir(parents=True, exist_ok=True)
        connection = duckdb.connect(resolved)
        try:
            yield connection
        finally:
            connection.close()


_DUCK_TYPES = {"boolean": "BOOLEAN", "integer": "BIGINT", "float": "DOUBLE", "timestamp": "TIMESTAMP",
               "timestamptz": "TIMESTAMPTZ", "date": "DATE", "text": "VARCHAR"}


def _duck_type(arrow_type: pa.DataType) -> str:
    return _DUCK_TYPES[column_kind(arrow_type)]


class WarehouseEtlTarget(TableTarget):
    """`EtlTarget` for a `WarehouseTarget` spec (`path` may name a saved DuckDbWarehouse)."""

    block_fields: ClassVar[dict[str, str]] = {"path": "DuckDbWarehouse"}

    def describe(self) -> str:
        return f"duckdb {self.spec.path} table {self.spec.table}"

    def prepare_table(self, job: LoadJob, schema: pa.Schema) -> None:
        with duckdb_connection(self.spec.path) as connection:
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
                    connection.execute(f"ALTER TABLE {quote(job.table)} ADD COLUMN "
                                       f"{quote(field.name)} {_duck_type(field.type)}")

    def load(self, job: LoadJob, table: pa.Table) -> None:
        columns = ", ".join(quote(n) for n in table.column_names)
        verb = "INSERT OR REPLACE INTO" if job.disposition == "merge" else "INSERT INTO"
        with duckdb_connection(self.spec.path) as connection:
            connection.register("batchyard_batch", table)
            connection.execute("BEGIN TRANSACTION")
            try:
                connection.execute(f"{verb} {quote(job.table)} ({columns}) "
                                   f"SELECT {columns} FROM batchyard_batch")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def integer_columns(self, job: LoadJob) -> set[str]:
        with duckdb_connection(self.spec.path) as connection:
            found = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
                [job.table]).fetchall()
        return {name for name, kind in found if is_integer_type(kind)}

    def finish(self, job: LoadJob, complete: bool) -> bool:
        if job.disposition != "replace":
            return complete
        with duckdb_connection(self.spec.path) as connection:
            connection.execute("BEGIN TRANSACTION")
            for statement in swap_statements(self.spec.table, job.table, complete):
                connection.execute(statement)
            connection.execute("COMMIT")
        return complete

    def ensure_state(self) -> None:
        with duckdb_connection(self.spec.path) as connection:
            for ddl in _STATE_DDL:
                connection.execute(ddl)

    def read_cursor(self, pipeline_id: str, source_id: str) -> Cursor | None:
        with duckdb_connection(self.spec.path) as connection:
            rows = connection.execute(state.CURSOR_QUERY.format(p="?"), [pipeline_id, source_id]).fetchall()
        return state.cursor_from_rows(rows)

    def save_cursor(self, pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> None:
        row = state.cursor_row(pipeline_id, source_id, cursor, run_id)
        with duckdb_connection(self.spec.path) as connection:
            connection.execute(f"INSERT OR REPLACE INTO {state.STATE_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
                               list(row.values()))

    def record_failures(self, pipeline_id: str, run_id: str, failed: list[state.FailedBatch]) -> None:
        if not failed:
            return
        rows = state.failure_rows(pipeline_id, run_id, failed)
        with duckdb_connection(self.spec.path) as connection:
            connection.executemany(
                f"INSERT INTO {state.FAILED_TABLE} (pipeline_id, run_id, source_id, batch_index, n_rows, "
                "path, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[r["pipeline_id"], r["run_id"], r["source_id"], r["batch_index"], r["n_rows"],
                  r["path"], r["error"], r["recorded_at"]] for r in rows])

    def failed_batches(self, pipeline_id: str) -> list[dict]:
        with duckdb_connection(self.spec.path) as connection:
            rows = connection.execute(state.FAILED_QUERY.format(p="?"), [pipeline_id]).fetchall()
        return [dict(zip(state.FAILED_COLUMNS, r, strict=True)) for r in rows]
