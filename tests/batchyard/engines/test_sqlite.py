"""SQLite sessions: writers of one process take turns, and the write-ahead log is checkpointed."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from batchyard.engines import checkpoint, session
from batchyard.errors import TIMEOUT_ERROR, error_code, is_retryable


def _make_table(url: str) -> None:
    with session(url, write=True) as current:
        current.sql("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, note TEXT)")


def _rows(url: str) -> list[tuple]:
    with session(url) as current:
        return current.sql("SELECT id, note FROM t ORDER BY id").rows


def _waiting_in(thread: threading.Thread, function: str) -> bool:
    """Whether `thread` is blocked inside `function` (looked up in its live stack)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if frame.f_code.co_name == function:
                return True
            frame = frame.f_back
        time.sleep(0.01)
    return False


def test_a_second_writer_of_the_process_queues_behind_the_first_then_writes(sqlite_url):
    """It waits in batchyard's queue, woken when the first commits, not in SQLite's busy
    handler, which polls with sleeps of up to 100 ms."""
    _make_table(sqlite_url)
    holding, release, order = threading.Event(), threading.Event(), []

    def first() -> None:
        with session(sqlite_url, write=True) as current:
            current.sql("INSERT INTO t VALUES (1, 'first')")
            holding.set()
            release.wait(10)
            order.append("first commits")

    def second() -> None:
        holding.wait(10)
        with session(sqlite_url, write=True) as current:
            order.append("second writes")
            current.sql("INSERT INTO t VALUES (2, 'second')")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    holding.wait(10)
    second_queued = _waiting_in(threads[1], "_writer_turn")
    release.set()
    for thread in threads:
        thread.join(10)

    assert second_queued
    assert order == ["first commits", "second writes"]
    assert _rows(sqlite_url) == [(1, "first"), (2, "second")]


def test_a_writer_that_waits_past_the_busy_timeout_gets_a_retryable_timeout(sqlite_url,
                                                                           monkeypatch):
    monkeypatch.setenv("BATCHYARD_SQLITE_BUSY_TIMEOUT", "0.2")
    _make_table(sqlite_url)
    holding, release, errors = threading.Event(), threading.Event(), []

    def holder() -> None:
        with session(sqlite_url, write=True):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(10)
    try:
        with session(sqlite_url, write=True) as current:
            current.sql("INSERT INTO t VALUES (3, 'too late')")
    except Exception as exc:  # noqa: BLE001 - the error is what the test looks at
        errors.append(exc)
    finally:
        release.set()
        thread.join(10)

    assert len(errors) == 1
    assert "database is locked: another writer of this process" in str(errors[0])
    assert error_code(errors[0]) == TIMEOUT_ERROR and is_retryable(errors[0])
    assert _rows(sqlite_url) == []


def test_checkpoint_moves_committed_pages_from_the_log_into_the_database_file(sqlite_url):
    _make_table(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    with session(sqlite_url, write=True) as current:
        for start in range(0, 2000, 500):
            values = ", ".join(f"({i}, '{'x' * 200}')" for i in range(start, start + 500))
            current.sql(f"INSERT INTO t VALUES {values}")
    before = os.path.getsize(path)

    checkpoint(sqlite_url)

    after = os.path.getsize(path)
    assert before < 400_000 < after  # 2,000 rows of 200 bytes now in the file itself
    assert len(_rows(sqlite_url)) == 2000


def test_a_checkpoint_that_cannot_run_raises_nothing(tmp_path):
    """It runs after the chunk has committed: failing there would retry a loaded chunk."""
    missing = tmp_path / "no such directory" / "batch.db"

    assert checkpoint(f"sqlite:///{missing}") is None
    assert not missing.parent.exists()


@pytest.mark.postgres
def test_checkpoint_of_a_postgresql_database_does_nothing(postgres_url):
    checkpoint(postgres_url)
    with session(postgres_url) as current:
        assert current.sql("SELECT 1").rows == [(1,)]


def test_a_new_file_gets_16_kib_pages_and_an_existing_file_keeps_its_own(tmp_path):
    import sqlite3

    old = tmp_path / "old.db"
    plain = sqlite3.connect(old)  # made by another tool, with SQLite's default pages
    plain.execute("CREATE TABLE t (a)")
    plain.commit()
    plain.close()
    for path, expected in ((tmp_path / "new.db", 16384), (old, 4096)):
        with session(f"sqlite:///{path}", write=True) as current:
            current.sql("CREATE TABLE IF NOT EXISTS u (a)")
            assert current.sql("PRAGMA page_size").rows == [(expected,)]


def test_the_bulk_form_of_sqlite_holds_dates_as_text_and_booleans_as_integers(sqlite_url):
    import datetime as dt

    import pyarrow as pa

    from batchyard.engines import bulk_form

    data = pa.table({"day": pa.array([dt.date(2024, 2, 29), None]), "ok": [True, False], "n": [1, 2]})
    assert bulk_form(sqlite_url, data).to_pylist() == [
        {"day": "2024-02-29", "ok": 1, "n": 1}, {"day": None, "ok": 0, "n": 2}]
    assert bulk_form("postgresql://u@127.0.0.1/d", data) is data
