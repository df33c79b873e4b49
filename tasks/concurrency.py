"""Bounded fan-out: at most N task runs in flight, results handed back as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner

T = TypeVar("T")


def submit_bounded(task: Task, items: Iterable[T], max_parallel: int, item_name: str,
                   stop: Callable[[], bool] | None = None, runner: TaskRunner | None = None,
                   started: Callable[[], None] | None = None,
                   **kwargs: Any) -> Iterator[tuple[T, PrefectFuture]]:
    """Submit `task` once per item, keeping `max_parallel` in flight (back-pressure), and yield
    each (item, finished future) in completion order so callers can report progress. Once
    `stop()` is true nothing new is submitted; the runs in flight finish. A started `runner`
    (processes, Dask) takes the runs instead of the flow's own task runner. `started()` is
    called once the first runs are submitted: what it does (an API call) overlaps their work;
    likewise a finished run's replacement is submitted before the finished one is yielded."""
    pending = list(items)[::-1]
    inflight: dict[PrefectFuture, T] = {}

    def refill() -> None:
        if pending and stop is not None and stop():
            pending.clear()
        while pending and len(inflight) < max_parallel:
            item = pending.pop()
            parameters = {item_name: item, **kwargs}
            future = runner.submit(task, parameters) if runner else task.submit(**parameters)
            inflight[future] = item

    refill()
    if started is not None and inflight:
        started()
    while inflight:
        finished = next(as_completed(list(inflight)))
        item = inflight.pop(finished)
        refill()  # before the caller's bookkeeping (an API call): the next run starts now
        yield item, finished
