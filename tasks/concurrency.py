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
                   started: Callable[[], None] | None = None, ahead: int = 2,
                   **kwargs: Any) -> Iterator[tuple[T, PrefectFuture]]:
    """Submit `task` once per item, keeping `max_parallel` in flight (back-pressure), and yield
    each (item, finished future) in completion order so callers can report progress. Once
    `stop()` is true nothing new is submitted; the runs in flight finish. A started `runner`
    (processes, Dask) takes the runs instead of the flow's own task runner. `started()` is
    called once the first runs are submitted: what it does (an API call) overlaps their work;
    likewise a finished run's replacement is submitted before the finished one is yielded.

    `items` may be lazy and slow (a spool still cutting chunks): it is read in a thread of its
    own, so runs start as items arrive and finished ones are yielded meanwhile, and at most
    `ahead` items are read before a run is free to take them (a spool does not run ahead of
    the load). What it raises is raised here once the runs in flight have been yielded; after a
    stop, or when the caller stops iterating, it is closed after the item it is making."""
    events: queue.Queue = queue.Queue()
    feed = _Feed(items, events, ahead)
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
            feed.taken()
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
    (None when it ran out); at most `ahead` items more than the caller has taken."""

    def __init__(self, items: Iterable, events: queue.Queue, ahead: int):
        self.ended = False
        self._halted = threading.Event()
        self._room = threading.Semaphore(ahead)
        self._events = events
        self._thread = threading.Thread(target=self._read, args=(iter(items),), daemon=True,
                                        name="submit-feed")
        self._thread.start()

    def _read(self, items: Iterator) -> None:
        error = None
        try:
            while self._wait_for_room():
                try:
                    item = next(items)
                except StopIteration:
                    break
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

    def _wait_for_room(self) -> bool:
        while not self._room.acquire(timeout=0.05):
            if self._halted.is_set():
                return False
        return not self._halted.is_set()

    def taken(self) -> None:
        """The caller started a run with one of the items read."""
        self._room.release()

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
    Closing the iteration halts the maker after the item it is making. At most `ahead` items
    wait in the handoff: the maker waits for the flow to take them."""

    def __init__(self, ahead: int = 2):
        self._items: queue.Queue = queue.Queue(maxsize=ahead)
        self._halted = threading.Event()
        self._ended_by_maker = False
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
                self._put((_ITEM, item))
        except BaseException as exc:
            self._put((_END, exc))
            self._ended_by_maker = True
            raise
        self._put((_END, None))
        self._ended_by_maker = True

    def _put(self, entry: tuple) -> None:
        """Wait for room, unless the flow stopped taking (then nothing reads the entry)."""
        while not self._halted.is_set():
            try:
                return self._items.put(entry, timeout=0.05)
            except queue.Full:
                continue

    def end(self) -> None:
        """No more items, for a maker that ended without handing over its end (one that failed
        before `fill`); after `fill`'s own end it does nothing."""
        if not self._ended_by_maker:
            self._put((_END, None))

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
