"""The database target: a table of SQLite, PostgreSQL or MariaDB, written through
`batchyard.engines.session`.

Merge upserts with `batchyard.load.load_rows` (the same upsert as batch imports), append ingests
in bulk with `session.ingest_into`; the state lives in two tables of the same database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import sqlalchemy as sa

from batchyard.chunks import BATCH
from batchyard.engines import safe_url, session
from batchyard.engines.base import columns
from batchyard.errors import RecordsRefused
from batchyard.etl.extract import Cursor
from batchyard.etl.state import (
    CURSOR_QUERY,
    FAILED_COLUMNS,
    FAILED_QUERY,
    FAILED_TABLE,
    STATE_TABLE,
    FailedBatch,
    cursor_from_rows,
    cursor_row,
    failure_rows,
)
from batchyard.etl.targets import (
    LoadValidationError,
    TableTarget,
    column_kind,
    is_integer_type,
    swap_statements,
)
from batchyard.identifiers import check_identifier
from batchyard.ingest.load import load_rows

if TYPE_CHECKING:
    from batchyard.etl.load import LoadJob

_metadata = sa.MetaData()
cursors = sa.Table(
    STATE_TABLE, _metadata,
    *columns("pipeline_id source_id", primary_key=True),
    *columns("cursor_column cursor_kind cursor_value", nullable=False),
    *columns("run_id updated_at"),
)
failures = sa.Table(
    FAILED_TABLE, _metadata,
    *columns("pipeline_id run_id source_id", nullable=False),
    *columns("batch_index n_rows", sa.BigInteger, nullable=False),
    *columns("path", nullable=False),
    *columns("error recorded_at"),
)


_SQL_TYPES = {"boolean": sa.Boolean, "integer": sa.BigInteger, "float": sa.Float,
              "timestamp": sa.DateTime, "timestamptz": lambda: sa.DateTime(timezone=True),
              "date": sa.Date, "text": sa.Text}


def _sql_type(arrow_type: pa.DataType):
    return _SQL_TYPES[column_kind(arrow_type)]()


def _sa_table(name: str, schema: pa.Schema, key: tuple[str, ...]) -> sa.Table:
    metadata = sa.MetaData()
    columns = [sa.Column(check_identifier(f.name, "column name"), _sql_type(f.type),
                         primary_key=f.name in key, nullable=f.name not in key) for f in schema]
    return sa.Table(check_identifier(name), metadata, *columns)


class DatabaseEtlTarget(TableTarget):
    """`EtlTarget` for a `DatabaseTarget` spec (`url` may name a saved SqlAlchemyConnector)."""

    block_fields: ClassVar[dict[str, str]] = {"url": "SqlAlchemyConnector"}

    def describe(self) -> str:
        return f"{safe_url(self.spec.url)} table {self.spec.table}"

    def prepare_table(self, job: LoadJob, schema: pa.Schema) -> None:
        with session(self.spec.url, write=True) as current:
            if job.disposition == "replace":
                current.sql(f"DROP TABLE IF EXISTS {current.quote(job.table)}")
            existing = current.describe(job.table)
            table = _sa_table(job.table, schema, job.key)
            if existing is None:  # another run may create it first: check what it made
                current.create(table.metadata)
                existing = current.describe(job.table)
            columns, keys = existing
            if job.disposition == "merge" and set(keys) != set(job.key):
                raise LoadValidationError(f"table {job.table} exists with primary key "
                                          f"({', '.join(keys) or 'none'}), not ({', '.join(job.key)})")
            for column in table.columns:
                if column.name not in columns:
                    current.add_column(job.table, sa.Column(column.name, column.type))

    def load(self, job: LoadJob, table: pa.Table) -> None:
        """Raises LoadValidationError when the database refuses a record's values: the batch
        loads whole or not at all."""
        with session(self.spec.url, write=True) as current:
            try:
                if job.disposition == "merge":
                    refused = load_rows(current, job.table, table.drop_columns([BATCH]), job.key,
                                        table[BATCH][0].as_py()).refused
                    if refused:
                        raise LoadValidationError(
                            f"{self.describe()} refused {len(refused)} record(s), the first "
                            f"(row {refused[0][0]}): {refused[0][1]}")
                else:
                    current.ingest_into(job.table, table)
            except RecordsRefused as exc:
                raise LoadValidationError(f"{self.describe()} refused the batch: {exc}") from None

    def integer_columns(self, job: LoadJob) -> set[str]:
        with session(self.spec.url) as current:
            if current.dialect_name == "sqlite":
                found = current.sql("SELECT name, type FROM pragma_table_info(?)", (job.table,)).rows
            else:
                where = " AND table_schema = current_schema()" if current.dialect_name == "postgresql" else ""
                found = current.sql("SELECT column_name, data_type FROM information_schema.columns "
                                    f"WHERE table_name = {current.placeholder}{where}", (job.table,)).rows
        return {name for name, kind in found if is_integer_type(kind or "")}

    def finish(self, job: LoadJob, complete: bool) -> bool:
        if job.disposition != "replace":
            return complete
        with session(self.spec.url, write=True) as current:
            for statement in swap_statements(self.spec.table, job.table, complete, current.quote):
                current.sql(statement)
        return complete

    def ensure_state(self) -> None:
        with session(self.spec.url, write=True) as current:
            current.create(_metadata)

    def read_cursor(self, pipeline_id: str, source_id: str) -> Cursor | None:
        with session(self.spec.url) as current:
            rows = current.sql(CURSOR_QUERY.format(p=current.placeholder), (pipeline_id, source_id)).rows
        return cursor_from_rows(rows)

    def save_cursor(self, pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> None:
        row = cursor_row(pipeline_id, source_id, cursor, run_id)
        with session(self.spec.url, write=True) as current:
            current.execute(cursors.delete().where(cursors.c.pipeline_id == pipeline_id,
                                                   cursors.c.source_id == source_id))
            current.execute(cursors.insert().values(**row))

    def record_failures(self, pipeline_id: str, run_id: str, failed: list[FailedBatch]) -> None:
        if not failed:
            return
        rows = failure_rows(pipeline_id, run_id, failed)
        with session(self.spec.url, write=True) as current:
            current.execute(failures.insert(), rows)

    def failed_batches(self, pipeline_id: str) -> list[dict]:
        with session(self.spec.url) as current:
            rows = current.sql(FAILED_QUERY.format(p=current.placeholder), (pipeline_id,)).rows
        return [dict(zip(FAILED_COLUMNS, r, strict=True)) for r in rows]
