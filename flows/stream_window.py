"""stream-window: close the tumbling windows a stream job owes, one after another.

The window comes from the job's watermark (or, on its first run, from the run's scheduled start),
so a late or retried run closes exactly the window it owes. A run closes at most `max_windows`
windows and then ends; the next scheduled run carries on from the watermark. With `loop` it waits
for windows to come due instead of ending. `batchyard stream stop NAME` ends it after the
current window.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from batchyard.stream.job import StreamJob
from batchyard.stream.window import is_due, to_ms
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


if __name__ == "__main__":
    stream_window(StreamJob(max_windows=1))
