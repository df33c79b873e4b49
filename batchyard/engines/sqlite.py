"""SQLite, the embedded default, through ADBC.

The ADBC driver binds whole Arrow columns in C, so loaded rows never become Python objects,
which is where a Python loader spends most of its time. batchyard never opens a SQLite file
through Python's own sqlite3 module as well: two SQLite libraries in one process must not share
a file (their POSIX locks would undo each other).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_sqlite.dbapi as adbc  # at import: it loads pyarrow.dataset and pandas (0.4 s)
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from batchyard.engines import register
from batchyard.engines.base import OnConflictSql, Rows, add_column_sql
from batchyard.errors import ConfigurationError
from batchyard.identifiers import quote
from batchyard.settings import get_settings

DIALECT = sqlite_dialect.dialect(paramstyle="qmark")

PAGE_SIZE = 16384
"""The page size of a database file batchyard creates (SQLite sets it before the first table and
keeps it): a 100,000-row chunk then writes a quarter of the pages and B-tree cells, about 10 %
less time for the chunk inserts and half for their commit. An existing file keeps its own."""


def sqlite_arrow(data: pa.Table) -> pa.Table:
    """Arrow types as SQLite stores them (dates as ISO text, booleans as integers)."""
    for i, column in enumerate(data.columns):
        if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
            data = data.set_column(i, data.field(i).name, pc.cast(column, pa.string()))
        elif pa.types.is_boolean(column.type):
            data = data.set_column(i, data.field(i).name, pc.cast(column, pa.int8()))
    return data


class SqliteSession(OnConflictSql):
    """SQLAlchemy Core statements and bulk Arrow loads on one ADBC SQLite connection."""

    dialect_name = "sqlite"
    placeholder = "?"
    insert = staticmethod(sqlite_dialect.insert)
    null_safe_differs = "IS NOT"

    def __init__(self, connection):
        self.connection = connection
        self.cursor = connection.cursor()

    @staticmethod
    def _compile(statement, keys: list[str] | None = None):
        compiled = statement.compile(dialect=DIALECT, column_keys=keys,
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

    def stream_arrow(self, statement, schema: pa.Schema, size: int = 10_000) -> Iterator[pa.Table]:
        """ADBC hands the rows over as Arrow batches: no Python object per value (a rejects
        file of 60,000 records is read in 0.06 s instead of 0.6 s)."""
        text, params, bind = self._compile(statement)
        self.cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(size)})
        self.cursor.execute(text, bind(params) or None)
        for batch in self.cursor.fetch_record_batch():
            if batch.num_rows:
                yield pa.Table.from_batches([batch]).rename_columns(schema.names).cast(schema)

    def fetch_batches(self, text: str, params: tuple, size: int) -> tuple[list[str], Iterator[list]]:
        self.cursor.execute(text, params or None)
        columns = [d[0] for d in self.cursor.description]

        def batches() -> Iterator[list]:
            while rows := self.cursor.fetchmany(size):
                yield rows

        return columns, batches()

    def ingest_into(self, name: str, data: pa.Table) -> None:
        self.cursor.adbc_ingest(name, sqlite_arrow(data), mode="append")

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        self.sql(f"DROP TABLE IF EXISTS temp.{quote(stage)}")
        self.cursor.adbc_ingest(stage, sqlite_arrow(data), mode="create_append", temporary=True)
        return f"temp.{quote(stage)}"

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import adbc_driver_manager

        return isinstance(exc, adbc_driver_manager.Error) and "constraint failed" in str(exc)

    def create(self, metadata: sa.MetaData) -> None:
        for table in metadata.sorted_tables:
            self.sql(str(CreateTable(table, if_not_exists=True).compile(dialect=DIALECT)))
            for index in table.indexes:
                self.sql(str(CreateIndex(index, if_not_exists=True).compile(dialect=DIALECT)))

    def add_column(self, table: str, column: sa.Column) -> None:
        self.sql(add_column_sql(table, column, DIALECT))

    def describe(self, table: str) -> tuple[list[str], list[str]] | None:
        info = self.sql("SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", (table,)).rows
        if not info:
            return None
        return [r[0] for r in info], [r[0] for r in sorted(info, key=lambda r: r[1]) if r[1]]


def _connect(path: str):
    if not Path(path).parent.is_dir():
        raise ConfigurationError(
            f"cannot connect to sqlite:///{path}: unable to open database file "
            f"(no directory {Path(path).parent})"
        )
    connection = adbc.connect(path, autocommit=True)
    cursor = connection.cursor()
    timeout_ms = int(get_settings().sqlite_busy_timeout * 1000)
    for pragma in (f"PRAGMA busy_timeout = {timeout_ms}", f"PRAGMA page_size = {PAGE_SIZE}",
                   "PRAGMA journal_mode = WAL",
                   "PRAGMA synchronous = NORMAL", "PRAGMA temp_store = MEMORY",
                   "PRAGMA wal_autocheckpoint = 20000", "PRAGMA cache_size = -65536"):
        _pragma(cursor, pragma, time.monotonic() + timeout_ms / 1000)
    cursor.close()
    return connection


def _pragma(cursor, pragma: str, deadline: float) -> None:
    """Run a pragma; switching a new file to WAL while other connections open it can be refused
    as locked without SQLite's busy handler waiting, so that is tried again until `deadline`."""
    while True:
        try:
            cursor.execute(pragma)
            if cursor.description:
                cursor.fetchall()
            return
        except Exception as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


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


def _cached(path: str):
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
        connection = _connect(path)
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


def _forget(path: str) -> None:
    cache = getattr(_local, "sqlite", None) or {}
    connection, _ = cache.pop(path, (None, None))
    if connection is not None:
        _open_connections.discard(connection)
        with contextlib.suppress(Exception):
            connection.close()


_writer_locks: dict[str, threading.Lock] = {}
_writer_locks_guard = threading.Lock()


@contextlib.contextmanager
def _writer_turn(path: str) -> Iterator[None]:
    """Writers of one process queue for a SQLite file here, before its own write lock.

    SQLite's busy handler polls a taken lock with sleeps that grow to 100 ms, so a writer
    waiting for another's commit would start up to 25 ms after the lock was free; here the next
    writer is woken the moment the lock is released. Other processes still meet SQLite's own
    busy timeout."""
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


@register
class SqliteEngine:
    backend = "sqlite"
    aliases = ()
    password_variable = None

    def normalise(self, url: sa.URL) -> sa.URL:
        if not url.database:
            raise ConfigurationError("in-memory SQLite is not supported: use sqlite:///path/to/file.db")
        return url

    def exists(self, url: sa.URL) -> bool:
        """Whether the database file is there (connecting would create it)."""
        return Path(url.database).is_file()

    @contextlib.contextmanager
    def session(self, db: str, url: sa.URL, write: bool) -> Iterator[SqliteSession]:
        """SQLite takes its write lock at the start of a writing session (BEGIN IMMEDIATE), so
        concurrent chunk commits queue, never deadlock."""
        path = str(Path(url.database).resolve())
        with _writer_turn(path) if write else contextlib.nullcontext():
            current = SqliteSession(_cached(path))
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
                        _forget(path)
                raise
            finally:
                current.cursor.close()

    @staticmethod
    def bulk_form(data: pa.Table) -> pa.Table:
        return sqlite_arrow(data)

    def checkpoint(self, db: str, url: sa.URL) -> None:
        """Copy committed pages from the write-ahead log into the database file without waiting
        for or blocking any writer (PASSIVE). Left to SQLite, this happens inside the commit
        that crosses `wal_autocheckpoint`, holding up that writer."""
        with contextlib.suppress(Exception), self.session(db, url, False) as current:
            current.sql("PRAGMA wal_checkpoint(PASSIVE)")
