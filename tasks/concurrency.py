"""Bounded fan-out: at most N task runs in flight, results handed back as they finish."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from prefect import Task
from prefect.futures import PrefectFuture
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
    likewise a finished run's replacement is submitted before the finished one is yielded.

    `items` may be lazy and slow (a spool still cutting chunks): it is read in a thread of its
    own, so runs start as items arrive and finished ones are yielded meanwhile. What it raises
    is raised here once the runs in flight have been yielded; after a stop, or when the caller
    stops iterating, it is closed after the item it is making."""
    events: queue.Queue = queue.Queue()
    feed = _Feed(items, events)
    pending: list[T] = []
    inflight: dict[PrefectFuture, T] = {}
    failure: BaseException | None = None
    told = started is None

    def refill() -> None:
        nonlocal told
        if stop is not None and (pending or not feed.ended) and stop():
            pending.clear()
            feed.halt()
        while pending and len(inflight) < max_parallel:
            item = pending.pop(0)
            parameters = {item_name: item, **kwargs}
            future = runner.submit(task, parameters) if runner else task.submit(**parameters)
            inflight[future] = item
            future.add_done_callback(lambda done: events.put((_DONE, done)))
        if not told and inflight:
            told = True
            started()

    try:
        while inflight or pending or not feed.ended:
            kind, value = events.get()
            if kind is _ITEM:
                if not feed.halted:
                    pending.append(value)
                refill()
            elif kind is _END:
                feed.ended, failure = True, value
                if failure is not None:  # items read but not started are left for the caller's resume
                    pending.clear()
                refill()
            elif value in inflight:
                item = inflight.pop(value)
                refill()  # before the caller's bookkeeping (an API call): the next run starts now
                yield item, value
        if failure is not None:
            raise failure
    finally:
        feed.halt()
        feed.join()


_ITEM, _DONE, _END = object(), object(), object()


class _Feed:
    """Reads `items` in its own thread into `events`: each item, then _END with what it raised
    (None when it ran out)."""

    def __init__(self, items: Iterable, events: queue.Queue):
        self.ended = False
        self._halted = threading.Event()
        self._events = events
        self._thread = threading.Thread(target=self._read, args=(iter(items),), daemon=True,
                                        name="submit-feed")
        self._thread.start()

    def _read(self, items: Iterator) -> None:
        error = None
        try:
            for item in items:
                if self._halted.is_set():
                    break
                self._events.put((_ITEM, item))
        except BaseException as exc:  # raised to the caller once the runs in flight are in
            error = exc
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            self._events.put((_END, error))

    @property
    def halted(self) -> bool:
        return self._halted.is_set()

    def halt(self) -> None:
        self._halted.set()

    def join(self) -> None:
        self._thread.join()


class Handoff:
    """Items one task makes, handed to the flow as they are made (a spool's chunks to
    `submit_bounded`): `fill` runs in the making task, iterating the handoff in the flow.
    Closing the iteration halts the maker after the item it is making."""

    def __init__(self):
        self._items: queue.Queue = queue.Queue()
        self._halted = threading.Event()
        self.ended = False

    def fill(self, items: Iterable[T], each: Callable[[T], None] | None = None) -> None:
        """Hand over every item (calling `each` on it first), then the end; what `items`
        raises is handed over too, and raised here."""
        try:
            for item in items:
                if self._halted.is_set():
                    close = getattr(items, "close", None)
                    if close is not None:
                        close()
                    break
                if each is not None:
                    each(item)
                self._items.put((_ITEM, item))
        except BaseException as exc:
            self._items.put((_END, exc))
            raise
        self._items.put((_END, None))

    def end(self) -> None:
        """No more items (a second end, after `fill`'s, is never read)."""
        self._items.put((_END, None))

    def __iter__(self) -> Iterator:
        try:
            while True:
                kind, value = self._items.get()
                if kind is _END:
                    self.ended = True
                    if value is not None:
                        raise value
                    return
                yield value
        finally:
            self._halted.set()
