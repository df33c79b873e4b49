"""Tasks of the stream-window flow: find the window owed, close it, watch for the stop signal;
and whether a run of a job is going (what `batchyard stream stop` asks)."""

from __future__ import annotations

import time

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.variables import Variable

from batchyard.stream.aggregate import load_function
from batchyard.stream.job import StreamJob, start_ms
from batchyard.stream.runner import WindowResult, owed_window, process_window
from batchyard.stream.sinks import open_sink
from batchyard.stream.sources import open_source
from batchyard.stream.window import Window, due_at
from tasks.policies import WINDOW


def now_ms() -> int:
    return int(time.time() * 1000)


@task(name="owed-window", cache_policy=NO_CACHE, **WINDOW.options())
def next_owed_window(job: StreamJob, scheduled_ms: int) -> Window:
    """After the watermark; on the job's first run, from `job.start_from`."""
    sink = open_sink(job.target_url, job.target)
    try:
        return owed_window(sink, job.name, scheduled_ms, job.size_ms, job.lateness_ms,
                           lambda: first_event_ms(job))
    finally:
        sink.close()


def first_event_ms(job: StreamJob) -> int | None:
    """Where a job's first run starts: its source's earliest event (`earliest`), a moment, or
    None (`latest`: the window the scheduled start owes)."""
    if job.start_from != "earliest":
        return start_ms(job.start_from)
    source = open_source(job.source_url, job.source, job.name)
    try:
        return source.earliest()
    finally:
        source.close()


@task(name="close-window", task_run_name="window-{window.start}", cache_policy=NO_CACHE,
      **WINDOW.options())
def close_window(job: StreamJob, window: Window) -> WindowResult:
    """Retrying is safe: the commit is idempotent and acknowledgements follow it."""
    function = load_function(job.function) if job.function else None
    source, sink = open_source(job.source_url, job.source, job.name), open_sink(job.target_url, job.target)
    try:
        return process_window(source, sink, job.name, window, now_ms(), function)
    finally:
        source.close()
        sink.close()


def stop_requested(job: StreamJob) -> bool:
    """`batchyard stream stop NAME` sets the Variable; the run that sees it ends and clears it."""
    if Variable.get(job.stop_variable, default=None) is None:
        return False
    Variable.unset(job.stop_variable)
    return True


def wait_until_due(job: StreamJob, window: Window, poll_seconds: float = 1.0) -> bool:
    """Sleep until `window` may be closed; False when a stop signal came first."""
    while now_ms() < due_at(window, job.lateness_ms):
        if stop_requested(job):
            return False
        time.sleep(min(poll_seconds, max(0.01, (due_at(window, job.lateness_ms) - now_ms()) / 1000)))
    return True


class StreamReport:
    """The run's progress artifact (windows of `max_windows`) and, at the end, its table."""

    def __init__(self, job: StreamJob):
        self.job, self.results = job, []
        self.logger = get_run_logger()
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=f"stream-{job.name}-progress".replace("_", "-"),
            description=self.description)

    @property
    def windows(self) -> int:
        return len(self.results)

    def total(self, field: str) -> int:
        return sum(getattr(r, field) for r in self.results)

    @property
    def description(self) -> str:
        lag = f"{self.results[-1].lag_seconds:.1f} s" if self.results else "-"
        before = self.total("before_start")
        return (f"Stream {self.job.name}: {self.windows} of at most {self.job.max_windows} windows, "
                f"{self.total('events_in')} events in, {self.total('events_out')} out, "
                f"{self.total('late')} late, lag {lag}"
                + (f", {before} before the job's first window (not aggregated)" if before else ""))

    def add(self, result: WindowResult) -> None:
        self.results.append(result)
        update_progress_artifact(self.artifact_id, description=self.description,
                                 progress=round(100.0 * self.windows / self.job.max_windows, 2))
        log = self.logger.warning if result.late or result.invalid else self.logger.info
        log("window %s: %d events in, %d rows out, %d late, %d invalid, lag %.1f s%s%s",
            Window(result.window_start, result.window_end).label(), result.events_in,
            result.events_out, result.late, result.invalid, result.lag_seconds,
            f"; {result.before_start} events before the job's first window (not aggregated)"
            if result.before_start else "",
            "" if result.committed else " (already committed: not written again)")

    def finish(self, stopped: bool) -> dict:
        update_progress_artifact(self.artifact_id, progress=100.0, description=self.description)
        create_table_artifact(
            table=[r.as_dict() for r in self.results] or [{"windows": 0}],
            key=f"stream-{self.job.name}-windows".replace("_", "-"),
            description=self.description)
        return {"job": self.job.name, "windows": self.windows, "stopped": stopped,
                "events_in": self.total("events_in"), "events_out": self.total("events_out"),
                "late": self.total("late"), "invalid": self.total("invalid"),
                "before_start": self.total("before_start"),
                "watermark": self.results[-1].window_end if self.results else None,
                "lag_seconds": self.results[-1].lag_seconds if self.results else None}


def running_runs(name: str) -> list[str]:
    """The ids of the stream-window flow runs of job `name` that are going now (pending or
    running), as the Prefect API knows them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["stream-window"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING]))))
    default = StreamJob().name
    return [str(r.id) for r in runs
            if ((r.parameters or {}).get("job") or {}).get("name", default) == name]
