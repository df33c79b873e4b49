"""What every database engine provides: the `Session` protocol the ledger, the loaders, the ETL
database target and the stream sinks are written against, and the SQL they share.

Statements are SQLAlchemy Core where the SQL is the same everywhere; what differs between
engines (bulk loading Arrow rows, staging, upserts, DDL details) is a method of the session.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import sqlalchemy as sa

from batchyard.identifiers import quote


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


class Session(Protocol):
    """One connection to a target database, inside a transaction when opened for writing."""

    dialect_name: str
    placeholder: str
    """The driver's parameter marker for `sql` (`?`, `%s`)."""
    quote: Callable[[str], str]
    """Quotes a checked identifier for SQL written by hand (`"name"`, `` `name` ``)."""

    def execute(self, statement, rows: list[dict] | None = None) -> Rows:
        """Run a SQLAlchemy Core statement, once or for each of `rows`."""

    def sql(self, text: str, params: tuple = ()) -> Rows:
        """Run one SQL string with positional parameters."""

    def stream(self, statement, size: int = 10_000) -> Iterator[tuple]:
        """The rows of a Core select, fetched `size` at a time."""

    def fetch_batches(self, text: str, params: tuple, size: int) -> tuple[list[str], Iterator[list]]:
        """The column names of a SQL query, and its rows in lists of at most `size`."""

    def stream_arrow(self, statement, schema: pa.Schema, size: int = 10_000) -> Iterator[pa.Table]:
        """The rows of a Core select as Arrow tables of `schema` (its columns in order), of at
        most about `size` rows each."""

    def ingest_into(self, name: str, data: pa.Table) -> None:
        """Append Arrow rows to an existing table in bulk (no per-row Python)."""

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        """Load `data` into a temporary staging table shaped like table `like`, emptied first;
        returns the name to select it from."""

    def merge_from(self, table: str, source: str, names: list[str], key: tuple[str, ...],
                   batch_column: str, row_column: str | None = None) -> int:
        """Insert the rows of `source` into `table`, updating rows whose key exists unless
        `batch_column` already holds the same batch (with `row_column`: unless it holds the
        same batch and a row number no greater than the incoming one, so that the first
        record of a batch wins whichever commits first); returns the rows written."""

    def upsert(self, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
        """Insert `rows`, replacing the other columns of rows whose `keys` exist."""

    def is_conflict(self, exc: Exception) -> bool:
        """Whether `exc` is a unique-key violation."""

    def create(self, metadata: sa.MetaData) -> None:
        """Create the tables (and their indexes) of `metadata` that do not exist."""

    def add_column(self, table: str, column: sa.Column) -> None:
        """Add `column` to an existing table."""

    def describe(self, table: str) -> tuple[list[str], list[str]] | None:
        """Column names and primary key of an existing table, or None when there is none."""


class Engine(Protocol):
    """One database product: how its URLs look and how a session on it is opened."""

    backend: ClassVar[str]
    """SQLAlchemy's backend name for it (`sqlite`, `postgresql`)."""
    aliases: ClassVar[tuple[str, ...]]
    """Other URL schemes that mean it (`postgres`)."""
    password_variable: ClassVar[str | None]
    """The environment variable a session takes the password from when its URL has none
    (`PGPASSWORD`), so that a command line's password need not travel with the URL."""

    def normalise(self, url: sa.URL) -> sa.URL:
        """The URL with the driver batchyard uses; raises ConfigurationError if unusable."""

    def session(self, db: str, url: sa.URL, write: bool) -> contextlib.AbstractContextManager[Session]:
        """A session on `url` (`db` as given); with `write`, one transaction committed at the
        end of the block and rolled back on an exception."""

    def checkpoint(self, db: str, url: sa.URL) -> None:
        """Housekeeping after a chunk's commit, off the writers' critical path (may do nothing)."""

    # Optional: `exists(url) -> bool`, for an engine whose first connection creates the
    # database (SQLite's file), so that read-only commands can refuse one that is not there;
    # `bulk_form(data) -> pa.Table`, the columns as its bulk load takes them (`bulk_form`).


class SqlAlchemySession:
    """What the server engines' sessions share: a pooled SQLAlchemy connection for Core
    statements, its driver's cursor for plain SQL, and SQLAlchemy's inspector."""

    placeholder = "%s"
    quote = staticmethod(quote)

    def __init__(self, connection: sa.Connection):
        self.connection = connection

    def _cursor(self):
        return self.connection.connection.driver_connection.cursor()

    def execute(self, statement, rows: list[dict] | None = None) -> Rows:
        result = self.connection.execute(statement, rows) if rows else \
            self.connection.execute(statement)
        if result.returns_rows:
            return Rows(list(result.keys()), [tuple(r) for r in result], result.rowcount)
        return Rows([], [], result.rowcount)

    def sql(self, text: str, params: tuple = ()) -> Rows:
        with self._cursor() as cursor:
            cursor.execute(text, params or None)
            if cursor.description:
                return Rows([d[0] for d in cursor.description], list(cursor.fetchall()), -1)
            return Rows([], [], cursor.rowcount)

    def stream(self, statement, size: int = 10_000) -> Iterator[tuple]:
        yield from self.connection.execution_options(yield_per=size).execute(statement)

    def stream_arrow(self, statement, schema: pa.Schema, size: int = 10_000) -> Iterator[pa.Table]:
        result = self.connection.execution_options(yield_per=size).execute(statement)
        for part in result.partitions(size):
            yield pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in part],
                                       schema)

    def fetch_batches(self, text: str, params: tuple, size: int) -> tuple[list[str], Iterator[list]]:
        """A server-side cursor: the query's rows never sit in memory all at once."""
        result = self.connection.execution_options(stream_results=True, yield_per=size).exec_driver_sql(
            text, params or ())
        return list(result.keys()), (list(p) for p in result.partitions(size))

    def describe(self, table: str) -> tuple[list[str], list[str]] | None:
        inspector = sa.inspect(self.connection)
        if not inspector.has_table(table):
            return None
        columns = [c["name"] for c in inspector.get_columns(table)]
        return columns, inspector.get_pk_constraint(table).get("constrained_columns") or []


class PooledEngine:
    """An `Engine` whose sessions are connections of one pool per URL (the server engines);
    a subclass names its session class and the pool's options."""

    session_class: ClassVar[type[SqlAlchemySession]]

    def engine_options(self, url: sa.URL) -> dict[str, Any]:
        """Options of `sqlalchemy.create_engine` for the pool on `url` (beyond its size)."""
        return {}

    @contextlib.contextmanager
    def session(self, db: str, url: sa.URL, write: bool) -> Iterator[SqlAlchemySession]:
        engine = pooled_engine(url, **self.engine_options(url))
        with engine.begin() if write else engine.connect() as connection:
            yield self.session_class(connection)

    def checkpoint(self, db: str, url: sa.URL) -> None:
        pass


_POOLS: dict[tuple[sa.URL, str], sa.Engine] = {}
_POOLS_GUARD = threading.Lock()


def pooled_engine(url: sa.URL, **options: Any) -> sa.Engine:
    """One SQLAlchemy engine (and connection pool) per URL and options for the process (a
    changed setting, such as a timeout, gets a pool of its own)."""
    identity = (url, repr(sorted(options.items())))
    with _POOLS_GUARD:
        engine = _POOLS.get(identity)
        if engine is None:
            engine = _POOLS[identity] = sa.create_engine(url, pool_size=12, max_overflow=4,
                                                         pool_pre_ping=True, **options)
    return engine


def dispose_engines() -> None:
    """Close every pooled connection (before a database is dropped, or at a worker's end)."""
    with _POOLS_GUARD:
        engines = list(_POOLS.values())
    for engine in engines:
        engine.dispose()


class OnConflictSql:
    """`INSERT ... ON CONFLICT` upserts, shared by SQLite and PostgreSQL; a session class sets
    `insert` to its SQLAlchemy dialect's `insert`."""

    null_safe_differs: ClassVar[str] = "IS DISTINCT FROM"
    insert: ClassVar[Any]
    quote = staticmethod(quote)

    def upsert(self, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
        statement = self.insert(table)
        others = [c.name for c in table.columns if c.name not in keys]
        self.execute(statement.on_conflict_do_update(
            index_elements=keys, set_={name: statement.excluded[name] for name in others}), rows)

    def merge_from(self, table: str, source: str, names: list[str], key: tuple[str, ...],
                   batch_column: str, row_column: str | None = None) -> int:
        columns = ", ".join(quote(n) for n in names)
        assignments = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key)
        target = quote(table)
        condition = (f"{target}.{quote(batch_column)} {self.null_safe_differs} "
                     f"excluded.{quote(batch_column)}")
        if row_column:
            condition = (f"({condition} OR {target}.{quote(row_column)} > "
                         f"excluded.{quote(row_column)})")
        statement = (
            f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {source} WHERE true "
            f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {assignments} "
            f"WHERE {condition}"
        )
        return self.sql(statement).rowcount


def columns(names: str, kind: Any = sa.Text, **options: Any) -> list[sa.Column]:
    """Columns of one type and options, named in one space-separated string (table definitions
    stay short and readable)."""
    return [sa.Column(name, kind, **options) for name in names.split()]


def default_sql(column: sa.Column, dialect) -> str:
    """The column's server default as SQL (a quoted string or a compiled expression), or ''."""
    if column.server_default is None:
        return ""
    arg = column.server_default.arg
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    return str(arg.compile(dialect=dialect))


def add_column_sql(table: str, column: sa.Column, dialect, kind: str | None = None,
                   quote: Callable[[str], str] = quote) -> str:
    """`ALTER TABLE ... ADD COLUMN` for `column` (of type `kind`, else its own type compiled),
    with its server default."""
    kind = kind or column.type.compile(dialect=dialect)
    default = default_sql(column, dialect)
    default = f" DEFAULT {default}" if default else ""
    return f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {kind}{default}"
