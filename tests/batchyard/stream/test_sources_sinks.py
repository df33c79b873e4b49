"""Sources and sinks against real SQLite files and the real Redis."""

import uuid

import pytest

from batchyard.engines import session
from batchyard.stream.aggregate import Event
from batchyard.stream.runner import process_window
from batchyard.stream.sinks import SqlTableSink, WindowStats, open_sink
from batchyard.stream.sources import (
    ORIGIN,
    Fetched,
    SqlTableSource,
    classify,
    events_table,
    format_position,
    open_source,
    parse_event,
    parse_position,
)
from batchyard.stream.window import Window
from tests.helpers import REQUIRE_SERVICES

W = Window(60_000, 120_000)


@pytest.mark.parametrize("ts, position, bucket", [
    (60_000, (5, 0), "events"), (119_999, (5, 0), "events"), (120_000, (5, 0), None),
    (59_999, (5, 0), "late"), (59_999, (3, 0), "seen"),
])
def test_classify(ts, position, bucket):
    fetched = Fetched()
    kept = classify(fetched, Event(position, "k", 1.0, ts), W, seen=(4, 0))
    assert kept is (bucket is not None)
    assert len(fetched.events) == (bucket == "events")
    assert len(fetched.late) == (bucket == "late")


@pytest.mark.parametrize("fields, expected", [
    ({"key": "a", "value": "2.5", "ts": "61000"}, Event((7, 1), "a", 2.5, 61000)),
    ({"key": "a"}, Event((7, 1), "a", 1.0, 7)),
    ({"value": "1"}, None),
    ({"key": "a", "value": "x"}, None),
])
def test_parse_event(fields, expected):
    assert parse_event((7, 1), fields) == expected


def test_positions_round_trip():
    assert parse_position(format_position((1763790000000, 3))) == (1763790000000, 3)
    assert parse_position(None) == ORIGIN
    with pytest.raises(ValueError):
        parse_position("x-1")


def insert_events(db, table, rows):
    t = events_table(table)
    with session(db, write=True) as current:
        current.execute(t.insert(), [dict(zip(("key", "value", "ts"), r, strict=True)) for r in rows])


def test_sql_source_and_sink_close_a_window_once(sqlite_url):
    source, sink = SqlTableSource(sqlite_url, "events"), SqlTableSink(sqlite_url, "results")
    insert_events(sqlite_url, "events", [("a", 1, 60_000), ("a", 3, 70_000), ("b", 2, 119_999),
                                         ("a", 9, 120_000), ("old", 5, 1_000)])
    first = process_window(source, sink, "job", W, 130_000)
    # the job's first window: the older event is before its start, not late (issue 14)
    assert (first.events_in, first.events_out, first.late, first.before_start, first.committed) == (
        3, 2, 0, 1, True)
    assert first.lag_seconds == 10.0
    assert sink.state("job").watermark == 120_000 and sink.state("job").position == "5-0"
    again = process_window(source, sink, "job", W, 130_000)
    assert again.committed is False
    insert_events(sqlite_url, "events", [("a", 4, 65_000), ("c", 1, 130_000)])
    second = process_window(source, sink, "job", W.next(), 190_000)
    assert (second.events_in, second.late, second.committed) == (2, 1, True)
    with session(sqlite_url) as current:
        rows = current.sql('SELECT window_start, key, count, sum, min, max FROM results '
                           'ORDER BY window_start, key').rows
        windows = current.sql("SELECT window_start, events_in, events_out, late FROM "
                              "batchyard_stream_windows ORDER BY window_start").rows
    assert rows == [(60_000, "a", 2, 4.0, 1.0, 3.0), (60_000, "b", 1, 2.0, 2.0, 2.0),
                    (120_000, "a", 1, 9.0, 9.0, 9.0), (120_000, "c", 1, 1.0, 1.0, 1.0)]
    assert windows == [(60_000, 3, 2, 0), (120_000, 2, 2, 1)]
    assert sink.state("job").windows == 2


def test_sql_sink_repeated_commit_does_not_double_count(sqlite_url):
    sink = SqlTableSink(sqlite_url, "results")
    rows = [{"key": "a", "count": 2, "sum": 3.0, "min": 1.0, "max": 2.0, "note": "x"}]
    assert sink.commit("job", W, rows, WindowStats(2, 0, 0), "2-0") is True
    assert sink.commit("job", W, rows, WindowStats(2, 0, 0), "2-0") is False
    with session(sqlite_url) as current:
        assert current.sql("SELECT key, count, extra FROM results").rows == [("a", 2, '{"note": "x"}')]
    assert sink.state("job").windows == 1


@pytest.fixture
def redis_url():
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required (BATCHYARD_REQUIRE_SERVICES=1): {exc}")
        pytest.skip(f"no Redis at {url}")
    return url


@pytest.fixture
def names(redis_url):
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{prefix}*"):
        client.delete(key)


def test_redis_source_acks_after_commit_and_keeps_later_windows_pending(redis_url, names):
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    stream, out = f"{names}:events", f"{names}:out"
    for key, value, ts in [("a", 1, 60_000), ("a", 2, 61_000), ("b", 5, 70_000), ("a", 7, 125_000),
                           ("a", 1, 1_000)]:
        client.xadd(stream, {"key": key, "value": value, "ts": ts})
    client.xadd(stream, {"nokey": 1})
    source, sink = open_source(redis_url, stream, names), open_sink(redis_url, out)
    first = process_window(source, sink, names, W, 121_000)
    assert (first.events_in, first.events_out, first.late, first.before_start, first.invalid) == (
        3, 2, 0, 1, 1)
    group = f"batchyard-{names}"
    assert client.xpending(stream, group)["pending"] == 1  # the 125 000 event waits for its window
    entries = [e[1] for e in client.xrange(out)]
    assert [(e["key"], e["count"], e["sum"], e["min"], e["max"], e["window_start"]) for e in entries] == [
        ("a", "2", "3.0", "1.0", "2.0", "60000"), ("b", "1", "5.0", "5.0", "5.0", "60000")]
    assert sink.commit(names, W, [{"key": "a", "count": 1}], WindowStats(1, 0, 0), "0-0") is False
    assert client.xlen(out) == 2
    client.xadd(stream, {"key": "z", "value": 1, "ts": 61_000})  # late for the committed window
    second = process_window(source, sink, names, W.next(), 181_000)
    assert (second.events_in, second.events_out, second.late, second.invalid) == (1, 1, 1, 0)
    assert client.xpending(stream, group)["pending"] == 0
    assert sink.state(names).watermark == 180_000 and sink.state(names).windows == 2


@pytest.mark.postgres
def test_postgres_source_and_sink(postgres_url, unique_table):
    source = SqlTableSource(postgres_url, f"{unique_table}_in")
    sink = SqlTableSink(postgres_url, f"{unique_table}_out")
    insert_events(postgres_url, f"{unique_table}_in", [("a", 1, 60_000), ("a", 2, 61_000), ("z", 1, 5)])
    job = f"pg-{unique_table}"
    first = process_window(source, sink, job, W, 120_000)
    assert (first.events_in, first.events_out, first.late, first.before_start, first.committed) == (
        2, 1, 0, 1, True)
    assert process_window(source, sink, job, W, 120_000).committed is False
    with session(postgres_url) as current:
        rows = current.sql(f'SELECT key, count, sum, min, max FROM "{unique_table}_out" WHERE job = %s',
                           (job,)).rows
    assert rows == [("a", 2, 3.0, 1.0, 2.0)]
    assert sink.state(job).watermark == 120_000 and sink.state(job).windows == 1


def test_mariadb_source_and_sink(mariadb_url):
    source, sink = SqlTableSource(mariadb_url, "events"), SqlTableSink(mariadb_url, "results")
    insert_events(mariadb_url, "events", [("a", 1, 60_000), ("a", 2, 61_000), ("b", 4, 119_999),
                                          ("z", 1, 5), ("a", 9, 120_000)])
    first = process_window(source, sink, "maria", W, 120_000)
    assert (first.events_in, first.events_out, first.late, first.before_start, first.committed) == (
        3, 2, 0, 1, True)
    assert process_window(source, sink, "maria", W, 120_000).committed is False
    second = process_window(source, sink, "maria", W.next(), 180_000)
    assert (second.events_in, second.committed) == (1, True)
    with session(mariadb_url) as current:
        rows = current.sql("SELECT window_start, `key`, `count`, `sum`, `min`, `max` FROM results "
                           "WHERE job = %s ORDER BY 1, 2", ("maria",)).rows
    assert rows == [(60_000, "a", 2, 3.0, 1.0, 2.0), (60_000, "b", 1, 4.0, 4.0, 4.0),
                    (120_000, "a", 1, 9.0, 9.0, 9.0)]
    assert sink.state("maria").watermark == 180_000 and sink.state("maria").windows == 2
