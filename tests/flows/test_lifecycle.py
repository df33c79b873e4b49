"""Batch lifecycle against real processes: kill -9 and resume, no double start, stop."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from batchyard import faults
from batchyard.demo import expected_counts, write_users
from batchyard.ingest.lifecycle import request_stop
from flows.batch_import import batch_import
from tests.helpers import (
    batchyard_command,
    cli_env,
    latest_artifact,
    recorded_state,
    refuse_ids,
    rows,
    run_to_end,
)


def start_paused(tmp_path: Path, api: str, source: Path, db: str, batch_id: str, point: str):
    marker = tmp_path / f"paused-{point.replace(':', '-')}"
    env = cli_env(tmp_path, api, BATCHYARD_PAUSE_AT=point, BATCHYARD_PAUSE_FILE=str(marker))
    process = subprocess.Popen(
        [batchyard_command(), "import", str(source), "--db", db, "--chunk-size", "200",
         "--max-parallel", "2", "--batch-id", batch_id],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 180
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"import ended before {point}: {process.stderr.read()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"import never reached {point}")
        time.sleep(0.1)
    return process


def run_cli(tmp_path: Path, api: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([batchyard_command(), *args], env=cli_env(tmp_path, api),
                          capture_output=True, text=True, timeout=300)


def assert_complete_and_exact(db: str, batch_id: str, rows_in_file: int) -> None:
    want = expected_counts(rows_in_file)
    assert rows(db, "select count(*), count(distinct id) from users") == [
        (want["success"], want["success"])]
    assert rows(db, f"select status, total, success, failed, ignored from batchyard_batches "
                    f"where batch_id = '{batch_id}'") == [
        ("completed", want["total"], want["success"], want["failed"], want["ignored"])]
    assert rows(db, "select status, count(*) from batchyard_records group by 1 order by 1") == [
        ("failed", want["failed"]), ("ignored", want["ignored"])]
    assert rows(db, "select count(*), sum(n_rows) from batchyard_chunks where status='committed'"
                ) == [(5, rows_in_file)]
    assert rows(db, "select count(*) from batchyard_chunks where status<>'committed'") == [(0,)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    ["spooled:1", "chunk-loaded:1", "chunk-loaded:3", "chunk-committed:2", "batch-closing:1"],
    ids=["early", "mid-chunk", "mid-chunk-later", "between-chunks", "final-bookkeeping"],
)
def test_kill_9_then_resume_loads_every_record_exactly_once(tmp_path, prefect_server, point):
    source = write_users(tmp_path / "users.csv", 1_000)
    db = f"sqlite:///{tmp_path / 'crash.db'}"
    process = start_paused(tmp_path, prefect_server, source, db, "crash-1", point)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert rows(db, "select status from batchyard_batches") == [("running",)]
    committed_before = rows(db, "select count(*) from batchyard_chunks where status='committed'")

    resumed = run_cli(tmp_path, prefect_server, "resume", "crash-1", "--db", db, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "completed"
    assert_complete_and_exact(db, "crash-1", 1_000)
    if point.startswith("batch-closing"):
        assert committed_before == [(5,)]


@pytest.mark.slow
def test_second_start_is_refused_while_the_first_lives_and_allowed_after_kill(
        tmp_path, prefect_server):
    source = write_users(tmp_path / "users.csv", 1_000)
    db = f"sqlite:///{tmp_path / 'double.db'}"
    first = start_paused(tmp_path, prefect_server, source, db, "twice", "chunk-committed:1")
    second = run_cli(tmp_path, prefect_server, "import", str(source), "--db", db,
                     "--batch-id", "twice")
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"error: batch twice is already running (pid {first.pid} on {os.uname().nodename}); "
        "stop it with: batchyard stop twice")
    listed = run_cli(tmp_path, prefect_server, "list", "--db", db, "--json")
    assert json.loads(listed.stdout)[0]["stale"] is False

    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    listed = run_cli(tmp_path, prefect_server, "list", "--db", db)
    assert "running*" in listed.stdout and "process is gone" in listed.stdout
    resumed = run_cli(tmp_path, prefect_server, "import", str(source), "--db", db,
                      "--batch-id", "twice", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert_complete_and_exact(db, "twice", 1_000)


def test_stop_between_chunks_then_resume(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 2_000)
    outcome: dict = {}

    def run():
        outcome["summary"], outcome["state"] = run_to_end(
            batch_import, str(source), db=sqlite_url, chunk_size=100, max_parallel=1,
            batch_id="stop-me")

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if rows(sqlite_url, "select count(*) from batchyard_chunks "
                                "where status='committed'")[0][0] >= 2:
                break
        except Exception:  # the ledger tables may not exist yet
            pass
        time.sleep(0.02)
    request_stop(sqlite_url, "stop-me")
    worker.join(120)
    stopped = outcome["summary"]
    assert stopped["status"] == "cancelled" and outcome["state"].is_cancelled()
    recorded = recorded_state(outcome["state"])  # issue 14: Cancelled in Prefect too, not Completed
    done_before = stopped["success"] + stopped["failed"] + stopped["ignored"]
    assert recorded.type.value == "CANCELLED"
    # stopped while the file was still being read: the spool stays a few chunks ahead of the load
    assert not stopped["source_read"] and done_before < stopped["total"] < 2_000
    assert stopped["total"] == rows(sqlite_url, "select sum(n_rows) from batchyard_chunks")[0][0]
    assert recorded.message == (
        f"batch stop-me cancelled (stopped on request) after {done_before:,} of "
        f"{stopped['total']:,} records read so far: "
        f"{stopped['success']:,} loaded, {stopped['failed']:,} failed, {stopped['ignored']:,} ignored; "
        f"resume it with: batchyard resume stop-me --db {sqlite_url}")
    committed = rows(sqlite_url, "select count(*), coalesce(sum(success + failed + ignored), 0) "
                                 "from batchyard_chunks where status='committed'")[0]
    assert 2 <= committed[0] < 20
    assert stopped["success"] + stopped["failed"] + stopped["ignored"] == committed[1]
    assert rows(sqlite_url, "select count(*) from users") == [(stopped["success"],)]
    progress = latest_artifact("batch-stop-me-progress")
    done = committed[1]
    assert progress["data"] == round(100.0 * done / stopped["total"], 2)
    assert (f"{done:,} of {stopped['total']:,} records read so far ({stopped['success']:,} loaded"
            in progress["description"])

    resumed = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="stop-me")
    want = expected_counts(2_000)
    assert {k: resumed[k] for k in want} == want
    assert resumed["status"] == "completed"
    assert rows(sqlite_url, "select count(*) from users") == [(want["success"],)]


def test_failed_chunk_is_resumable_once_the_cause_is_gone(tmp_path, sqlite_url, monkeypatch):
    """A trigger in the target refuses one chunk's rows (say, a maintenance rule): the chunk is
    retried, marked failed, its records counted; after the trigger is dropped, resume finishes."""
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "1")
    source = write_users(tmp_path / "users.csv", 500, bad=False)
    refuse_ids(tmp_path, sqlite_url, 201, 300)
    first, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, batch_id="fix-me")
    assert (first["status"], first["success"], first["failed"]) == ("failed", 400, 100)
    assert state.is_failed()
    assert first["error_code"] == "PROCESSING_ERROR"
    assert rows(sqlite_url, "select chunk_index, status, error_code from batchyard_chunks "
                            "where batch_id='fix-me' and status <> 'committed'") == [
        (2, "failed", "PROCESSING_ERROR")]
    rows(sqlite_url, "drop trigger maintenance")
    resumed = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="fix-me")
    assert (resumed["status"], resumed["success"], resumed["failed"]) == ("completed", 500, 0)
    assert rows(sqlite_url, "select count(*), count(distinct id) from users") == [(500, 500)]


def test_lock_wait_that_outlasts_the_retries_is_a_timeout_error(tmp_path, sqlite_url,
                                                                  monkeypatch):
    """Another process takes the SQLite write lock after the first chunk and holds it longer
    than the chunk retries wait: those chunks fail as TIMEOUT_ERROR, the others are kept, and
    the resume completes once the lock is free."""
    import sys

    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "1")
    monkeypatch.setenv("BATCHYARD_SQLITE_BUSY_TIMEOUT", "0.2")
    source = write_users(tmp_path / "users.csv", 300, bad=False)
    db_path = sqlite_url.removeprefix("sqlite:///")

    marker = tmp_path / "first-chunk-committed"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-committed:1")
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()

    def lock_after_first_chunk():
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.01)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(4)",
             db_path], stdout=subprocess.PIPE, text=True)
        holder.stdout.readline()
        marker.unlink()  # the run goes on, into the lock
        holder.wait(30)

    locker = threading.Thread(target=lock_after_first_chunk)
    locker.start()
    first, _ = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, max_parallel=1,
                          batch_id="locked")
    locker.join(60)
    assert (first["status"], first["error_code"]) == ("failed", "TIMEOUT_ERROR")
    assert first["success"] + first["failed"] == 300 and first["failed"] >= 100
    failed = rows(sqlite_url, "select error_code, error from batchyard_chunks "
                              "where status = 'failed'")
    assert failed and all(code == "TIMEOUT_ERROR" and "database is locked" in error
                          for code, error in failed)
    resumed = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="locked")
    assert (resumed["status"], resumed["success"], resumed["failed"]) == ("completed", 300, 0)
    assert rows(sqlite_url, "select count(*), count(distinct id) from users") == [(300, 300)]


def test_auto_chunk_sizes_are_recorded_and_replayed_on_resume(tmp_path, sqlite_url, monkeypatch):
    """--chunk-size auto cuts chunks by the load; a resume must replay the recorded boundaries
    even if the load (and so the sizes auto would choose) has changed."""
    from batchyard import sizing
    from batchyard.ingest.chunk import process_chunk
    from batchyard.ingest.job import resolve_job
    from batchyard.ingest.lifecycle import open_batch, plan_batch
    from batchyard.readers import SourceOptions

    monkeypatch.setenv("BATCHYARD_AUTO_CHUNK_SIZES", "[70, 150, 400]")
    loads = itertools.cycle([0.9, 0.1, 0.6])
    monkeypatch.setattr(sizing, "cpu_busy_fraction", lambda: next(loads))
    source = write_users(tmp_path / "users.csv", 1_000)
    job = resolve_job(str(source), "users", sqlite_url, None, "auto-1")
    open_batch(job, "auto")
    first, total, _ = plan_batch(job, SourceOptions(), "auto")
    assert [c.n_rows for c in first] == [70, 400, 150, 70, 310]
    assert total == 1_000
    process_chunk(job, first[0])
    # as if this run had crashed here: its owner is gone and has no heartbeat
    rows(sqlite_url, "update batchyard_batches set owner = 'gone:1:0', heartbeat_at = null")

    loads = itertools.cycle([0.1])  # an idle machine now: auto alone would cut 400s
    monkeypatch.setattr(sizing, "cpu_busy_fraction", lambda: next(loads))
    summary = batch_import(str(source), db=sqlite_url, chunk_size="auto", batch_id="auto-1")
    assert summary["status"] == "completed"
    assert rows(sqlite_url, "select n_rows from batchyard_chunks where batch_id='auto-1' "
                            "order by chunk_index") == [(70,), (400,), (150,), (70,), (310,)]
    assert rows(sqlite_url, "select chunk_size from batchyard_batches") == [(150,)]


def test_a_file_appended_to_while_its_first_chunks_load_fails_the_run_and_resumes(
        tmp_path, sqlite_url, monkeypatch):
    """Chunks load while the spool reads on: the spool is held before its third chunk until
    the first two have committed, then the file grows. The run ends Failed with the two
    chunks kept and the message saying how many records were given to the load; once the
    file is complete, the resume finds the recorded chunks unchanged and loads the rest."""
    source = write_users(tmp_path / "users.csv", 300, bad=False)
    marker = tmp_path / "third-chunk-cut"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-spooled[2]:1")
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()

    def append_once_two_chunks_committed():
        deadline = time.time() + 60
        while time.time() < deadline and not (marker.exists() and rows(
                sqlite_url, "select count(*) from batchyard_chunks "
                            "where status = 'committed'") == [(2,)]):
            time.sleep(0.02)
        with source.open("a") as handle:
            handle.write("301,late@example.com,L,30,DE,2020-01-31,1\n")
        marker.unlink()

    writer = threading.Thread(target=append_once_two_chunks_committed)
    writer.start()
    first, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100,
                              max_parallel=2, batch_id="grown")
    writer.join(60)
    assert state.is_failed() and recorded_state(state).is_failed()
    batch = rows(sqlite_url, "select status, error from batchyard_batches")
    assert batch[0][0] == "failed" and batch[0][1].endswith(
        "; only its first 200 records, read before the change, were given to the load: "
        "resume the batch once the file is complete, or import it again with --fresh")
    assert rows(sqlite_url, "select count(*) from users") == [(200,)]
    monkeypatch.delenv("BATCHYARD_PAUSE_AT")
    resumed = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="grown")
    assert (resumed["status"], resumed["total"], resumed["success"]) == ("completed", 301, 301)
    assert rows(sqlite_url, "select count(*), count(distinct id) from users") == [(301, 301)]
