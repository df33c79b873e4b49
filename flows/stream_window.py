"""stream-window: close the tumbling windows a stream job owes, one after another.

The window comes from the job's watermark (or, on its first run, from `job.start_from`: its
source's earliest event by default, or the window the run's scheduled start owes), so a late or
retried run closes exactly the window it owes. A run closes at most `max_windows` windows and
then ends; the next scheduled run carries on from the watermark. With `loop` it waits for
windows to come due instead of ending. `batchyard stream stop NAME` ends it after the current
window.

`python flows/stream_window.py` runs the job `local` on demo/stream.db, writing a few minutes of
sample events into its `events` table when it has none, and aggregates them per minute into
`stream_results`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

from batchyard.stream.job import StreamJob
from batchyard.stream.window import is_due, iso, to_ms
from tasks.stream import (
    StreamReport,
    close_window,
    next_owed_window,
    now_ms,
    stop_requested,
    wait_until_due,
)


@flow(name="stream-window")
def stream_window(job: StreamJob = StreamJob()) -> dict:
    """Close the windows `job` owes, up to `job.max_windows`; returns the run's totals."""
    scheduled_ms = to_ms(flow_run.get_scheduled_start_time())
    report = StreamReport(job)
    stopped = False
    while report.windows < job.max_windows:
        if stop_requested(job):
            stopped = True
            break
        window = next_owed_window(job, scheduled_ms)
        if not is_due(window, now_ms(), job.lateness_ms):
            if not job.loop:
                break
            if not wait_until_due(job, window):
                stopped = True
                break
        report.add(close_window(job, window))
    return report.finish(stopped)


def main() -> int:
    """Close the sample job's due windows and say where the results are."""
    from batchyard.engines import session
    from batchyard.prefect_runtime import run_locally
    from batchyard.stream.sources import SqlTableSource

    Path("demo").mkdir(exist_ok=True)
    db = "sqlite:///demo/stream.db"
    source = SqlTableSource(db, "events")  # creates the events table when missing
    if source.earliest() is None:
        now = int(time.time() * 1000)
        with session(db, write=True) as current:
            current.execute(source.table.insert(), [
                {"key": f"page-{i % 3}", "value": float(i % 7), "ts": now - 300_000 + i * 1_000}
                for i in range(300)])
        print(f"wrote 300 sample events of the last 5 minutes to table events of {db}")
    state, summary = run_locally(stream_window, job=StreamJob(name="local", source_url=db, target_url=db))
    until = iso(summary["watermark"]) if summary["watermark"] else "-"
    print(f"stream job local: {summary['windows']} windows closed (up to {until}), "
          f"{summary['events_in']} events in, {summary['events_out']} rows out to table "
          f"stream_results of {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
