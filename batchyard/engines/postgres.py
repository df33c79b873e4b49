"""PostgreSQL through SQLAlchemy and psycopg 3; Arrow rows arrive by COPY (binary where every
column can be encoded for its type, CSV otherwise)."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import sqlalchemy as sa

from batchyard.engines import pgcopy, register
from batchyard.engines.base import OnConflictSql, PooledEngine, SqlAlchemySession, add_column_sql
from batchyard.identifiers import quote
from batchyard.settings import get_settings

DDL_LOCK = 0x62617463687961  # "batchya": the advisory lock key every batchyard DDL takes


def copy_csv(cursor, table: str, data: pa.Table) -> None:
    """COPY Arrow rows into a table as CSV written by Arrow (in C, no per-row Python)."""
    names = ", ".join(quote(n) for n in data.column_names)
    buffer = io.BytesIO()
    pcsv.write_csv(data, buffer, write_options=pcsv.WriteOptions(include_header=False))
    with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


def copy_rows(cursor, table: str, data: pa.Table, types: dict[str, str]) -> None:
    """COPY Arrow rows into a table in PostgreSQL's binary format when every column can be
    encoded for its column's type (the server then parses nothing: about half its COPY time),
    else as CSV. `types` maps the table's column names to their types."""
    kinds = [types.get(name, "") for name in data.column_names]
    payload = pgcopy.encode(data, kinds) if all(kinds) else None
    if payload is None:
        copy_csv(cursor, table, data)
        return
    names = ", ".join(quote(n) for n in data.column_names)
    with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN WITH (FORMAT binary)") as copy:
        copy.write(payload)


class PostgresSession(OnConflictSql, SqlAlchemySession):
    """A SQLAlchemy connection with the `Session` interface."""

    dialect_name = "postgresql"

    @staticmethod
    def insert(table: sa.Table):
        """The dialect's INSERT, imported on first use: SQLite-only runs never load it."""
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    def __init__(self, connection: sa.Connection):
        super().__init__(connection)
        self._types: dict[str, dict[str, str]] = {}

    def column_types(self, table: str) -> dict[str, str]:
        """The table's column names and types (`format_type` spelling), asked once per session."""
        if table not in self._types:
            found = self.sql("SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a "
                             "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
                             (quote(table),)).rows
            self._types[table] = dict(found)
        return self._types[table]

    def ingest_into(self, name: str, data: pa.Table) -> None:
        types = self.column_types(name)
        with self._cursor() as cursor:
            copy_rows(cursor, name, data, types)

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        with self._cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {quote(stage)} (LIKE {quote(like)}) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {quote(stage)}")
        types = self.column_types(stage)
        with self._cursor() as cursor:
            copy_rows(cursor, stage, data, types)
        return quote(stage)

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.UniqueViolation)

    def lock_ddl(self) -> None:
        """Hold the database's DDL lock until this transaction ends. PostgreSQL's `CREATE TABLE`
        (`IF NOT EXISTS` too) checks, then creates: two sessions creating one table at once
        collide on `pg_type` (a UniqueViolation). Taken, a creator that lost the race waits,
        then checks again and finds the winner's table. Taken again in one transaction, it
        costs a lookup."""
        self.sql("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))

    def create(self, metadata: sa.MetaData) -> None:
        """Create the tables (with their indexes) that are not there, under the DDL lock. Not
        `CREATE INDEX IF NOT EXISTS` on an existing table: PostgreSQL asks for the table's
        ownership before it looks, which a role that only writes the table lacks."""
        self.lock_ddl()
        metadata.create_all(self.connection, checkfirst=True)

    def add_column(self, table: str, column: sa.Column) -> None:
        self.lock_ddl()
        self._types.pop(table, None)
        self.sql(add_column_sql(table, column, self.connection.dialect).replace(
            "ADD COLUMN", "ADD COLUMN IF NOT EXISTS", 1))


def session_options(url: sa.URL, lock_timeout: float, statement_timeout: float) -> str:
    """libpq `options` that bound every wait of a session: for a lock (`lock_timeout`) and for
    a whole statement (`statement_timeout`), in seconds, 0 for none. A statement that runs out
    fails ("canceling statement due to lock timeout"), classified TIMEOUT_ERROR and retried as
    a transient fault, instead of hanging for as long as another session holds a lock."""
    given = url.query.get("options")
    given = given if isinstance(given, str) else " ".join(given or ())
    bounds = (f"-c lock_timeout={int(lock_timeout * 1000)} "
              f"-c statement_timeout={int(statement_timeout * 1000)}")
    return f"{given} {bounds}".strip()


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

    def engine_options(self, url: sa.URL) -> dict[str, Any]:
        settings = get_settings()
        options = session_options(url, settings.pg_lock_timeout, settings.pg_statement_timeout)
        return {"connect_args": {"options": options}}
