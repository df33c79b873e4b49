"""The stream-window flow against real SQLite files and the real Redis."""

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.runtime import flow_run
from prefect.variables import Variable

from batchyard.engines import session
from batchyard.stream.job import StreamJob
from batchyard.stream.sinks import WindowStats, open_sink
from batchyard.stream.sources import RedisStreamSource, events_table
from batchyard.stream.window import Window
from flows.stream_window import stream_window
from tests.batchyard.stream.test_sources_sinks import names, redis_url  # noqa: F401

MIN = 60_000


def artifacts(flow_run_id):
    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            response = await client._client.post("/artifacts/filter", json={
                "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}}, "limit": 20})
            return {a["key"]: a for a in response.json()}

    return asyncio.run(fetch())


def run(job):
    state = stream_window(job, return_state=True)
    assert state.is_completed(), state.message
    return state.result(), state.state_details.flow_run_id


def scheduled_at(monkeypatch, ms):
    monkeypatch.setattr(flow_run, "get_scheduled_start_time",
                        lambda: datetime.fromtimestamp(ms / 1000, UTC))


def insert_events(db, rows):
    with session(db, write=True) as current:
        current.create(events_table("events").metadata)
        current.execute(events_table("events").insert(),
                        [dict(zip(("key", "value", "ts"), r, strict=True)) for r in rows])


def test_sqlite_first_run_from_latest_starts_at_the_scheduled_window_then_carries_on(sqlite_url,
                                                                                     monkeypatch):
    insert_events(sqlite_url, [("a", 1, 9 * MIN), ("a", 2, 9 * MIN + 1), ("b", 4, 10 * MIN + 5),
                               ("old", 1, 2 * MIN), ("c", 8, 20 * MIN)])
    job = StreamJob(name="sq", source_url=sqlite_url, target_url=sqlite_url, max_windows=5,
                    start_from="latest")
    scheduled_at(monkeypatch, 10 * MIN + 5_000)
    summary, run_id = run(job)
    # issue 14: the event before the job's first window is not "late", it is before its start
    assert {k: summary[k] for k in ("windows", "events_in", "events_out", "late", "before_start",
                                    "watermark", "stopped")} == {
        "windows": 5, "events_in": 3, "events_out": 2, "late": 0, "before_start": 1,
        "watermark": 14 * MIN, "stopped": False}
    found = artifacts(run_id)
    assert found["stream-sq-progress"]["data"] == 100.0
    assert ("5 of at most 5 windows, 3 events in, 2 out, 0 late, lag" in found["stream-sq-progress"]["description"]
            and "1 before the job's first window" in found["stream-sq-progress"]["description"])
    table = json.loads(found["stream-sq-windows"]["data"])
    assert [(r["window_start"], r["events_in"], r["late"], r["before_start"], r["committed"]) for r in table] == [
        (9 * MIN, 2, 0, 1, True), (10 * MIN, 1, 0, 0, True), (11 * MIN, 0, 0, 0, True),
        (12 * MIN, 0, 0, 0, True), (13 * MIN, 0, 0, 0, True)]

    scheduled_at(monkeypatch, 99 * MIN)  # the watermark wins over a later scheduled time
    summary, _ = run(job.model_copy(update={"max_windows": 7}))
    assert (summary["windows"], summary["events_in"], summary["watermark"]) == (7, 1, 21 * MIN)
    with session(sqlite_url) as current:
        rows = current.sql("SELECT window_start, key, count, sum FROM stream_results "
                           "ORDER BY window_start, key").rows
    assert rows == [(9 * MIN, "a", 2, 3.0), (10 * MIN, "b", 1, 4.0), (20 * MIN, "c", 1, 8.0)]


def plus_one(window, rows):
    return [{**r, "plus_one": r["sum"] + 1} for r in rows]


def test_redis_to_redis_with_a_user_function_and_a_crash_before_ack(redis_url, names, monkeypatch):  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for key, value, ts in [("a", 1, 60_000), ("a", 2, 61_000), ("b", 5, 70_000), ("b", 1, 130_000)]:
        client.xadd(f"{names}:in", {"key": key, "value": value, "ts": ts})
    crashes = []
    real_ack = RedisStreamSource.ack

    def crash_once(self, fetched):
        if not crashes:
            crashes.append(1)
            raise ConnectionError("crash after the commit, before XACK")
        real_ack(self, fetched)

    monkeypatch.setattr(RedisStreamSource, "ack", crash_once)
    sink = open_sink(redis_url, f"{names}:out")
    sink.commit(names, Window(0, MIN), [], WindowStats(0, 0, 0), "0-0")  # a job that began at 0
    job = StreamJob(name=names, source_url=redis_url, source=f"{names}:in", target_url=redis_url,
                    target=f"{names}:out", max_windows=2, function=f"{__name__}:plus_one")
    summary, _ = run(job)
    assert crashes == [1]
    assert (summary["windows"], summary["watermark"]) == (2, 3 * MIN)
    out = [e[1] for e in client.xrange(f"{names}:out")]
    assert [(e["window_start"], e["key"], e["count"], e["sum"], json.loads(e["extra"])) for e in out] == [
        ("60000", "a", "2", "3.0", {"plus_one": 4.0}), ("60000", "b", "1", "5.0", {"plus_one": 6.0}),
        ("120000", "b", "1", "1.0", {"plus_one": 2.0})]
    assert client.xpending(f"{names}:in", f"batchyard-{names}")["pending"] == 0


def test_stop_signal_before_the_run_processes_nothing(sqlite_url):
    Variable.set(StreamJob(name="stopped").stop_variable, "stop", overwrite=True)
    summary, _ = run(StreamJob(name="stopped", source_url=sqlite_url, target_url=sqlite_url))
    assert (summary["windows"], summary["stopped"]) == (0, True)
    assert Variable.get(StreamJob(name="stopped").stop_variable, default=None) is None


def test_loop_mode_waits_for_the_next_window_and_stops_after_the_current_one(sqlite_url, monkeypatch):
    job = StreamJob(name=f"loop-{uuid.uuid4().hex[:6]}", source_url=sqlite_url, target_url=sqlite_url,
                    window_seconds=3600, loop=True, max_windows=10)
    monkeypatch.setattr(flow_run, "get_scheduled_start_time", lambda: datetime.now(UTC) - timedelta(hours=2))
    timer = threading.Timer(4.0, Variable.set, (job.stop_variable, "stop"), {"overwrite": True})
    timer.start()
    started = time.monotonic()
    summary, _ = run(job)
    timer.join()
    assert (summary["windows"], summary["stopped"]) == (3, True)  # the three due windows, then waited
    assert 4.0 <= time.monotonic() - started < 30


def test_bad_parameters_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="window_seconds"):
        StreamJob(window_seconds=0)
    with pytest.raises(ValidationError, match="function must be module:function"):
        StreamJob(function="nocolon")


def test_a_new_job_starts_from_its_earliest_event_and_aggregates_the_backlog(sqlite_url, monkeypatch):
    """Issue 14: a first run used to count the backlog as late and never aggregate it."""
    insert_events(sqlite_url, [(f"k{i % 5}", 1.0, 3 * MIN + i * 1_000) for i in range(907)])  # 3 to ~18 min
    scheduled_at(monkeypatch, 30 * MIN)
    summary, run_id = run(StreamJob(name="backlog", source_url=sqlite_url, target_url=sqlite_url, max_windows=27))
    assert {k: summary[k] for k in ("windows", "events_in", "late", "before_start", "watermark")} == {
        "windows": 27, "events_in": 907, "late": 0, "before_start": 0, "watermark": 30 * MIN}
    with session(sqlite_url) as current:
        assert current.sql("SELECT min(window_start), sum(count) FROM stream_results").rows == [(3 * MIN, 907)]


def test_a_new_job_can_start_from_a_moment_and_counts_what_came_before(sqlite_url, monkeypatch):
    insert_events(sqlite_url, [("a", 1.0, 5 * MIN + 10), ("a", 2.0, 6 * MIN + 10), ("b", 4.0, 7 * MIN + 10)])
    scheduled_at(monkeypatch, 9 * MIN)
    summary, run_id = run(StreamJob(name="moment", source_url=sqlite_url, target_url=sqlite_url, max_windows=3,
                                    start_from=datetime.fromtimestamp(6 * MIN / 1000, UTC).isoformat()))
    assert (summary["windows"], summary["events_in"], summary["before_start"], summary["late"]) == (3, 2, 1, 0)
    assert "1 before the job's first window (not aggregated)" in artifacts(run_id)["stream-moment-progress"][
        "description"]
    with pytest.raises(ValueError, match="start_from must be earliest, latest"):
        StreamJob(start_from="yesterday")


def test_a_new_redis_consumer_group_starts_from_the_stream_s_first_entry(redis_url, names, monkeypatch):  # noqa: F811
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for i in range(30):
        client.xadd(f"{names}:in", {"key": "k", "value": 1, "ts": 2 * MIN + i * 2_000})  # 2 to 3 min
    scheduled_at(monkeypatch, 10 * MIN)
    summary, _ = run(StreamJob(name=names, source_url=redis_url, source=f"{names}:in", target_url=redis_url,
                               target=f"{names}:out", max_windows=3))
    assert (summary["windows"], summary["events_in"], summary["late"], summary["watermark"]) == (3, 30, 0, 5 * MIN)


def test_stream_stop_stops_a_running_job_and_sets_nothing_when_none_runs(sqlite_url, monkeypatch):
    from typer.testing import CliRunner

    from batchyard.cli import app
    from tasks.stream import running_runs

    job = StreamJob(name=f"stopme-{uuid.uuid4().hex[:6]}", source_url=sqlite_url, target_url=sqlite_url,
                    window_seconds=3600, loop=True, max_windows=10, start_from="latest")
    monkeypatch.setattr(flow_run, "get_scheduled_start_time", lambda: datetime.now(UTC))
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(summary=run(job)[0]))
    worker.start()
    deadline = time.time() + 60
    while not running_runs(job.name) and time.time() < deadline:
        time.sleep(0.2)
    stopped = CliRunner().invoke(app, ["stream", "stop", job.name], catch_exceptions=False)
    worker.join(60)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == f"stop requested for stream job {job.name}: its run ends after its current window\n"
    assert outcome["summary"]["stopped"] is True
    assert Variable.get(job.stop_variable, default=None) is None  # the run cleared it

    idle = CliRunner().invoke(app, ["stream", "stop", job.name], catch_exceptions=False)
    assert (idle.exit_code, idle.stderr) == (
        1, f"error: no run of stream job {job.name} is going: nothing to stop (--next stops its next run)\n")
    assert Variable.get(job.stop_variable, default=None) is None  # nothing was set
    ahead = CliRunner().invoke(app, ["stream", "stop", job.name, "--next"], catch_exceptions=False)
    assert ahead.exit_code == 0 and Variable.get(job.stop_variable, default=None) == "stop"
    Variable.unset(job.stop_variable)
