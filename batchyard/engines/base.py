"""What every database engine provides: the `Session` protocol the ledger, the loaders, the ETL
database target and the stream sinks are written against, and the SQL they share.

Statements are SQLAlchemy Core where the SQL is the same everywhere; what differs between
engines (bulk loading Arrow rows, staging, upserts, DDL details) is a method of the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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

    def execute(self, statement, rows: list[dict] | None = None) -> Rows:
        """Run a SQLAlchemy Core statement, once or for each of `rows`."""

    def sql(self, text: str, params: tuple = ()) -> Rows:
        """Run one SQL string with positional parameters."""

    def stream(self, statement, size: int = 10_000) -> Iterator[tuple]:
        """The rows of a Core select, fetched `size` at a time."""

    def fetch_batches(self, text: str, params: tuple, size: int) -> tuple[list[str], Iterator[list]]:
        """The column names of a SQL query, and its rows in lists of at most `size`."""

    def ingest_into(self, name: str, data: pa.Table) -> None:
        """Append Arrow rows to an existing table in bulk (no per-row Python)."""

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        """Load `data` into a temporary staging table shaped like table `like`, emptied first;
        returns the name to select it from."""

    def merge_from(self, table: str, source: str, names: list[str], key: tuple[str, ...],
                   batch_column: str) -> int:
        """Insert the rows of `source` into `table`, updating rows whose key exists unless
        `batch_column` already holds the same batch; returns the rows written."""

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

    def normalise(self, url: sa.URL) -> sa.URL:
        """The URL with the driver batchyard uses; raises ConfigurationError if unusable."""

    def session(self, db: str, url: sa.URL, write: bool) -> contextlib.AbstractContextManager[Session]:
        """A session on `url` (`db` as given); with `write`, one transaction committed at the
        end of the block and rolled back on an exception."""

    def checkpoint(self, db: str, url: sa.URL) -> None:
        """Housekeeping after a chunk's commit, off the writers' critical path (may do nothing)."""

    # Optional: `exists(url) -> bool`, for an engine whose first connection creates the
    # database (SQLite's file), so that read-only commands can refuse one that is not there.


class OnConflictSql:
    """`INSERT ... ON CONFLICT` upserts, shared by SQLite and PostgreSQL; a session class sets
    `insert` to its SQLAlchemy dialect's `insert`."""

    null_safe_differs: ClassVar[str] = "IS DISTINCT FROM"
    insert: ClassVar[Any]

    def upsert(self, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
        statement = self.insert(table)
        others = [c.name for c in table.columns if c.name not in keys]
        self.execute(statement.on_conflict_do_update(
            index_elements=keys, set_={name: statement.excluded[name] for name in others}), rows)

    def merge_from(self, table: str, source: str, names: list[str], key: tuple[str, ...],
                   batch_column: str) -> int:
        columns = ", ".join(quote(n) for n in names)
        assignments = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key)
        statement = (
            f"INSERT INTO {quote(table)} ({columns}) SELECT {columns} FROM {source} WHERE true "
            f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {assignments} "
            f"WHERE {quote(table)}.{quote(batch_column)} {self.null_safe_differs} "
            f"excluded.{quote(batch_column)}"
        )
        return self.sql(statement).rowcount


def columns(names: str, kind: Any = sa.Text, **options: Any) -> list[sa.Column]:
    """Columns of one type and options, named in one space-separated string (table definitions
    stay short and readable)."""
    return [sa.Column(name, kind, **options) for name in names.split()]


def add_column_sql(table: str, column: sa.Column, dialect) -> str:
    """`ALTER TABLE ... ADD COLUMN` for `column`, with its server default."""
    kind = column.type.compile(dialect=dialect)
    default = ""
    if column.server_default is not None:
        arg = column.server_default.arg
        if isinstance(arg, str):
            shown = "'" + arg.replace("'", "''") + "'"
        else:
            shown = str(arg.compile(dialect=dialect))
        default = " DEFAULT " + shown
    return f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {kind}{default}"
