"""Loading validated chunks into the target table: created from the schema when missing,
upserted by primary key so that importing the same records twice leaves no duplicates.

Two lineage columns are added to every target table: `_batch_id` and `_row_number` (the source
record). They make the load idempotent within a batch: a key already written by another record
of the same batch is not overwritten, and that record is reported as an ignored duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from batchyard.chunks import BATCH, ROW
from batchyard.engines import Session
from batchyard.errors import ConfigurationError, RecordsRefused
from batchyard.identifiers import check_identifier
from batchyard.schemas.base import SchemaPlan

SQL_TYPES = {
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "float": sa.Float,
    "str": sa.Text,
    "date": sa.Date,
    "datetime": sa.DateTime,
    "timestamptz": lambda: sa.DateTime(timezone=True),
    "decimal": sa.Float,
    "json": sa.Text,
}


MYSQL = ("mysql", "mariadb")


def _sql_type(kind: str, sole_key: bool, max_length: int | None = None):
    """A single integer key is SQLite's INTEGER PRIMARY KEY (the rowid): no second index. Text
    of a known maximum length is VARCHAR on MariaDB (stored in the row, and a key can hold it)."""
    if kind == "int" and sole_key:
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    if kind == "str" and max_length and max_length <= 768:
        return sa.Text().with_variant(sa.String(max_length), *MYSQL)
    return SQL_TYPES[kind]()


def target_table(plan: SchemaPlan, name: str) -> sa.Table:
    """The table a schema loads into: its columns, key and derived columns, plus lineage. The
    key comes from the data: no column gets a generated default (no SERIAL on PostgreSQL).

    Raises ConfigurationError for a table or column name that is not a plain identifier."""
    check_identifier(name)
    metadata = sa.MetaData()
    columns = [
        sa.Column(check_identifier(c.name, "column name"),
                  _sql_type(c.kind, plan.key == (c.name,), c.max_length),
                  primary_key=c.name in plan.key, nullable=c.name not in plan.key,
                  autoincrement=False)
        for c in plan.columns
    ]
    lineage = plan.keyless  # a keyless table's rows are identified by batch and row number
    for name_, arrow_type in plan.derived.items():
        kind = "float" if pa.types.is_floating(arrow_type) else \
            "int" if pa.types.is_integer(arrow_type) else "str"
        columns.append(sa.Column(check_identifier(name_, "column name"), SQL_TYPES[kind]()))
    columns += [sa.Column(BATCH, sa.Text().with_variant(sa.String(64), *MYSQL),  # a checked id
                          primary_key=lineage, nullable=not lineage),
                sa.Column(ROW, sa.BigInteger, primary_key=lineage, nullable=not lineage,
                          autoincrement=False)]
    return sa.Table(name, metadata, *columns)


def ensure_table(session: Session, plan: SchemaPlan, name: str) -> sa.Table:
    """Create the target table if missing; refuse one that lacks a column the load writes.
    A run that loses the race to create it (runs starting together) checks the winner's."""
    table = target_table(plan, name)
    existing = session.describe(name)
    if existing is None:
        session.create(table.metadata)
        existing = session.describe(name)
    columns, keys = existing
    missing = [c.name for c in table.columns if c.name not in columns]
    if missing:
        raise ConfigurationError(
            f"table {name} exists but has no column(s) {', '.join(missing)}; "
            "use another --table or add them"
        )
    if set(keys) != set(plan.table_key):
        raise ConfigurationError(
            f"table {name} exists but its primary key is ({', '.join(keys) or 'none'}), "
            f"not ({', '.join(plan.table_key)})"
        )
    return table


def add_columns(session: Session, plan: SchemaPlan, name: str) -> list[str]:
    """Add the columns of `plan` an existing table lacks (a contract that evolved gained
    optional columns); returns their names. Key columns are never added this way."""
    table = target_table(plan, name)
    existing = session.describe(name)
    if existing is None:
        return []
    added = [c for c in table.columns if c.name not in existing[0] and not c.primary_key]
    for column in added:
        session.add_column(name, column)
    return [c.name for c in added]


def delete_batch_rows(session: Session, plan: SchemaPlan, name: str, batch_id: str) -> None:
    """Remove the rows batch `batch_id` appended to a keyless table (before it runs afresh)."""
    table = target_table(plan, name)
    session.execute(table.delete().where(table.c[BATCH] == batch_id))


@dataclass
class LoadResult:
    written: int
    duplicates: list[tuple[int, int, dict]]  # (row_number, first_row, key values)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (row_number, the database's reason)
    displaced: list[tuple[int, int, dict]] = field(default_factory=list)
    """Later records of the batch this load replaced: (their row_number, the new first row, key)."""


def stage_name(table: str) -> str:
    return check_identifier(f"_batchyard_stage_{table}"[:63], "staging table")


def _append_directly(session: Session, table: str, data: pa.Table, lock: BatchLock | None) -> bool:
    """The fast path for new keys: append straight into the table. Any conflict (a key from an
    earlier batch, or from another chunk of this one) undoes it and the upsert path takes over;
    so do refused records, which the caller leaves out before it tries again. The batch's lock
    (shared) is taken inside the savepoint, so that undoing the append releases it."""
    session.sql("SAVEPOINT batchyard_append")
    try:
        if lock is not None:
            lock(True)
        session.ingest_into(table, data)
    except Exception as exc:
        conflict = session.is_conflict(exc)
        if conflict or isinstance(exc, RecordsRefused):
            session.sql("ROLLBACK TO SAVEPOINT batchyard_append")
            session.sql("RELEASE SAVEPOINT batchyard_append")
        if not conflict:
            raise
        return False
    session.sql("RELEASE SAVEPOINT batchyard_append")
    return True


BatchLock = Callable[[bool], None]
"""Takes the batch's write lock for the transaction: shared (True) to append new keys, alone
(False) to upsert over existing ones (`ingest.batch_lock.lock_batch`)."""


def load_rows(session: Session, table: str, data: pa.Table, key: tuple[str, ...], batch_id: str,
              first_wins: BatchLock | None = None) -> LoadResult:
    """Upsert `data` by key inside the session's transaction (the ledger commits with it).

    New keys are appended in bulk straight into the table. On a conflict the rows go to a
    temporary staging table in bulk instead, and the engine's upsert moves them. A key that
    another record of this batch already wrote is left alone and reported as a duplicate, so
    re-running a chunk never double-writes. Records whose values the database itself refuses
    (`RecordsRefused`, MariaDB's strict mode) are left out and reported with its reason, and the
    others loaded. With `first_wins` (an import's chunks: the batch's lock), a key another
    record of this batch wrote from a later row is taken over by this earlier one, and that
    later record is reported as displaced: the first record in file order wins whatever order
    chunks commit in (the upsert holds the batch's lock alone, so it sees every record of the
    batch that was written). Returns the rows written, the duplicates, the refused and the
    displaced records."""
    if data.num_rows == 0:
        return LoadResult(0, [])
    data = data.append_column(BATCH, pa.repeat(pa.scalar(batch_id, pa.string()), data.num_rows))
    refused: list[tuple[int, str]] = []
    while True:
        try:
            result = _merge(session, table, data, key, batch_id, first_wins)
        except RecordsRefused as exc:
            rows = data[ROW].to_pylist()
            refused += [(rows[i], reason) for i, reason in sorted(exc.refused.items())]
            kept = pc.invert(pc.is_in(pa.array(range(data.num_rows)), pa.array(list(exc.refused))))
            data = data.filter(kept)
            if data.num_rows:
                continue
            result = LoadResult(0, [])
        result.refused = sorted(refused)
        return result


def _merge(session: Session, table: str, data: pa.Table, key: tuple[str, ...], batch_id: str,
           first_wins: BatchLock | None) -> LoadResult:
    if _append_directly(session, table, data, first_wins):
        return LoadResult(data.num_rows, [])
    if first_wins is not None:
        first_wins(False)
    source = session.stage(stage_name(table), table, data)
    displaced = []
    if first_wins is not None:
        displaced = _same_key_rows(session, source, table, key, batch_id, "t", ">", "s")
    written = session.merge_from(table, source, data.column_names, key, BATCH,
                                 ROW if first_wins is not None else None)
    duplicates = []
    if written < data.num_rows:
        duplicates = _same_key_rows(session, source, table, key, batch_id, "s", "<>", "t")
    return LoadResult(written, duplicates, displaced=displaced)


def _same_key_rows(session, source: str, table: str, key: list[str], batch_id: str, first: str,
                   compare: str, second: str) -> list[tuple[int, int, dict]]:
    """(row of `first`, row of `second`, key) for the staged rows whose key this batch already
    holds in the table at another row (`t.ROW compare s.ROW`), ordered by `first`'s row."""
    quote = session.quote
    join = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in key)
    found = session.sql(
        f"SELECT {', '.join('s.' + quote(k) for k in key)}, {first}.{quote(ROW)}, {second}.{quote(ROW)} "
        f"FROM {source} s JOIN {quote(table)} t ON {join} "
        f"WHERE t.{quote(BATCH)} = {session.placeholder} "
        f"AND t.{quote(ROW)} {compare} s.{quote(ROW)} ORDER BY {first}.{quote(ROW)}",
        (batch_id,),
    )
    return [(r[len(key)], r[len(key) + 1], dict(zip(key, r[:len(key)], strict=True))) for r in found]
