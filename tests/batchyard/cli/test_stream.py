"""`batchyard stream run` and `batchyard stream stop`."""

import json
import time

import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.engines import session
from batchyard.stream.sources import events_table

pytestmark = pytest.mark.usefixtures("prefect_harness")

runner = CliRunner()
HOUR = 3_600_000


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_stream_run_closes_the_window_owed_by_now(sqlite_url):
    hour = int(time.time() * 1000) // HOUR * HOUR  # the last whole hour ends here
    with session(sqlite_url, write=True) as current:
        current.create(events_table("events").metadata)
        current.execute(events_table("events").insert(), [
            {"key": "a", "value": 2.0, "ts": hour - HOUR // 2}, {"key": "a", "value": 5.0, "ts": hour - 1},
            {"key": "b", "value": 1.0, "ts": hour - 2 * HOUR}])
    result = invoke("stream", "run", "cli-job", "--source-url", sqlite_url, "--target-url", sqlite_url,
                    "--window-seconds", 3600, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # from the earliest event (issue 14): the older "b" is aggregated in its own window, not late
    assert {k: summary[k] for k in ("windows", "events_in", "events_out", "late", "before_start",
                                    "watermark", "stopped")} == {
        "windows": 2, "events_in": 3, "events_out": 2, "late": 0, "before_start": 0, "watermark": hour,
        "stopped": False}
    with session(sqlite_url) as current:
        assert current.sql("SELECT window_start, key, count, sum, min, max FROM stream_results "
                           "ORDER BY window_start").rows == [
            (hour - 2 * HOUR, "b", 1, 1.0, 1.0, 1.0), (hour - HOUR, "a", 2, 7.0, 2.0, 5.0)]
    again = invoke("stream", "run", "cli-job", "--source-url", sqlite_url, "--target-url", sqlite_url,
                   "--window-seconds", 3600)
    assert again.exit_code == 0
    assert "stream cli-job: 0 windows, 0 events in, 0 out, 0 late" in again.stdout


def test_stream_stop_then_run_ends_at_once(sqlite_url):
    stopped = invoke("stream", "stop", "cli-stop", "--next")
    assert stopped.exit_code == 0
    assert "stop requested for the next run of stream job cli-stop" in stopped.stdout
    result = invoke("stream", "run", "cli-stop", "--source-url", sqlite_url, "--target-url", sqlite_url)
    assert result.exit_code == 0
    assert "stream cli-stop: 0 windows, 0 events in, 0 out, 0 late (stopped)" in result.stdout


def test_stream_run_refuses_bad_parameters():
    result = runner.invoke(app, ["stream", "run", "x", "--window-seconds", "0"])
    assert result.exit_code == 1
    assert "error: window_seconds: Input should be greater than 0" in result.output
