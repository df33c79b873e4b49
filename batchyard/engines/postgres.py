"""PostgreSQL through SQLAlchemy and psycopg 3; Arrow rows arrive by COPY."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pcsv
import sqlalchemy as sa

from batchyard.engines import register
from batchyard.engines.base import OnConflictSql, PooledEngine, SqlAlchemySession, add_column_sql
from batchyard.identifiers import quote


def copy_csv(cursor, table: str, data: pa.Table) -> None:
    """COPY Arrow rows into a table as CSV written by Arrow (in C, no per-row Python)."""
    names = ", ".join(quote(n) for n in data.column_names)
    buffer = io.BytesIO()
    pcsv.write_csv(data, buffer, write_options=pcsv.WriteOptions(include_header=False))
    with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


class PostgresSession(OnConflictSql, SqlAlchemySession):
    """A SQLAlchemy connection with the `Session` interface."""

    dialect_name = "postgresql"

    @staticmethod
    def insert(table: sa.Table):
        """The dialect's INSERT, imported on first use: SQLite-only runs never load it."""
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def ingest_into(self, name: str, data: pa.Table) -> None:
        with self._cursor() as cursor:
            copy_csv(cursor, name, data)

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        with self._cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {quote(stage)} (LIKE {quote(like)}) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {quote(stage)}")
            copy_csv(cursor, stage, data)
        return quote(stage)

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.UniqueViolation)

    def create(self, metadata: sa.MetaData) -> None:
        metadata.create_all(self.connection, checkfirst=True)

    def add_column(self, table: str, column: sa.Column) -> None:
        self.sql(add_column_sql(table, column, self.connection.dialect))


@register
class PostgresEngine(PooledEngine):
    backend = "postgresql"
    aliases = ("postgres",)
    password_variable = "PGPASSWORD"  # libpq reads it
    session_class = PostgresSession

    def normalise(self, url: sa.URL) -> sa.URL:
        """A bare `postgresql://` uses psycopg 3, which batchyard ships."""
        if url.drivername in ("postgresql", "postgres"):
            return url.set(drivername="postgresql+psycopg")
        return url
