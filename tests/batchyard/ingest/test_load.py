"""Upserts into the target table by key, with lineage, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from batchyard.chunks import ROW
from batchyard.engines import session
from batchyard.errors import ConfigurationError
from batchyard.ingest.load import ensure_table, load_rows
from batchyard.schemas import load_schema
from tests.helpers import rows

PLAN = load_schema("users")


def _users(ids: list[int], names: list[str], first_row: int = 1) -> pa.Table:
    n = len(ids)
    return pa.table({
        "id": pa.array(ids, pa.int64()), "email": [f"u{i}@example.com" for i in ids],
        "name": names, "age": pa.nulls(n, pa.int64()), "country": ["DE"] * n,
        "signup_date": [dt.date(2020, 1, 1)] * n, "balance": [0.0] * n,
        ROW: pa.array(range(first_row, first_row + n), pa.int64()),
    })


def _load(db: str, data: pa.Table, batch: str):
    with session(db, write=True) as current:
        ensure_table(current, PLAN, "users")
        return load_rows(current, "users", data, PLAN.key, batch)


@pytest.mark.parametrize("loads, expected_table, expected_duplicates", [
    ([("b1", 1, [1, 2], ["a", "b"])], [(1, "a", "b1"), (2, "b", "b1")], [[]]),
    # a later batch replaces the rows it shares with an earlier one
    ([("b1", 1, [1, 2], ["a", "b"]), ("b2", 1, [2, 3], ["B", "c"])],
     [(1, "a", "b1"), (2, "B", "b2"), (3, "c", "b2")], [[], []]),
    # a key another chunk of the same batch wrote is left alone and reported: rows 3 and 4 are
    # the second chunk, and row 3 repeats the key row 2 loaded
    ([("b1", 1, [1, 2], ["a", "b"]), ("b1", 3, [2, 3], ["B", "c"])],
     [(1, "a", "b1"), (2, "b", "b1"), (3, "c", "b1")], [[], [(3, 2, {"id": 2})]]),
])
def test_upsert_by_key(db_url, loads, expected_table, expected_duplicates):
    found = [_load(db_url, _users(ids, names, first), batch).duplicates
             for batch, first, ids, names in loads]
    assert rows(db_url, "select id, name, _batch_id from users order by id") == expected_table
    assert found == expected_duplicates


def test_an_existing_table_must_have_the_columns_and_key(db_url):
    with session(db_url, write=True) as current:
        current.sql("CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT)")
    with pytest.raises(ConfigurationError, match="table users exists but has no column"):
        _load(db_url, _users([1], ["a"]), "b1")
    with session(db_url, write=True) as current:
        current.sql("DROP TABLE users")
        current.sql("CREATE TABLE users (id BIGINT, email VARCHAR(200), name TEXT, age BIGINT, country TEXT, "
                    "signup_date DATE, balance FLOAT, _batch_id TEXT, _row_number BIGINT, "
                    "PRIMARY KEY (email))")
    with pytest.raises(ConfigurationError, match=r"its primary key is \(email\), not \(id\)"):
        _load(db_url, _users([1], ["a"]), "b1")


def test_nothing_to_load_writes_nothing(db_url):
    assert _load(db_url, _users([], []), "b1").written == 0
    assert rows(db_url, "select count(*) from users") == [(0,)]
