"""Transient faults against real databases made unavailable for a while: chunk tasks retry
with backoff and the batch completes once the database is back, without duplicates."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from batchyard.demo import expected_counts, write_users
from flows.batch_import import batch_import
from tests.helpers import FlakyPostgres, rows

HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
"""



def committed(url: str) -> int:
    try:
        return rows(url, "select count(*) from batchyard_chunks where status='committed'")[0][0]
    except Exception:  # not created yet, or locked right now
        return 0


def task_run_counts(flow_run_id: str) -> list[int]:
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            response = await client._client.post("/task_runs/filter", json={
                "flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200})
            return [t["run_count"] for t in response.json() if t["name"].startswith("import-chunk")]

    return asyncio.run(fetch())


@pytest.fixture
def patient_retries(monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "6")
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[0.5, 0.5, 1, 1, 1, 1]")


def test_sqlite_locked_by_another_process_for_a_while(tmp_path, patient_retries, monkeypatch):
    monkeypatch.setenv("BATCHYARD_SQLITE_BUSY_TIMEOUT", "0.1")
    db_path = tmp_path / "locked.db"
    url = f"sqlite:///{db_path}"
    source = write_users(tmp_path / "users.csv", 2_000)

    def lock_after_first_chunk():
        deadline = time.time() + 60
        while committed(url) < 1 and time.time() < deadline:
            time.sleep(0.01)
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db_path), "2.0"],
                                  stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        holder.wait(30)

    locker = threading.Thread(target=lock_after_first_chunk)
    locker.start()
    summary = batch_import(str(source), db=url, chunk_size=100, max_parallel=2)
    locker.join(60)
    want = expected_counts(2_000)
    assert {k: summary[k] for k in want} == want
    assert summary["status"] == "completed"
    assert rows(url, "select count(*), count(distinct id) from users") == [
        (want["success"], want["success"])]
    assert max(task_run_counts(summary["flow_run_id"])) > 1  # some chunk was retried


@pytest.mark.postgres
def test_postgres_refusing_and_dropping_connections_for_a_while(tmp_path, postgres_url,
                                                                 patient_retries, unique_table):
    flaky = FlakyPostgres(postgres_url)
    admin = flaky.admin
    source = write_users(tmp_path / "users.csv", 2_000)

    def committed_here() -> int:
        if not _has_ledger(admin):
            return 0
        with admin.connect() as connection:
            return connection.exec_driver_sql(
                "select count(*) from batchyard_chunks where status='committed' "
                f"and batch_id in (select batch_id from batchyard_batches "
                f"where target_table = '{unique_table}')").scalar()

    summary = import_through_an_outage(source, flaky.url, committed_here, flaky.cut, flaky.restore,
                                       table=unique_table)
    want = expected_counts(2_000)
    assert {k: summary[k] for k in want} == want
    assert summary["status"] == "completed"
    with admin.connect() as connection:
        assert connection.exec_driver_sql(
            f"select count(*), count(distinct id) from {unique_table}").one() == (
            want["success"], want["success"])
        connection.exec_driver_sql(f"drop table {unique_table}")
    assert max(task_run_counts(summary["flow_run_id"])) > 1


def import_through_an_outage(source, url: str, committed: Callable[[], int], cut: Callable[[], None],
                             restore: Callable[[], None], **options) -> dict:
    """Import `source` into `url` in chunks of 100 while, once `committed()` says a chunk is,
    `cut()` makes the database unavailable for two seconds, until `restore()`."""
    def outage():
        deadline = time.time() + 60
        while not committed() and time.time() < deadline:
            time.sleep(0.01)
        cut()
        time.sleep(2.0)
        restore()

    breaker = threading.Thread(target=outage)
    breaker.start()
    try:
        return batch_import(str(source), db=url, chunk_size=100, max_parallel=2, **options)
    finally:
        breaker.join(60)
        restore()


def _has_ledger(engine) -> bool:
    return sa.inspect(engine).has_table("batchyard_chunks")
