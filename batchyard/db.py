"""Database access for targets and the ledger: SQLite (the embedded default) and PostgreSQL.

Everything goes through a `Session`, whose `execute` takes SQLAlchemy Core statements, so the
ledger is written once. PostgreSQL sessions are SQLAlchemy connections (psycopg 3; rows arrive by
COPY). SQLite sessions are ADBC connections: the ADBC driver binds whole Arrow columns in C, so
loaded rows never become Python objects, which is where a Python loader spends most of its time.
batchyard never opens a SQLite file through Python's own sqlite3 module as well: two SQLite
libraries in one process must not share a file (their POSIX locks would undo each other).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adbc_driver_sqlite.dbapi as adbc  # at import: it loads pyarrow.dataset and pandas (0.4 s)
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from batchyard.errors import ConfigurationError
from batchyard.identifiers import quote
from batchyard.settings import get_settings

_SQLITE = sqlite_dialect.dialect(paramstyle="qmark")


def normalise_url(url: str) -> sa.URL:
    """Parse a database URL; a bare `postgresql://` uses psycopg 3, which batchyard ships."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigurationError(f"not a database URL: {safe_url(url)!r}") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite" and not parsed.database:
        raise ConfigurationError("in-memory SQLite is not supported: use sqlite:///path/to/file.db")
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {backend!r} in {safe_url(parsed)}: use sqlite:/// or postgresql://"
        )
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL with its password masked, for logs, errors, the ledger and artifacts."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"


@functools.lru_cache(maxsize=16)
def get_engine(url: str) -> sa.Engine:
    """SQLAlchemy engine for PostgreSQL targets."""
    return sa.create_engine(normalise_url(url), pool_size=12, max_overflow=4, pool_pre_ping=True)


class Rows:
    """The slice of SQLAlchemy's Result API the ledger uses."""

    def __init__(self, columns: list[str], rows: list[tuple], rowcount: int):
        self.columns, self.rows, self.rowcount = columns, rows, rowcount

    def scalar_one(self) -> Any:
        (row,) = self.rows
        return row[0]

    def mappings(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def __iter__(self):
        return iter(self.rows)


class SqliteSession:
    """SQLAlchemy Core statements and bulk Arrow loads on one ADBC SQLite connection."""

    dialect_name = "sqlite"
    placeholder = "?"

    def __init__(self, connection):
        self.connection = connection
        self.cursor = connection.cursor()

    @staticmethod
    def _compile(statement, keys: list[str] | None = None):
        compiled = statement.compile(dialect=_SQLITE, column_keys=keys,
                                     compile_kwargs={"render_postcompile": True})
        processors = compiled._bind_processors

        def bind(values: dict) -> tuple:
            out = []
            for name in compiled.positiontup or ():
                value = values[name]
                processor = processors.get(name)
                out.append(processor(value) if processor and value is not None else value)
            return tuple(out)

        return str(compiled), compiled.params, bind

    def execute(self, statement, rows: list[dict] | None = None) -> Rows:
        if rows:
            text, params, bind = self._compile(statement, list(rows[0]))
            self.cursor.executemany(text, [bind({**params, **r}) for r in rows])
            return Rows([], [], len(rows))
        text, params, bind = self._compile(statement)
        return self.sql(text, bind(params))

    def sql(self, text: str, params: tuple = ()) -> Rows:
        self.cursor.execute(text, params or None)
        if self.cursor.description:
            columns = [d[0] for d in self.cursor.description]
            return Rows(columns, self.cursor.fetchall(), -1)
        self.cursor.execute("SELECT changes()")
        return Rows([], [], self.cursor.fetchall()[0][0])

    def stream(self, statement, size: int = 10_000) -> Iterator[tuple]:
        text, params, bind = self._compile(statement)
        self.cursor.execute(text, bind(params) or None)
        while batch := self.cursor.fetchmany(size):
            yield from batch

    def ingest(self, name: str, data: pa.Table) -> None:
        self.cursor.adbc_ingest(name, sqlite_arrow(data), mode="create_append", temporary=True)

    def ingest_into(self, name: str, data: pa.Table) -> None:
        self.cursor.adbc_ingest(name, sqlite_arrow(data), mode="append")

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import adbc_driver_manager

        return isinstance(exc, adbc_driver_manager.Error) and "constraint failed" in str(exc)

    def create(self, metadata: sa.MetaData) -> None:
        for table in metadata.sorted_tables:
            self.sql(str(CreateTable(table, if_not_exists=True).compile(dialect=_SQLITE)))
            for index in table.indexes:
                self.sql(str(CreateIndex(index, if_not_exists=True).compile(dialect=_SQLITE)))

    def add_column(self, table: str, column: sa.Column) -> None:
        _add_column(self, table, column, _SQLITE)

    def describe(self, table: str) -> tuple[list[str], list[str]] | None:
        """Column names and primary key of an existing table, or None."""
        info = self.sql("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,)).rows
        if not info:
            return None
        return [r[0] for r in info], [r[0] for r in sorted(info, key=lambda r: r[1]) if r[1]]


class PostgresSession:
    """A SQLAlchemy connection (PostgreSQL) with the same interface."""

    dialect_name = "postgresql"
    placeholder = "%s"

    def __init__(self, connection: sa.Connection):
        self.connection = connection

    def execute(self, statement, rows: list[dict] | None = None) -> Rows:
        result = self.connection.execute(statement, rows) if rows else \
            self.connection.execute(statement)
        if result.returns_rows:
            return Rows(list(result.keys()), [tuple(r) for r in result], result.rowcount)
        return Rows([], [], result.rowcount)

    def sql(self, text: str, params: tuple = ()) -> Rows:
        with self.connection.connection.driver_connection.cursor() as cursor:
            cursor.execute(text, params or None)
            if cursor.description:
                return Rows([d[0] for d in cursor.description], cursor.fetchall(), -1)
            return Rows([], [], cursor.rowcount)

    def stream(self, statement, size: int = 10_000) -> Iterator[tuple]:
        yield from self.connection.execution_options(yield_per=size).execute(statement)

    def ingest_into(self, name: str, data: pa.Table) -> None:
        with self.connection.connection.driver_connection.cursor() as cursor:
            copy_csv(cursor, name, data)

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.UniqueViolation)

    def create(self, metadata: sa.MetaData) -> None:
        metadata.create_all(self.connection, checkfirst=True)

    def add_column(self, table: str, column: sa.Column) -> None:
        _add_column(self, table, column, self.connection.dialect)

    def describe(self, table: str) -> tuple[list[str], list[str]] | None:
        inspector = sa.inspect(self.connection)
        if not inspector.has_table(table):
            return None
        columns = [c["name"] for c in inspector.get_columns(table)]
        return columns, inspector.get_pk_constraint(table).get("constrained_columns") or []


Session = SqliteSession | PostgresSession


def sqlite_arrow(data: pa.Table) -> pa.Table:
    """Arrow types as SQLite stores them (dates as ISO text, booleans as integers)."""
    for i, column in enumerate(data.columns):
        if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
            data = data.set_column(i, data.field(i).name, pc.cast(column, pa.string()))
        elif pa.types.is_boolean(column.type):
            data = data.set_column(i, data.field(i).name, pc.cast(column, pa.int8()))
    return data


def copy_csv(cursor, table: str, data: pa.Table) -> None:
    """COPY Arrow rows into a PostgreSQL table as CSV written by Arrow (in C, no per-row Python)."""
    names = ", ".join(quote(n) for n in data.column_names)
    buffer = io.BytesIO()
    pcsv.write_csv(data, buffer, write_options=pcsv.WriteOptions(include_header=False))
    with cursor.copy(f"COPY {quote(table)} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getbuffer())


def _add_column(session, table: str, column: sa.Column, dialect) -> None:
    kind = column.type.compile(dialect=dialect)
    default = ""
    if column.server_default is not None:
        default = " DEFAULT " + str(column.server_default.arg.compile(dialect=dialect))
    session.sql(f'ALTER TABLE "{table}" ADD COLUMN "{column.name}" {kind}{default}')


def _sqlite_connect(path: str):
    if not Path(path).parent.is_dir():
        raise ConfigurationError(
            f"cannot connect to sqlite:///{path}: unable to open database file "
            f"(no directory {Path(path).parent})"
        )
    connection = adbc.connect(path, autocommit=True)
    cursor = connection.cursor()
    timeout_ms = int(get_settings().sqlite_busy_timeout * 1000)
    for pragma in (f"PRAGMA busy_timeout = {timeout_ms}", "PRAGMA journal_mode = WAL",
                   "PRAGMA synchronous = NORMAL", "PRAGMA temp_store = MEMORY",
                   "PRAGMA wal_autocheckpoint = 20000", "PRAGMA cache_size = -65536"):
        cursor.execute(pragma)
        if cursor.description:
            cursor.fetchall()
    cursor.close()
    return connection


_local = threading.local()
_CACHED_PER_THREAD = 4
_open_connections: set = set()


@atexit.register
def close_cached_connections() -> None:
    """Close cached SQLite connections while the interpreter still works: ADBC's finaliser
    fails noisily when it runs during interpreter teardown."""
    for connection in list(_open_connections):
        with contextlib.suppress(Exception):
            connection.close()
    _open_connections.clear()


def _cached_sqlite(path: str):
    """Connections stay open per thread: closing the last one checkpoints the whole WAL, which
    would cost every chunk a full checkpoint."""
    cache: OrderedDict = getattr(_local, "sqlite", None) or OrderedDict()
    _local.sqlite = cache
    connection, identity = cache.pop(path, (None, None))
    if connection is not None and identity != _file_identity(path):
        _open_connections.discard(connection)  # the file was deleted or replaced since
        with contextlib.suppress(Exception):
            connection.close()
        connection = None
    if connection is None:
        connection = _sqlite_connect(path)
        _open_connections.add(connection)
        identity = _file_identity(path)
    cache[path] = (connection, identity)
    while len(cache) > _CACHED_PER_THREAD:
        _, (old, _) = cache.popitem(last=False)
        _open_connections.discard(old)
        with contextlib.suppress(Exception):
            old.close()
    return connection


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _forget_sqlite(path: str) -> None:
    cache = getattr(_local, "sqlite", None) or {}
    connection, _ = cache.pop(path, (None, None))
    if connection is not None:
        _open_connections.discard(connection)
        with contextlib.suppress(Exception):
            connection.close()


@contextlib.contextmanager
def session(db: str, write: bool = False) -> Iterator[Session]:
    """A session on `db`; with `write`, one transaction committed at the end of the block
    (SQLite takes its write lock at the start, so concurrent chunk commits queue, never deadlock)."""
    url = normalise_url(db)
    if url.get_backend_name() == "postgresql":
        engine = get_engine(db)
        with engine.begin() if write else engine.connect() as connection:
            yield PostgresSession(connection)
        return
    path = str(Path(url.database).resolve())
    with _writer_turn(path) if write else contextlib.nullcontext():
        current = SqliteSession(_cached_sqlite(path))
        try:
            if write:
                current.cursor.execute("BEGIN IMMEDIATE")
            yield current
            if write:
                current.cursor.execute("COMMIT")
        except BaseException:
            if write:
                try:
                    current.cursor.execute("ROLLBACK")
                except Exception:
                    _forget_sqlite(path)
            raise
        finally:
            current.cursor.close()


_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


@contextlib.contextmanager
def _writer_turn(path: str) -> Iterator[None]:
    """Writers of one process queue for a SQLite file here, before its own write lock.

    SQLite's busy handler polls a taken lock with sleeps that grow to 100 ms, so a chunk
    waiting for another chunk's commit started 5-25 ms after the lock was free (measured:
    ~0.1 s per million rows on the single-writer critical path). Here the next writer is woken
    the moment the lock is released; other processes still meet SQLite's own busy timeout."""
    with _writer_locks_guard:
        lock = _writer_locks.setdefault(path, threading.Lock())
    timeout = get_settings().sqlite_busy_timeout
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"database is locked: another writer of this process held {path} "
                           f"for over {timeout:g} s")
    try:
        yield
    finally:
        lock.release()


def checkpoint(db: str) -> None:
    """Copy committed pages from SQLite's write-ahead log into the database file, without
    waiting for or blocking any writer (PASSIVE). Left to SQLite, this happens inside the commit
    that crosses `wal_autocheckpoint`, holding up that writer; PostgreSQL needs nothing."""
    if normalise_url(db).get_backend_name() != "sqlite":
        return
    with contextlib.suppress(Exception), session(db) as current:  # SQLite's own one still runs
        current.sql("PRAGMA wal_checkpoint(PASSIVE)")


def check_connection(db: str) -> None:
    """Connect once, so an unreachable database is a one-line error before any work starts."""
    try:
        with session(db) as current:
            current.sql("SELECT 1")
    except ConfigurationError:
        raise
    except Exception as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise ConfigurationError(f"cannot connect to {safe_url(normalise_url(db))}: {reason}") from None
