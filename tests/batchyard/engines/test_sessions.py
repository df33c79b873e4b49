"""Every engine through the same `Session` suite: what the ledger, loaders, ETL and stream
sinks rely on. A new engine module passes this before anything else uses it."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
import sqlalchemy as sa

from batchyard.engines import check_connection, engine_names, normalise_url, session
from batchyard.errors import ConfigurationError

METADATA = sa.MetaData()
ITEMS = sa.Table(
    "items", METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("day", sa.Date),
    sa.Column("batch", sa.Text),
    sa.Index("ix_items_name", "name"),
)


def _create(db: str) -> None:
    with session(db, write=True) as current:
        current.create(METADATA)
        current.create(METADATA)  # only what is missing


def _items(db: str) -> list[tuple]:
    with session(db) as current:
        return [tuple(r) for r in current.sql("SELECT id, name, batch FROM items ORDER BY id").rows]


def test_the_engines_batchyard_loads_into():
    assert engine_names() == ["mariadb", "postgresql", "sqlite"]


@pytest.mark.parametrize("url, message", [
    ("mssql://u@h/d", "unsupported database .mssql. in mssql://u@h/d: use mariadb:// or postgresql:// or sqlite://"),
    ("mysql://u@h", "no database in mysql://u@h"),
    ("sqlite://", "in-memory SQLite is not supported"),
    ("::nonsense", "not a database URL"),
])
def test_urls_that_are_refused(url, message):
    with pytest.raises(ConfigurationError, match=message):
        normalise_url(url)


def test_create_describe_and_add_a_column(db_url):
    _create(db_url)
    with session(db_url, write=True) as current:
        assert current.describe("items") == (["id", "name", "day", "batch"], ["id"])
        assert current.describe("nothing_here") is None
        current.add_column("items", sa.Column("note", sa.Text, server_default="x"))
        assert current.describe("items")[0][-1] == "note"


def test_core_statements_streams_and_fetched_batches(db_url):
    _create(db_url)
    with session(db_url, write=True) as current:
        current.execute(ITEMS.insert(), [{"id": i, "name": f"n{i}", "day": dt.date(2020, 1, i),
                                          "batch": "b"} for i in range(1, 6)])
        assert current.execute(sa.select(sa.func.count()).select_from(ITEMS)).scalar_one() == 5
        assert current.execute(ITEMS.update().where(ITEMS.c.id > 3).values(name="late")).rowcount == 2
    with session(db_url) as current:
        assert [r[0] for r in current.stream(sa.select(ITEMS.c.id).order_by(ITEMS.c.id), 2)] == [1, 2, 3, 4, 5]
        columns, batches = current.fetch_batches(
            f"SELECT id, name FROM items WHERE id > {current.placeholder} ORDER BY id", (1,), 3)
        assert columns == ["id", "name"]
        assert [[tuple(r) for r in b] for b in batches] == [[(2, "n2"), (3, "n3"), (4, "late")], [(5, "late")]]
        schema = pa.schema([("key", pa.int64()), ("label", pa.string())])
        tables = list(current.stream_arrow(sa.select(ITEMS.c.id, ITEMS.c.name).where(ITEMS.c.id > 1)
                                           .order_by(ITEMS.c.id), schema, 3))
        assert [t.num_rows for t in tables] == [3, 1]
        assert all(t.schema == schema for t in tables)
        assert pa.concat_tables(tables).to_pylist() == [
            {"key": 2, "label": "n2"}, {"key": 3, "label": "n3"}, {"key": 4, "label": "late"},
            {"key": 5, "label": "late"}]
        assert list(current.stream_arrow(sa.select(ITEMS.c.id, ITEMS.c.name).where(ITEMS.c.id > 9),
                                         schema)) == []


def test_bulk_ingest_stage_and_merge(db_url):
    _create(db_url)
    first = pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["a", "b"],
                      "day": [dt.date(2020, 1, 1)] * 2, "batch": ["b1", "b1"]})
    with session(db_url, write=True) as current:
        current.ingest_into("items", first)
    again = pa.table({"id": pa.array([2, 3], pa.int64()), "name": ["B", "c"],
                      "day": [dt.date(2020, 1, 2)] * 2, "batch": ["b2", "b2"]})
    with pytest.raises(Exception) as caught, session(db_url, write=True) as current:
        current.ingest_into("items", again)
    with session(db_url) as current:
        assert current.is_conflict(caught.value)
    with session(db_url, write=True) as current:
        source = current.stage("stage_items", "items", again)
        assert current.merge_from("items", source, again.column_names, ("id",), "batch") == 2
    assert _items(db_url) == [(1, "a", "b1"), (2, "B", "b2"), (3, "c", "b2")]
    with session(db_url, write=True) as current:  # the same batch again changes nothing
        source = current.stage("stage_items", "items", again.set_column(1, "name", pa.array(["x", "y"])))
        assert current.merge_from("items", source, again.column_names, ("id",), "batch") == 0
    assert _items(db_url) == [(1, "a", "b1"), (2, "B", "b2"), (3, "c", "b2")]


def test_upsert_replaces_the_other_columns(db_url):
    _create(db_url)
    with session(db_url, write=True) as current:
        current.upsert(ITEMS, [{"id": 1, "name": "a", "day": None, "batch": "b1"}], ["id"])
        current.upsert(ITEMS, [{"id": 1, "name": "A", "day": None, "batch": "b2"},
                               {"id": 2, "name": "b", "day": None, "batch": "b2"}], ["id"])
    assert _items(db_url) == [(1, "A", "b2"), (2, "b", "b2")]


def test_a_write_session_rolls_back_on_an_exception(db_url):
    _create(db_url)
    with pytest.raises(RuntimeError), session(db_url, write=True) as current:
        current.execute(ITEMS.insert().values(id=1, name="gone"))
        raise RuntimeError("undo")
    assert _items(db_url) == []


def test_an_unreachable_database_is_one_line(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        check_connection("postgresql://nobody:secret@127.0.0.1:1/none")
    assert str(caught.value).startswith("cannot connect to postgresql+psycopg://nobody:***@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError, match="no directory"):
        check_connection(f"sqlite:///{tmp_path}/missing/dir/x.db")
