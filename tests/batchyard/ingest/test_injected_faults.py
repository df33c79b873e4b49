"""Faults injected at random points, many times over (the way Spring Batch runs its
fault-tolerance tests a thousand times), checked Jepsen style on every key.

Each round imports a small file (4 chunks of 40 rows, each repeating 10 keys of the chunk
before, an invalid email every 37 rows) with faults raised at the pause points: a connection
dropped (on PostgreSQL the chunk's own backend is terminated by the server, inside its
transaction), a commit that fails, and the process killed (the run stops where it is, its
transaction rolled back, and the ledger left as a kill leaves it: running, under a dead owner).
Chunks retry transient faults as the flow's policy does (2 retries), then fail; a failed or
killed batch is resumed until it completes. Then, for every key and record: the table holds the
first valid record of each key and nothing else, every invalid record is failed with its
reason, every later record of a key is ignored naming the winner, none twice, and the counts
add up in the batch and its chunks.

The default run takes 150 rounds on SQLite and 50 on PostgreSQL (under a minute); the slow
variant 300 and 100.
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchyard import faults
from batchyard.engines import normalise_url, session
from batchyard.errors import is_retryable
from batchyard.ingest import ledger
from batchyard.ingest.chunk import fail_chunk, process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
from batchyard.ingest.summary import summary
from batchyard.readers import SourceOptions
from tests.conftest import fresh_postgres_database
from tests.crash import overlapping_users
from tests.helpers import rows

CHUNKS, CHUNK, OVERLAP, BAD_EVERY = 4, 40, 10, 37
CHUNK_POINTS = ("chunk-prepared", "chunk-loaded", "chunk-committed")
DEAD_OWNER = f"{socket.gethostname()}:999999:1"


class Killed(BaseException):
    """The process died here: nothing after this point of the run happens."""


class Injector:
    """At each pause point, with probability `rate`, one of the faults."""

    def __init__(self, rng: random.Random, rate: float, db: str):
        self.rng, self.rate, self.db = rng, rate, db
        self.seen: Counter = Counter()

    def __call__(self, name: str, which: object) -> None:
        if self.rng.random() >= self.rate:
            return
        fault = self.rng.choice(("drop", "commit", "kill") if name in CHUNK_POINTS else ("kill",))
        self.seen[fault] += 1
        if fault == "kill":
            raise Killed(name)
        if fault == "drop" and name == "chunk-loaded" and self.db.startswith("postgresql"):
            terminate_idle_transactions(self.db)  # the chunk's commit then finds it gone
            return
        if fault == "drop":
            raise ConnectionResetError(f"injected at {name}: connection dropped")
        raise RuntimeError(f"injected at {name}: the commit failed")


def terminate_idle_transactions(db: str) -> None:
    engine = sa.create_engine(normalise_url(db), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as connection:
        connection.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
            "current_database() AND pid <> pg_backend_pid() AND state = 'idle in transaction'")
    engine.dispose()


def load_chunk(job, ref) -> None:
    """A chunk task: transient faults retried twice, then the chunk fails (as the flow does)."""
    for attempt in range(3):
        try:
            process_chunk(job, ref)
            return
        except Exception as exc:
            if not is_retryable(exc) or attempt == 2:
                fail_chunk(job, ref, str(exc))
                return


def attempt(job) -> dict | None:
    """One run of the batch; None when it was killed (its ledger left as a kill leaves it)."""
    options = SourceOptions()
    try:
        open_batch(job, CHUNK, options)
        refs, _, _ = plan_batch(job, options, CHUNK)
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(load_chunk, job, ref) for ref in refs]
            for future in futures:
                if future.exception() is not None:
                    pool.shutdown(cancel_futures=True)
                    raise future.exception()
        return summary(close_batch(job))
    except Killed:
        with session(job.db, write=True) as connection:
            connection.execute(ledger.batches.update()
                               .where(ledger.batches.c.batch_id == job.batch_id,
                                      ledger.batches.c.status == "running")
                               .values(owner=DEAD_OWNER))
        return None


def expected(source: Path) -> tuple[dict, set, dict]:
    """From the file itself: each key's winning row and values, the invalid rows, and each
    later row of a key with the row that won."""
    import csv

    winners, bad, later = {}, set(), {}
    with source.open() as handle:
        for row, record in enumerate(csv.DictReader(handle), 1):
            key = int(record["id"])
            if "@" not in record["email"]:
                bad.add(row)
            elif key in winners:
                later[row] = winners[key][0]
            else:
                winners[key] = (row, record["email"], record["name"])
    return winners, bad, later


def check_every_key(db: str, table: str, batch_id: str, source: Path) -> None:
    winners, bad, later = expected(source)
    assert rows(db, f"select id, _row_number, email, name from {table} order by id") == [
        (key, *values) for key, values in sorted(winners.items())]
    number = '"row_number"'
    found = rows(db, f"select {number}, status, error from batchyard_records "
                     f"where batch_id = '{batch_id}' order by {number}")
    assert [r[0] for r in found] == sorted(bad | set(later))  # each record once
    for row, status, error in found:
        if row in bad:
            assert (status, error.split(":")[0]) == ("failed", "email"), (row, error)
        else:
            assert status == "ignored" and error.endswith(f"from row {later[row]} of this batch")
    [(status, total, success, failed, ignored)] = rows(
        db, f"select status, total, success, failed, ignored from batchyard_batches "
            f"where batch_id = '{batch_id}'")
    assert (status, total, success, failed, ignored) == (
        "completed", CHUNKS * CHUNK, len(winners), len(bad), len(later))
    assert rows(db, "select sum(success), sum(failed), sum(ignored) from batchyard_chunks "
                    f"where batch_id = '{batch_id}'") == [(success, failed, ignored)]


def run_rounds(tmp_path: Path, db: str, rounds: int, seed: int) -> Counter:
    rng = random.Random(seed)
    injector = Injector(rng, 0.08, db)
    source = tmp_path / "users.csv"
    overlapping_users(source, CHUNKS, CHUNK, OVERLAP, BAD_EVERY)
    attempts = Counter()
    try:
        for i in range(rounds):
            job = resolve_job(str(source), "users", db, f"t{i}", f"round-{i}")
            faults.inject(injector)
            tries = 0
            while True:
                tries += 1
                assert tries < 30, f"round {i} never completed"
                done = attempt(job)
                if done is not None and done["status"] == "completed":
                    break
            faults.inject(None)
            attempts[tries] += 1
            check_every_key(db, f"t{i}", job.batch_id, source)
    finally:
        faults.inject(None)
    assert injector.seen["kill"] and injector.seen["drop"] and injector.seen["commit"]
    assert sum(n for tries, n in attempts.items() if tries > 1) > 0  # some rounds were resumed
    return injector.seen


@pytest.fixture(params=["sqlite", "postgresql"])
def fault_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'faults.db'}"
    else:
        yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))


def test_random_faults_lose_and_duplicate_nothing(tmp_path, fault_db):
    run_rounds(tmp_path, fault_db, 150 if fault_db.startswith("sqlite") else 50, seed=15)


@pytest.mark.slow
def test_random_faults_many_more_rounds(tmp_path, fault_db):
    run_rounds(tmp_path, fault_db, 300 if fault_db.startswith("sqlite") else 100, seed=1015)
