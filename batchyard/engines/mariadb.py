"""MariaDB and MySQL through SQLAlchemy and PyMySQL; Arrow rows arrive by LOAD DATA LOCAL INFILE.

Each bulk load writes the rows, with Arrow's CSV writer, to a CSV file that LOAD DATA reads as it
is: every text value quoted, NULL unquoted, no escape character. A LOCAL load cannot be stopped
half-way, so the server turns what would be errors (a key that exists, a value strict mode
refuses) into warnings; the session reads them and raises: a conflict as a unique-key violation
(the loader then stages and merges), refused values as `RecordsRefused`, naming each record.

Sessions run in READ COMMITTED, as PostgreSQL does, on UTC, in strict mode; tables are InnoDB,
utf8mb4 with a binary NO PAD collation (keys compare as exactly as on the other engines). MySQL has no
text primary keys: text columns in a key or an index become VARCHAR(255), other text LONGTEXT.
"""

from __future__ import annotations

import os
import re
import tempfile

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from batchyard.engines import register
from batchyard.engines.base import PooledEngine, SqlAlchemySession, add_column_sql, default_sql
from batchyard.errors import ConfigurationError, RecordsRefused
from batchyard.identifiers import backtick

SESSION_SETUP = (
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
    "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00', "
    "max_error_count = 65535"
)
KEY_TEXT_LENGTH = 255
"""Characters of a text column in a key or index: 4 bytes each in utf8mb4, and InnoDB keys
hold 3072 bytes, so three such columns fit in one key."""
COLLATIONS = {True: "utf8mb4_nopad_bin", False: "utf8mb4_0900_bin"}
"""Binary and NO PAD (MariaDB, MySQL 8): 'a', 'A' and 'a ' are three keys, as elsewhere."""
_DUPLICATE_COLUMN = 1060
_DUPLICATE_KEY = 1062
_LOCAL_INFILE_REFUSED = (1148, 3948, 4166)
_AT_ROW = re.compile(r"\s*\bat row (\d+)\s*$", re.IGNORECASE)
_ROWS_PER_WRITE = 50_000


_WRITTEN_AS_THEY_ARE = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
                        pa.types.is_floating, pa.types.is_decimal, pa.types.is_date)


def _load_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """One column as Arrow's CSV writer should put it for LOAD DATA: booleans as 1/0,
    timestamps in UTC without a zone, anything else not a number, a date or text as text."""
    kind = column.type
    if any(test(kind) for test in _WRITTEN_AS_THEY_ARE):
        return column
    if pa.types.is_boolean(kind):
        return pc.cast(column, pa.int8())
    if pa.types.is_timestamp(kind):
        return pc.cast(column, pa.timestamp("us"), safe=False)
    return pc.cast(column, pa.string())


def write_load_file(data: pa.Table, handle) -> None:
    """Write `data` to `handle` as lines LOAD DATA reads with `LOAD_FORMAT`, with Arrow's CSV
    writer (C++, no per-row Python): text always quoted with inner quotes doubled, so the word
    NULL unquoted is the only NULL and an empty quoted value the empty string."""
    import pyarrow.csv as pcsv

    columns = [_load_column(column) for column in data.columns]
    pcsv.write_csv(pa.table(columns, names=data.column_names), handle,
                   pcsv.WriteOptions(include_header=False, null_string="NULL", quoting_style="needed",
                                     batch_size=_ROWS_PER_WRITE))


def constant_text(column: pa.ChunkedArray) -> bool:
    """A text column with one value in every row (a chunk's batch id): LOAD DATA assigns it
    once (`SET`) instead of reading it from every line of the file."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    if len(column) < 2 or column.null_count:
        return False
    first = column[0]
    return first == column[-1] and pc.all(pc.equal(column, first)).as_py()


LOAD_FORMAT = ("CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' "
               "ESCAPED BY '' LINES TERMINATED BY '\\n'")


def refusals(warnings: list[tuple], expected: int) -> tuple[str | None, dict[int, str]]:
    """From a LOAD DATA's warnings: the first key that existed (the server's message), and the
    records whose values were refused (index in the load → the server's messages). Notes (a
    decimal rounded) are fine.

    Raises the server's first refusal as it is when a warning names no record, or when there
    were more than it listed."""
    import pymysql

    conflict, refused = None, {}
    real = [(code, message) for level, code, message in warnings if level != "Note"]
    for code, message in real:
        if code == _DUPLICATE_KEY:
            conflict = conflict or message
            continue
        found = _AT_ROW.search(message)
        if found is None or len(warnings) < expected:
            raise pymysql.err.DataError(code, message)
        index = int(found.group(1)) - 1
        text = f"refused by the database: {_AT_ROW.sub('', message)}"
        refused[index] = f"{refused[index]}; {text}" if index in refused else text
    return conflict, refused


class MariadbSession(SqlAlchemySession):
    """A SQLAlchemy connection (PyMySQL) with the `Session` interface."""

    dialect_name = "mysql"
    quote = staticmethod(backtick)

    def _load(self, table: str, data: pa.Table) -> None:
        if not data.num_rows:
            return
        import pymysql

        constants = {name: data[name][0].as_py() for name in data.column_names
                     if constant_text(data[name])}
        if len(constants) == data.num_columns:  # the file's lines are its rows: keep one column
            constants.pop(data.column_names[0])
        data = data.drop_columns(list(constants))
        handle = tempfile.NamedTemporaryFile(prefix="batchyard-", suffix=".csv", delete=False)
        try:
            with handle:
                write_load_file(data, handle)
            names = ", ".join(backtick(n) for n in data.column_names)
            assign = (" SET " + ", ".join(f"{backtick(n)} = %s" for n in constants)) if constants else ""
            with self._cursor() as cursor:
                try:
                    cursor.execute(f"LOAD DATA LOCAL INFILE %s INTO TABLE {backtick(table)} "
                                   f"{LOAD_FORMAT} ({names}){assign}", (handle.name, *constants.values()))
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] in _LOCAL_INFILE_REFUSED:
                        raise ConfigurationError(
                            f"the MariaDB server refuses LOAD DATA LOCAL INFILE ({exc.args[1]}): "
                            "SET GLOBAL local_infile = 1") from None
                    raise
                expected = cursor.warning_count
                warnings = []
                if expected:
                    cursor.execute("SHOW WARNINGS")
                    warnings = list(cursor.fetchall())
        finally:
            os.unlink(handle.name)
        conflict, refused = refusals(warnings, expected)
        if conflict:
            raise pymysql.err.IntegrityError(_DUPLICATE_KEY, f"loading {table}: {_AT_ROW.sub('', conflict)}")
        if refused:
            raise RecordsRefused(table, refused)

    def ingest_into(self, name: str, data: pa.Table) -> None:
        self._load(name, data)

    def stage(self, stage: str, like: str, data: pa.Table) -> str:
        """A temporary table (no implicit commit), made afresh: the pooled connection may hold
        one from an earlier load."""
        self.sql(f"DROP TEMPORARY TABLE IF EXISTS {backtick(stage)}")
        self.sql(f"CREATE TEMPORARY TABLE {backtick(stage)} LIKE {backtick(like)}")
        self._load(stage, data)
        return backtick(stage)

    def merge_from(self, table: str, source: str, names: list[str], key: tuple[str, ...],
                   batch_column: str, row_column: str | None = None) -> int:
        """`INSERT ... ON DUPLICATE KEY UPDATE`; each column keeps its value when the row holds
        the same batch (`<=>`, null-safe), and the batch column is assigned last, since MySQL
        assigns left to right. SQLAlchemy connects with FOUND_ROWS, so the affected rows are 1
        per insert or untouched row and 2 per update: less one per existing key (counted in a
        variable as the statement meets them), that is the rows written."""
        target, batch = backtick(table), backtick(batch_column)
        same = f"{target}.{batch} <=> VALUES({batch})"
        if row_column:  # the row number is assigned after the values that compare it
            row = backtick(row_column)
            same = f"({same} AND {target}.{row} <= VALUES({row}))"
        ordered = sorted((n for n in names if n not in key and n != batch_column),
                         key=lambda n: n == row_column)
        updates = [f"{target}.{backtick(n)} = IF({same}, {target}.{backtick(n)}, VALUES({backtick(n)}))"
                   for n in ordered]
        updates.append(f"{target}.{batch} = IF((@batchyard_existing := @batchyard_existing + 1) > 0, "
                       f"VALUES({batch}), {target}.{batch})")
        columns = ", ".join(backtick(n) for n in names)
        with self._cursor() as cursor:
            cursor.execute("SET @batchyard_existing = 0")
            cursor.execute(f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {source} "
                           f"ON DUPLICATE KEY UPDATE {', '.join(updates)}")
            affected = cursor.rowcount
            cursor.execute("SELECT @batchyard_existing")
            return affected - int(cursor.fetchone()[0])

    def upsert(self, table: sa.Table, rows: list[dict], keys: list[str]) -> None:
        from sqlalchemy.dialects.mysql import insert

        statement = insert(table)
        others = {c.name: statement.inserted[c.name] for c in table.columns if c.name not in keys}
        self.execute(statement.on_duplicate_key_update(others) if others else statement.prefix_with("IGNORE"),
                     rows)

    @staticmethod
    def is_conflict(exc: Exception) -> bool:
        import pymysql

        original = getattr(exc, "orig", exc)
        return isinstance(original, pymysql.err.IntegrityError) and original.args[:1] == (_DUPLICATE_KEY,)

    def _type(self, column: sa.Column, keyed: bool) -> str:
        dialect = self.connection.dialect
        kind = column.type.dialect_impl(dialect)
        if isinstance(kind, sa.String) and not kind.length and not isinstance(kind, sa.Enum):
            return f"VARCHAR({KEY_TEXT_LENGTH})" if keyed else "LONGTEXT"
        compiled = kind.compile(dialect=dialect)
        return {"FLOAT": "DOUBLE", "DATETIME": "DATETIME(6)"}.get(compiled, compiled)

    def create_table_sql(self, table: sa.Table) -> str:
        """CREATE TABLE IF NOT EXISTS with MySQL's types, the key and the indexes inline."""
        keyed = {c.name for c in table.primary_key.columns}
        keyed |= {c.name for index in table.indexes for c in index.columns}
        parts = []
        for column in table.columns:
            kind = self._type(column, column.name in keyed)
            spec = f"{backtick(column.name)} {kind}" + ("" if column.nullable else " NOT NULL")
            if column.autoincrement is True:
                spec += " AUTO_INCREMENT"
            default = default_sql(column, self.connection.dialect)
            if default:
                spec += f" DEFAULT ({default})" if kind == "LONGTEXT" else f" DEFAULT {default}"
            parts.append(spec)
        if table.primary_key.columns:
            parts.append(f"PRIMARY KEY ({', '.join(backtick(c.name) for c in table.primary_key.columns)})")
        for index in sorted(table.indexes, key=lambda i: i.name):
            names = ", ".join(backtick(c.name) for c in index.columns)
            parts.append(f"{'UNIQUE ' if index.unique else ''}INDEX {backtick(index.name)} ({names})")
        collation = COLLATIONS[bool(self.connection.dialect.is_mariadb)]
        return (f"CREATE TABLE IF NOT EXISTS {backtick(table.name)} ({', '.join(parts)}) "
                f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}")

    def create(self, metadata: sa.MetaData) -> None:
        for table in metadata.sorted_tables:
            self.sql(self.create_table_sql(table))

    def add_column(self, table: str, column: sa.Column) -> None:
        """A column another run added meanwhile (both found it missing) is there: done."""
        import pymysql

        try:
            self.sql(add_column_sql(table, column, self.connection.dialect,
                                    kind=self._type(column, False), quote=backtick))
        except pymysql.err.OperationalError as exc:
            if exc.args[:1] != (_DUPLICATE_COLUMN,):
                raise


@register
class MariadbEngine(PooledEngine):
    backend = "mariadb"
    aliases = ("mysql",)
    password_variable = "MYSQL_PWD"  # as the mysql client reads it; engine_options passes it on
    session_class = MariadbSession

    def normalise(self, url: sa.URL) -> sa.URL:
        """Any MariaDB or MySQL URL uses PyMySQL, which batchyard ships (its LOAD DATA LOCAL
        INFILE is the bulk path)."""
        if not url.database:
            raise ConfigurationError(f"no database in {url.render_as_string(hide_password=True)}: "
                                     "use mariadb://user@host/DATABASE")
        return url.set(drivername=f"{url.get_backend_name()}+pymysql")

    def engine_options(self, url: sa.URL) -> dict:
        """A URL without a password takes MYSQL_PWD (where the command line puts one)."""
        connect = {"local_infile": True, "charset": "utf8mb4", "connect_timeout": 10,
                   "init_command": SESSION_SETUP}
        if url.password is None and os.environ.get("MYSQL_PWD"):
            connect["password"] = os.environ["MYSQL_PWD"]
        return {"isolation_level": "READ COMMITTED", "connect_args": connect}
