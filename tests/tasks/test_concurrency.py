"""Bounded fan-out from a lazy source: runs start as items arrive, what the source raises comes
after the runs in flight, a stop closes the source; a handoff carries items between tasks."""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.concurrency import Handoff, submit_bounded

pytestmark = pytest.mark.usefixtures("prefect_harness")

ran: dict[int, threading.Event] = {}
started: set[int] = set()


@task(cache_policy=NO_CACHE)
def double(item: int) -> int:
    started.add(item)
    ran.setdefault(item, threading.Event()).set()
    return item * 2


def _waiting_source(closed: list) -> object:
    """0, then 1 only once the run of 0 has finished: a source that is still being read."""
    try:
        yield 0
        assert ran.setdefault(0, threading.Event()).wait(30)
        yield 1
        yield 2
    finally:
        closed.append(True)


@flow
def fan_out(source_kind: str) -> tuple[list, str | None, bool]:
    ran.clear()
    started.clear()
    closed: list = []
    seen, error, stopped = [], None, False
    if source_kind == "waiting":
        items = _waiting_source(closed)
    elif source_kind == "failing":
        def failing():
            yield 0
            yield 1
            raise ValueError("line 3: unreadable")
        items = failing()
    else:
        items = _waiting_source(closed)
        stopped = True
    try:
        for item, future in submit_bounded(double, items, 2, "item",
                                           stop=(lambda: bool(started)) if stopped else None):
            seen.append((item, future.result()))
    except ValueError as exc:
        error = str(exc)
    return sorted(seen), error, bool(closed)


def test_runs_start_while_the_source_is_still_being_read():
    assert fan_out("waiting") == ([(0, 0), (1, 2), (2, 4)], None, True)


def test_what_the_source_raises_comes_after_its_runs_in_flight():
    assert fan_out("failing") == ([(0, 0), (1, 2)], "line 3: unreadable", False)


def test_a_stop_closes_the_source_and_submits_nothing_more():
    seen, error, closed = fan_out("stopped")
    assert seen == [(0, 0)] and error is None and closed
    assert started == {0}


@task(cache_policy=NO_CACHE)
def make(cut: Handoff, n: int, fail: bool) -> int:
    def items():
        yield from range(n)
        if fail:
            raise RuntimeError("the maker broke")
    cut.fill(items())
    return n


@flow
def handed(n: int, fail: bool) -> tuple[list, str | None]:
    cut = Handoff()
    made = make.submit(cut, n, fail)
    made.add_done_callback(lambda _: cut.end())
    got, error = [], None
    try:
        got = list(cut)
    except RuntimeError as exc:
        error = str(exc)
    made.wait()
    return got, error


@pytest.mark.parametrize("n, fail, expected", [
    (3, False, ([0, 1, 2], None)),
    (0, False, ([], None)),
    (2, True, ([], "the maker broke")),  # the items before the error were taken, then it raised
])
def test_a_handoff_carries_a_tasks_items_and_its_error(n, fail, expected):
    assert handed(n, fail) == expected


gate = threading.Event()


@task(cache_policy=NO_CACHE)
def hold(item: int) -> int:
    assert gate.wait(30)
    return item


@flow
def held_fan_out(n: int) -> tuple[int, list]:
    """Items read from the source while the one run in flight waits, then every result."""
    gate.clear()
    read = []

    def counted():
        for i in range(n):
            read.append(i)
            yield i

    def release_later():
        while len(read) < 2:
            threading.Event().wait(0.01)
        threading.Event().wait(0.5)  # room for a feed that ignored the bound to read on
        seen.append(len(read))
        gate.set()

    seen: list = []
    threading.Thread(target=release_later, daemon=True).start()
    results = sorted(f.result() for _, f in submit_bounded(hold, counted(), 1, "item", ahead=1))
    return seen[0], results


def test_the_source_is_read_at_most_ahead_items_beyond_the_runs_in_flight():
    assert held_fan_out(6) == (2, [0, 1, 2, 3, 4, 5])  # one in flight, one read ahead


def test_a_handoffs_maker_waits_while_its_items_are_not_taken():
    cut, made = Handoff(ahead=2), []

    def items():
        for i in range(10):
            made.append(i)
            yield i

    maker = threading.Thread(target=cut.fill, args=(items(),), daemon=True)
    maker.start()
    while len(made) < 3:
        threading.Event().wait(0.01)
    threading.Event().wait(0.5)
    assert len(made) == 3  # two waiting in the handoff, the third waiting for room
    assert list(cut) == list(range(10))
    maker.join(10)
    assert not maker.is_alive()
