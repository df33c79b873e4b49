"""Loading validated chunks into the target table: created from the schema when missing,
upserted by primary key so that importing the same records twice leaves no duplicates.

Two lineage columns are added to every target table: `_batch_id` and `_row_number` (the source
record). They make the load idempotent within a batch: a key already written by another record
of the same batch is not overwritten, and that record is reported as an ignored duplicate.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import sqlalchemy as sa

from batchyard.errors import ConfigurationError
from batchyard.identifiers import check_identifier, quote
from batchyard.schemas.base import SchemaPlan
from batchyard.transform import ROW

BATCH = "_batch_id"
SQL_TYPES = {
    "bool": sa.Boolean,
    "int": sa.BigInteger,
    "float": sa.Float,
    "str": sa.Text,
    "date": sa.Date,
    "datetime": sa.DateTime,
    "decimal": sa.Float,
    "json": sa.Text,
}


def target_table(plan: SchemaPlan, name: str) -> sa.Table:
    check_identifier(name)
    metadata = sa.MetaData()
    columns = [
        sa.Column(check_identifier(c.name, "column name"), SQL_TYPES[c.kind](),
                  primary_key=c.name in plan.key, nullable=c.name not in plan.key)
        for c in plan.columns
    ]
    for name_, arrow_type in plan.derived.items():
        kind = "float" if pa.types.is_floating(arrow_type) else \
            "int" if pa.types.is_integer(arrow_type) else "str"
        columns.append(sa.Column(check_identifier(name_, "column name"), SQL_TYPES[kind]()))
    columns += [sa.Column(BATCH, sa.Text), sa.Column(ROW, sa.BigInteger)]
    return sa.Table(name, metadata, *columns)


def ensure_table(engine: sa.Engine, plan: SchemaPlan, name: str) -> sa.Table:
    """Create the target table if missing; refuse one that lacks a column the load writes."""
    table = target_table(plan, name)
    inspector = sa.inspect(engine)
    if not inspector.has_table(name):
        table.metadata.create_all(engine)
        return table
    existing = {c["name"] for c in inspector.get_columns(name)}
    missing = [c.name for c in table.columns if c.name not in existing]
    if missing:
        raise ConfigurationError(
            f"table {name} exists but has no column(s) {', '.join(missing)}; "
            "use another --table or add them"
        )
    keys = inspector.get_pk_constraint(name).get("constrained_columns") or []
    unique = [set(u["column_names"]) for u in inspector.get_unique_constraints(name)]
    if set(keys) != set(plan.key) and set(plan.key) not in unique:
        raise ConfigurationError(
            f"table {name} exists but its primary key is ({', '.join(keys) or 'none'}), "
            f"not ({', '.join(plan.key)})"
        )
    return table


@dataclass
class LoadResult:
    written: int
    duplicates: list[tuple[int, int, dict]]  # (row_number, first_row, key values)


def _sqlite_columns(table: pa.Table) -> list[list]:
    """Python values in the shapes sqlite3 stores natively (dates as ISO text, bools as ints)."""
    columns = []
    for column in table.columns:
        if pa.types.is_date(column.type) or pa.types.is_timestamp(column.type):
            column = pc.cast(column, pa.string())
        elif pa.types.is_boolean(column.type):
            column = pc.cast(column, pa.int8())
        columns.append(column.to_pylist())
    return columns


def _update_clause(names: list[str], key: tuple[str, ...], table: str) -> str:
    assignments = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key)
    return (
        f"ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {assignments} "
        f"WHERE {quote(table)}.{quote(BATCH)} IS DISTINCT FROM excluded.{quote(BATCH)}"
    )


def _find_duplicates(cursor, table: str, key: tuple[str, ...], data: pa.Table, batch_id: str,
                     placeholder: str) -> list[tuple[int, int, dict]]:
    """Records of this chunk whose key another record of the same batch wrote first."""
    mine = {tuple(r[k] for k in key): r[ROW] for r in data.select([*key, ROW]).to_pylist()}
    found = []
    keys = list(mine)
    key_sql = ", ".join(quote(k) for k in key)
    for start in range(0, len(keys), 500):
        part = keys[start:start + 500]
        if len(key) == 1:
            condition = f"{quote(key[0])} IN ({', '.join([placeholder] * len(part))})"
            params = [k[0] for k in part]
        else:
            one = "(" + " AND ".join(f"{quote(k)} = {placeholder}" for k in key) + ")"
            condition = " OR ".join([one] * len(part))
            params = [v for k in part for v in k]
        cursor.execute(
            f"SELECT {key_sql}, {quote(ROW)} FROM {quote(table)} "
            f"WHERE {quote(BATCH)} = {placeholder} AND ({condition})",
            [batch_id, *params],
        )
        for *values, first_row in cursor.fetchall():
            values = tuple(values)
            if values in mine and mine[values] != first_row:
                found.append((mine[values], first_row, dict(zip(key, values, strict=True))))
    return found


def load_sqlite(dbapi, table: str, data: pa.Table, key: tuple[str, ...], batch_id: str,
                ) -> LoadResult:
    names = [*data.column_names, BATCH]
    columns = [*_sqlite_columns(data), [batch_id] * data.num_rows]
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES ({', '.join('?' * len(names))}) {_update_clause(names, key, table)}"
    ).replace("IS DISTINCT FROM", "IS NOT")
    cursor = dbapi.cursor()
    cursor.executemany(sql, zip(*columns, strict=True))
    written = cursor.rowcount
    duplicates = []
    if written < data.num_rows:
        duplicates = _find_duplicates(cursor, table, key, data, batch_id, "?")
    cursor.close()
    return LoadResult(written, duplicates)


def load_postgres(dbapi, table: str, data: pa.Table, key: tuple[str, ...], batch_id: str,
                  ) -> LoadResult:
    """COPY the chunk into a temporary table, then upsert from it in one statement."""
    data = data.append_column(BATCH, pa.array([batch_id] * data.num_rows, pa.string()))
    names = ", ".join(quote(n) for n in data.column_names)
    buffer = io.BytesIO()
    pcsv.write_csv(data, buffer, write_options=pcsv.WriteOptions(include_header=False))
    with dbapi.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS _batchyard_stage (LIKE {quote(table)}) "
            "ON COMMIT DELETE ROWS"
        )
        cursor.execute("TRUNCATE _batchyard_stage")
        with cursor.copy(f"COPY _batchyard_stage ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(buffer.getbuffer())
        cursor.execute(
            f"INSERT INTO {quote(table)} AS {quote(table)} ({names}) "
            f"SELECT {names} FROM _batchyard_stage "
            f"{_update_clause(data.column_names, key, table)}"
        )
        written = cursor.rowcount
        duplicates = []
        if written < data.num_rows:
            duplicates = _find_duplicates(cursor, table, key, data, batch_id, "%s")
    return LoadResult(written, duplicates)


def load_rows(connection: sa.Connection, table: str, data: pa.Table, key: tuple[str, ...],
              batch_id: str) -> LoadResult:
    """Upsert `data` inside the caller's transaction (so the ledger commits with it)."""
    if data.num_rows == 0:
        return LoadResult(0, [])
    dbapi = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        return load_sqlite(dbapi, table, data, key, batch_id)
    return load_postgres(dbapi, table, data, key, batch_id)
