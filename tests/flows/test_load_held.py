"""Load held: eight imports at once into one PostgreSQL table with overlapping keys, and two into
one SQLite file at the same time. All complete (a deadlock or a lock wait is retried as a
transient fault, never shown to the user), and each table holds the exact union of its files.

File i holds keys 500*i+1 .. 500*i+2000, so each key is in up to four files; a key's values
depend on the key alone, so whichever batch writes it last, the row is the same.
"""

from __future__ import annotations

import csv
import random
import threading
import time
from pathlib import Path

import pytest

from batchyard import faults
from flows.batch_import import batch_import
from tests.conftest import fresh_postgres_database
from tests.flows.test_transient_faults import task_run_counts
from tests.helpers import rows, run_to_end

ROWS, STEP = 2_000, 500


def user(key: int) -> tuple:
    return (key, f"user{key}@example.com", f"User {key}", 20 + key % 50, "DE", "2020-01-01",
            key + 0.5)


def write_part(path: Path, i: int) -> range:
    """The keys in an order of the file's own, so that concurrent chunks lock rows in different
    orders (deadlocks, which must be retried)."""
    keys = range(STEP * i + 1, STEP * i + ROWS + 1)
    order = list(keys)
    random.Random(i).shuffle(order)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "age", "country", "signup_date", "balance"])
        writer.writerows(user(k) for k in order)
    return keys


@pytest.fixture
def shared_postgres(postgres_url):
    yield from fresh_postgres_database(postgres_url)


@pytest.mark.slow
def test_ten_imports_at_once_with_overlapping_keys_give_the_exact_union(
        tmp_path, shared_postgres, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "6")
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[0.2, 0.5, 1, 1, 2, 2]")
    sqlite = f"sqlite:///{tmp_path / 'shared.db'}"
    jobs = [(shared_postgres, i) for i in range(8)] + [(sqlite, i) for i in range(2)]
    keys = {}
    for n, (_, i) in enumerate(jobs):
        keys[n] = write_part(tmp_path / f"part{n}.csv", i)
    results: dict[int, tuple] = {}
    together = threading.Barrier(len(jobs))

    def hold(name: str, which: object) -> None:
        """Every import waits once spooled, so that all ten load at the same time."""
        if name == "spooled":
            together.wait(120)

    faults.inject(hold)

    def run(n: int) -> None:
        db, _ = jobs[n]
        results[n] = run_to_end(batch_import, str(tmp_path / f"part{n}.csv"), db=db,
                                chunk_size=250, max_parallel=2, batch_id=f"held-{n}")

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(600)
    finally:
        faults.inject(None)

    assert sorted(results) == list(range(len(jobs)))
    for n, (summary, state) in results.items():
        assert state.is_completed(), (n, summary)
        assert (summary["status"], summary["total"], summary["success"], summary["failed"],
                summary["ignored"]) == ("completed", ROWS, ROWS, 0, 0)
    for db, parts in ((shared_postgres, range(8)), (sqlite, range(8, 10))):
        union = sorted(set().union(*(keys[n] for n in parts)))
        assert rows(db, "select id, email, name, age, country, signup_date, balance from users "
                        "order by id") == [_as_stored(db, user(k)) for k in union]
        for key, batch in rows(db, "select id, _batch_id from users"):
            assert key in keys[int(batch.removeprefix("held-"))]


def _as_stored(db: str, record: tuple) -> tuple:
    import datetime as dt

    key, email, name, age, country, date, balance = record
    day = date if db.startswith("sqlite") else dt.date.fromisoformat(date)
    return key, email, name, age, country, day, balance


def test_a_deadlock_with_another_session_is_retried_not_shown(tmp_path, shared_postgres,
                                                              monkeypatch):
    """A real deadlock: another session locks key 1 of the table; the chunk, upserting the
    keys in file order, locks the key before it and waits for key 1; the other session then
    asks for that key. PostgreSQL aborts the chunk's transaction (deadlock detected, it waited
    longest); the chunk runs its transaction again at once, in the same task run, and the
    batch completes."""
    import sqlalchemy as sa

    from batchyard.engines import normalise_url

    first = tmp_path / "first.csv"
    write_part(first, 0)
    summary, state = run_to_end(batch_import, str(first), db=shared_postgres, chunk_size=ROWS,
                                batch_id="before")
    assert state.is_completed()
    with first.open() as handle:
        order = [int(r["id"]) for r in csv.DictReader(handle)]
    before_one = order[order.index(1) - 1]  # upserted (and locked) by the chunk before key 1
    marker = tmp_path / "held"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-prepared:1")
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=run_to_end(
        batch_import, str(first), db=shared_postgres, chunk_size=ROWS, batch_id="deadlocked")))
    worker.start()
    while not marker.exists():
        assert worker.is_alive()
        time.sleep(0.05)
    other = sa.create_engine(normalise_url(shared_postgres), poolclass=sa.NullPool)
    deadlocks_before = _deadlocks(other)
    with other.connect() as connection:
        connection.exec_driver_sql("SELECT id FROM users WHERE id = 1 FOR UPDATE")
        marker.unlink()
        time.sleep(0.5)  # the chunk now holds key `before_one` and waits for key 1
        connection.exec_driver_sql(f"SELECT id FROM users WHERE id = {before_one} FOR UPDATE")
        connection.commit()
    worker.join(120)
    summary, state = outcome["result"]
    assert state.is_completed()
    assert (summary["total"], summary["success"]) == (ROWS, ROWS)
    deadline = time.monotonic() + 10  # the server's statistics reach the view within a second
    while _deadlocks(other) == deadlocks_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _deadlocks(other) == deadlocks_before + 1
    other.dispose()
    # redone in the same task run: its run count is 1 once the server has recorded its states
    # (the test's temporary server records them a moment after the flow returns)
    deadline = time.monotonic() + 15
    while (counts := task_run_counts(str(state.state_details.flow_run_id))) != [1] \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert counts == [1]


def _deadlocks(engine) -> int:
    """The deadlocks PostgreSQL broke in the test's database so far."""
    with engine.connect() as connection:
        return connection.exec_driver_sql(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").scalar_one()
