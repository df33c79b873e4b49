"""What only MariaDB needs: the LOAD DATA file format, MySQL's DDL, records the server refuses
under strict mode, and which of its errors are transient. Real MariaDB, a database per test."""

from __future__ import annotations

import datetime as dt
import math
import threading

import pyarrow as pa
import pytest
import sqlalchemy as sa

from batchyard.engines import session
from batchyard.errors import TIMEOUT_ERROR, VALIDATION_ERROR, RecordsRefused, error_code, is_retryable
from batchyard.ingest.load import ensure_table, load_rows
from batchyard.schemas import load_schema

TRICKY = ['plain', '', None, 'NULL', '"', '""', ',', 'a,"b",c', 'line\nbreak', 'cr\r\nlf',
          'back\\slash\\', '\\N', 'tab\there', ' spaced ', 'emoji 🚀 ünïcode', '"\n,', 'end"']


def _table(db: str) -> None:
    metadata = sa.MetaData()
    sa.Table("odd", metadata, sa.Column("id", sa.BigInteger, primary_key=True),
             sa.Column("text", sa.Text), sa.Column("number", sa.Float), sa.Column("flag", sa.Boolean),
             sa.Column("day", sa.Date), sa.Column("moment", sa.DateTime(timezone=True)))
    with session(db, write=True) as current:
        current.create(metadata)


def test_values_of_every_kind_survive_the_load_file(mariadb_url):
    _table(mariadb_url)
    n = len(TRICKY)
    data = pa.table({
        "id": pa.array(range(1, n + 1), pa.int64()),
        "text": pa.array(TRICKY, pa.string()),
        "number": pa.array([1.5, -0.0, None, 1e300, 1e-300, 0.1] + [float(i) for i in range(n - 6)]),
        "flag": pa.array([True, False, None] + [True] * (n - 3)),
        "day": pa.array([dt.date(2020, 2, 29), None] + [dt.date(1970, 1, 1)] * (n - 2)),
        "moment": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC), None]
                           + [dt.datetime(2000, 1, 1, tzinfo=dt.UTC)] * (n - 2), pa.timestamp("us", "UTC")),
    })
    with session(mariadb_url, write=True) as current:
        current.ingest_into("odd", data)
    with session(mariadb_url) as current:
        got = current.sql("SELECT text, number, flag, day, moment FROM odd ORDER BY id").rows
    assert [r[0] for r in got] == TRICKY
    assert [r[1] for r in got[:6]] == [1.5, -0.0, None, 1e300, 1e-300, 0.1]
    assert [r[2] for r in got[:3]] == [1, 0, None]
    assert [r[3] for r in got[:2]] == [dt.date(2020, 2, 29), None]
    assert [r[4] for r in got[:2]] == [dt.datetime(2026, 1, 2, 3, 4, 5, 678901), None]


def test_ddl_uses_mysql_types_and_keys_compare_exactly(mariadb_url):
    metadata = sa.MetaData()
    sa.Table("keyed", metadata, sa.Column("code", sa.Text, primary_key=True),
             sa.Column("label", sa.Text), sa.Column("tag", sa.Text, index=True),
             sa.Column("ok", sa.Boolean, nullable=False, server_default=sa.false()))
    with session(mariadb_url, write=True) as current:
        current.create(metadata)
        current.create(metadata)
        current.add_column("keyed", sa.Column("note", sa.Text, server_default="n/a"))
        current.ingest_into("keyed", pa.table({"code": ["a", "A", "a "], "label": ["x", "y", "z"],
                                               "tag": ["t", "t", "t"]}))
    with session(mariadb_url) as current:
        columns = current.sql(
            "SELECT column_name, column_type, collation_name, column_default FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'keyed' ORDER BY ordinal_position").rows
        indexes = current.sql("SELECT index_name, column_name FROM information_schema.statistics "
                              "WHERE table_schema = DATABASE() AND table_name = 'keyed' ORDER BY 1").rows
        stored = current.sql("SELECT code, ok, note FROM keyed ORDER BY code").rows
        assert current.describe("keyed") == (["code", "label", "tag", "ok", "note"], ["code"])
    assert columns == [("code", "varchar(255)", "utf8mb4_nopad_bin", None),
                       ("label", "longtext", "utf8mb4_nopad_bin", "NULL"),
                       ("tag", "varchar(255)", "utf8mb4_nopad_bin", "NULL"),
                       ("ok", "tinyint(1)", None, "0"),
                       ("note", "longtext", "utf8mb4_nopad_bin", "'n/a'")]
    assert indexes == [("ix_keyed_tag", "tag"), ("PRIMARY", "code")]
    assert stored == [("A", 0, "n/a"), ("a", 0, "n/a"), ("a ", 0, "n/a")]


def _users(ids: list[int], balances: list[float]) -> pa.Table:
    n = len(ids)
    return pa.table({
        "id": pa.array(ids, pa.int64()), "email": [f"u{i}@x.org" for i in ids], "name": ["N"] * n,
        "age": pa.array([30] * n, pa.int64()), "country": ["DE"] * n,
        "signup_date": pa.array([dt.date(2020, 1, 1)] * n), "balance": pa.array(balances, pa.float64()),
        "_row_number": pa.array([i + 1 for i in ids], pa.int64()),
    })


def test_refused_values_are_left_out_one_by_one_and_the_rest_loads(mariadb_url):
    plan = load_schema("users")
    with session(mariadb_url, write=True) as current:
        ensure_table(current, plan, "users")
        first = load_rows(current, "users", _users([1, 2, 3, 4], [1.0, math.inf, 3.0, math.nan]), plan.key, "b1")
    assert (first.written, first.duplicates) == (2, [])
    assert [row for row, _ in first.refused] == [3, 5]
    assert first.refused[0][1].startswith("refused by the database: ")
    assert "`users`.`balance`" in first.refused[0][1] and "at row" not in first.refused[0][1]
    with session(mariadb_url, write=True) as current:  # existing keys: the staged merge path
        again = load_rows(current, "users", _users([1, 3, 5], [-math.inf, 30.0, 50.0]), plan.key, "b2")
    assert (again.written, [row for row, _ in again.refused]) == (2, [2])
    with session(mariadb_url) as current:
        assert current.sql("SELECT id, balance, _batch_id FROM users ORDER BY id").rows == [
            (1, 1.0, "b1"), (3, 30.0, "b2"), (5, 50.0, "b2")]
    with pytest.raises(RecordsRefused, match=r"^odd: 1 record\(s\) refused, the first \(record 1 of the load\)"), \
            session(mariadb_url, write=True) as current:
        _table(mariadb_url)
        current.ingest_into("odd", pa.table({"id": pa.array([1], pa.int64()), "number": [math.inf]}))


def test_data_errors_are_never_retried_and_transient_ones_are(mariadb_url):
    import pymysql

    _table(mariadb_url)
    with pytest.raises(sa.exc.DBAPIError) as refused, session(mariadb_url, write=True) as current:
        current.execute(sa.text("INSERT INTO odd (id, day) VALUES (1, 'not a day')"))
    assert not is_retryable(refused.value) and error_code(refused.value) == VALIDATION_ERROR
    with pytest.raises(pymysql.err.DataError) as too_long, session(mariadb_url, write=True) as current:
        current.sql("CREATE TABLE short (s VARCHAR(2))")
        current.sql("INSERT INTO short VALUES (%s)", ("abc",))
    assert not is_retryable(too_long.value)

    with session(mariadb_url, write=True) as current:
        current.sql("INSERT INTO odd (id) VALUES (1)")
    held, release = threading.Event(), threading.Event()

    def hold_the_row():
        with session(mariadb_url, write=True) as current:
            current.sql("UPDATE odd SET text = 'mine' WHERE id = 1")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    held.wait(30)
    try:
        with pytest.raises(pymysql.err.OperationalError) as waited, session(mariadb_url, write=True) as current:
            current.sql("SET SESSION innodb_lock_wait_timeout = 1")
            current.sql("UPDATE odd SET text = 'theirs' WHERE id = 1")
    finally:
        release.set()
        holder.join(30)
    assert waited.value.args[0] == 1205
    assert is_retryable(waited.value) and error_code(waited.value) == TIMEOUT_ERROR

    with pytest.raises(Exception) as lost, session(mariadb_url, write=True) as current:
        (own,) = current.sql("SELECT CONNECTION_ID()").rows[0]
        with session(mariadb_url) as other:
            other.sql(f"KILL CONNECTION {int(own)}")
        current.sql("SELECT 1")
    assert is_retryable(lost.value)
    with session(mariadb_url) as current:  # the pool replaced the killed connection
        assert current.sql("SELECT count(*) FROM odd").rows == [(1,)]


def test_mysql_urls_and_other_drivers_reach_the_same_engine(mariadb_url):
    from batchyard.engines import normalise_url

    for scheme in ("mysql://", "mysql+mysqldb://", "mariadb+mariadbconnector://"):
        url = mariadb_url.replace("mariadb+pymysql://", scheme)
        assert normalise_url(url).drivername.endswith("+pymysql")
        with session(url) as current:
            assert current.sql("SELECT 1 + %s", (1,)).rows == [(2,)]


def test_text_the_same_in_every_row_is_assigned_once_and_every_row_still_loads(mariadb_url):
    import pyarrow as pa

    from batchyard.engines import session

    with session(mariadb_url, write=True) as connection:
        connection.sql("CREATE TABLE same (a VARCHAR(10), b VARCHAR(10), n INT)")
        connection.sql("CREATE TABLE only_text (a VARCHAR(10), b VARCHAR(10))")
        connection.ingest_into("same", pa.table({"a": ["x", "x", "x"], "b": ["p", "q", "p"], "n": [1, 2, 3]}))
        connection.ingest_into("only_text", pa.table({"a": ["x", "x"], "b": ["y", "y"]}))
    with session(mariadb_url) as connection:
        assert connection.sql("SELECT a, b, n FROM same ORDER BY n").rows == [
            ("x", "p", 1), ("x", "q", 2), ("x", "p", 3)]
        assert connection.sql("SELECT a, b FROM only_text").rows == [("x", "y"), ("x", "y")]
