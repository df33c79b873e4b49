"""Extractors against real files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchyard.chunks import read_ipc
from batchyard.engines import session
from batchyard.etl.extract import (
    Cursor,
    ExtractError,
    _next_link,
    _retry_after,
    extract_api,
    extract_database,
    extract_file,
    spool,
)
from batchyard.etl.spec import ApiSource, DatabaseSource, FileSource
from tests.batchyard.etl.api_server import TOKEN, ApiServer, item


def _ids(batches) -> list[list[int]]:
    return [b.column("id").to_pylist() for b in batches]


@pytest.fixture
def api():
    with ApiServer(items=25) as server:
        yield server


@pytest.mark.parametrize("path, pagination, records_path", [
    ("/pages", {"style": "page", "page_size": 10}, "data"),
    ("/offset", {"style": "offset", "page_size": 10}, None),
    ("/cursor?limit=10", {"style": "cursor", "cursor_path": "meta.next"}, "results"),
    ("/link?limit=10", {"style": "link"}, None),
])
def test_api_pagination_reads_every_record_once(api, path, pagination, records_path):
    source = ApiSource(id="api", url=api.url + path, pagination=pagination, records_path=records_path)
    batches = list(extract_api(source, 7, auth=TOKEN, sleep=lambda s: None))
    assert _ids(batches) == [list(range(1, 8)), list(range(8, 15)), list(range(15, 22)), [22, 23, 24, 25]]
    assert batches[0].to_pylist()[0] == {"id": 1, "name": "item 1", "price": 1.5, "tags": '{"even": false}'}


def test_api_retries_503_and_429_honouring_retry_after(api):
    api.fail("/pages?page=2&limit=10", 503, 503)
    api.fail("/pages?page=3&limit=10", 429)
    slept = []
    source = ApiSource(id="api", url=api.url + "/pages", records_path="data", backoff=0.5,
                       pagination={"style": "page", "page_size": 10})
    rows = sum(b.num_rows for b in extract_api(source, 100, auth=TOKEN, sleep=slept.append))
    assert rows == 25
    assert slept == [0.5, 1.0, 1.0]  # backoff 0.5 s then 1 s for the 503s, Retry-After: 1 for the 429
    assert api.hits["/pages?page=2&limit=10"] == 3 and api.hits["/pages?page=3&limit=10"] == 2


def test_api_gives_up_after_its_retries_without_showing_the_token(api):
    source = ApiSource(id="flaky", url=api.url + "/broken", max_retries=2, backoff=0)
    with pytest.raises(ExtractError) as error:
        list(extract_api(source, 10, auth=TOKEN, sleep=lambda s: None))
    assert str(error.value) == f"source flaky: HTTP 500 from {api.url}/broken after 2 retries"
    assert api.hits["/broken"] == 3


def test_api_refuses_a_wrong_credential_at_once(api):
    source = ApiSource(id="api", url=api.url + "/offset", pagination={"style": "offset"})
    with pytest.raises(ExtractError, match="^source api: HTTP 401 from "):
        list(extract_api(source, 10, auth="Bearer wrong", sleep=lambda s: None))
    assert sum(api.hits.values()) == 1


@pytest.mark.parametrize("header, expected", [
    ('<http://h/a?page=2>; rel="next", <http://h/a?page=9>; rel="last"', "http://h/a?page=2"),
    ('<http://h/a?page=1>; rel="prev"', None),
    (None, None),
])
def test_next_link(header, expected):
    assert _next_link(header) == expected


@pytest.mark.parametrize("value, expected", [("3", 3.0), ("0.5", 0.5), ("-1", 0.0), ("soon", None), (None, None)])
def test_retry_after(value, expected):
    assert _retry_after(value) == expected


def test_file_sources_csv_glob_jsonl_and_parquet(tmp_path):
    (tmp_path / "a.csv").write_text("id,name\n1,one\n2,two\n")
    (tmp_path / "b.csv").write_text("id,name\n3,three\n")
    (tmp_path / "c.jsonl").write_text('{"id": 4, "name": "four"}\n\n{"id": 5, "name": "five"}\n')
    pq.write_table(pa.table({"id": [6, 7], "name": ["six", "seven"]}), tmp_path / "d.parquet")
    csv = list(extract_file(FileSource(id="f", path=str(tmp_path / "*.csv")), 10))
    assert [r for b in csv for r in b.to_pylist()] == [
        {"id": 1, "name": "one"}, {"id": 2, "name": "two"}, {"id": 3, "name": "three"}]
    jsonl = list(extract_file(FileSource(id="f", path=str(tmp_path / "c.jsonl")), 10))
    assert [r for b in jsonl for r in b.to_pylist()] == [{"id": 4, "name": "four"}, {"id": 5, "name": "five"}]
    parquet = list(extract_file(FileSource(id="f", path=str(tmp_path / "d.parquet")), 1))
    assert _ids(parquet) == [[6], [7]]


def test_file_source_that_matches_nothing(tmp_path):
    with pytest.raises(ExtractError, match=r"^source f: no file matches .*\*\.csv$"):
        list(extract_file(FileSource(id="f", path=str(tmp_path / "*.csv")), 10))


def test_invalid_json_line_names_the_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"id": 1}\n{oops\n')
    with pytest.raises(ExtractError, match=r"x.jsonl: line 2: invalid JSON"):
        list(extract_file(FileSource(id="f", path=str(tmp_path / "x.jsonl")), 10))


def _sqlite_source(tmp_path, n: int) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    with session(url, write=True) as current:
        current.sql("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, updated_at TEXT)")
        for i in range(1, n + 1):
            current.sql("INSERT INTO events VALUES (?, ?, ?)", (i, f"k{i % 3}", f"2026-01-{i:02d}T00:00:00"))
    return url


@pytest.mark.parametrize("since, expected", [
    (None, list(range(1, 11))),
    (Cursor(column="updated_at", kind="str", value="2026-01-07T00:00:00"), [8, 9, 10]),
    (Cursor(column="updated_at", kind="str", value="2026-01-10T00:00:00"), []),
])
def test_database_source_reads_after_the_cursor(tmp_path, since, expected):
    url = _sqlite_source(tmp_path, 10)
    source = DatabaseSource(id="db", url=url, table="events", cursor_column="updated_at")
    batches = list(extract_database(source, 4, since))
    assert [i for b in batches for i in b.column("id").to_pylist()] == expected
    assert all(b.num_rows <= 4 for b in batches)


def test_database_query_source(tmp_path):
    url = _sqlite_source(tmp_path, 6)
    source = DatabaseSource(id="db", url=url, query="SELECT id, kind FROM events WHERE kind = 'k0';")
    assert [r for b in extract_database(source, 10) for r in b.to_pylist()] == [
        {"id": 3, "kind": "k0"}, {"id": 6, "kind": "k0"}]


def test_spool_tags_records_and_keeps_the_highest_cursor(tmp_path):
    batches = iter([pa.RecordBatch.from_pylist([item(3), item(1)]), pa.RecordBatch.from_pylist([item(2)])])
    result = spool("shop", batches, 2, tmp_path / "spool", cursor_column="id")
    assert (result.rows, [c.n_rows for c in result.chunks], [c.first_row for c in result.chunks]) == (3, [2, 1], [1, 3])
    assert result.cursor == Cursor(column="id", kind="int", value="3")
    first = read_ipc(result.chunks[0].path)
    assert first["_source_id"].to_pylist() == ["shop", "shop"] and first["id"].to_pylist() == [3, 1]
    assert first["tags"][0].as_py() == {"even": False}


def test_spool_refuses_a_missing_cursor_column(tmp_path):
    with pytest.raises(ExtractError, match="^source s: no cursor column 'updated_at'"):
        spool("s", iter([pa.RecordBatch.from_pylist([{"id": 1}])]), 10, tmp_path, "updated_at")


@pytest.mark.parametrize("value, kind", [(5, "int"), (2.5, "float"), ("b", "str")])
def test_cursor_round_trip(value, kind):
    cursor = Cursor.of("c", value)
    assert cursor.kind == kind and Cursor.model_validate_json(cursor.model_dump_json()).python() == value


def test_mariadb_source_reads_after_a_datetime_cursor(mariadb_url):
    import datetime as dt

    with session(mariadb_url, write=True) as current:
        current.sql("CREATE TABLE `order` (id INT PRIMARY KEY, `key` VARCHAR(9), at DATETIME(6))")
        for i in range(1, 8):
            current.sql("INSERT INTO `order` VALUES (%s, %s, %s)", (i, f"k{i}", dt.datetime(2026, 1, i, 12)))
    source = DatabaseSource(id="m", url=mariadb_url, table="order", cursor_column="at")
    since = Cursor.of("at", dt.datetime(2026, 1, 4, 12))
    batches = list(extract_database(source, 2, since))
    assert [b.num_rows for b in batches] == [2, 1]
    assert [r["key"] for b in batches for r in b.to_pylist()] == ["k5", "k6", "k7"]
    query = DatabaseSource(id="q", url=mariadb_url, query='SELECT id FROM `order` WHERE `key` = "k2"')
    assert [r for b in extract_database(query, 10) for r in b.to_pylist()] == [{"id": 2}]
