"""What a user is shown is what happened (issue 14): flow run states read back from the Prefect
API, durations over attempts, failed-chunk causes, progress and stage, failure reports."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.demo import write_users
from batchyard.engines import session
from batchyard.ingest.summary import batch_summary, failure_reasons, metrics, read_ledger
from flows.batch_import import batch_import
from flows.etl_pipeline import etl_pipeline
from flows.retry_failed import retry_failed
from tests.helpers import fix_rejects, latest_artifact, recorded_state, refuse_ids, rows, run_to_end

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_a_failed_batch_ends_its_run_failed_with_its_counts_and_chunk_causes(tmp_path, sqlite_url,
                                                                             monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    source = write_users(tmp_path / "users.csv", 300, bad=False)
    refuse_ids(tmp_path, sqlite_url, 101, 200)
    summary, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100,
                                batch_id="f-1")
    cause = "PROCESSING_ERROR: InternalError: INTERNAL: failed to execute: maintenance"
    recorded = recorded_state(state)
    assert recorded.type.value == "FAILED"
    assert recorded.message == (
        f"batch f-1 failed: 200 of 300 records loaded, 100 failed, 0 ignored; 1 chunk(s) failed: "
        f"chunk 1, rows 101-200 (100 records): {cause}; resume it with: batchyard resume f-1 --db {sqlite_url}")
    # the summary, the ledger and the artifacts are written all the same
    assert (summary["status"], summary["success"], summary["failed"]) == ("failed", 200, 100)
    assert summary["failed_chunks"] == [{"chunk": 1, "first_row": 101, "last_row": 200, "records": 100,
                                         "error_code": "PROCESSING_ERROR", "cause": cause}]
    assert rows(sqlite_url, "select status, stage from batchyard_batches where batch_id = 'f-1'") == [
        ("failed", "finished")]
    assert json.loads(latest_artifact("batch-f-1-counts")["data"])[0]["status"] == "failed"
    report = latest_artifact("batch-f-1-report")["data"]
    assert f"| 1 | 101-200 | 100 | PROCESSING_ERROR | {cause} |" in report
    progress = latest_artifact("batch-f-1-progress")
    assert progress["data"] == 66.67  # the failed chunk's records are failed, but not done
    assert progress["description"] == ("Batch f-1: 200 of 300 records (200 loaded, 100 failed, 0 ignored; "
                                       "100 of them in chunks that failed as a whole); stage: failed")

    status = invoke("status", "f-1", "--db", sqlite_url)
    assert status.exit_code == 0
    assert f"  failed chunk 1, rows 101-200 (100 records): {cause}\n" in status.stdout
    shown = json.loads(invoke("status", "f-1", "--db", sqlite_url, "--json").stdout)
    assert (shown["stage"], shown["progress_percent"], shown["failed_chunks"]) == (
        "finished", 66.67, summary["failed_chunks"])
    errors = invoke("errors", "f-1", "--db", sqlite_url)
    assert errors.exit_code == 0
    assert errors.stdout.splitlines() == ['"id","email","name","age","country","signup_date","balance",'
                                          '"_raw","_row_number","_error_code","_error"']
    assert errors.stderr == (f"failed chunk 1, rows 101-200 (100 records): {cause}; its records are not "
                             "listed one by one: resume the batch (batchyard resume f-1) to load them\n")

    # the command prints the summary and exits 3, whatever the run's state
    again = invoke("resume", "f-1", "--db", sqlite_url, "--json")
    assert again.exit_code == 3
    assert json.loads(again.stdout)["run_state"] == "FAILED"


def test_a_batch_with_every_chunk_failed_is_at_0_percent(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    source = write_users(tmp_path / "users.csv", 200, bad=False)
    refuse_ids(tmp_path, sqlite_url, 1, 200)
    summary, _ = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, batch_id="none")
    assert (summary["status"], summary["success"], summary["failed"], summary["progress_percent"]) == (
        "failed", 0, 200, 0.0)
    assert latest_artifact("batch-none-progress")["data"] == 0.0


def test_a_retry_that_leaves_records_failing_ends_failed_and_lists_only_what_still_fails(
        tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 200)
    first = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="r-1")

    def fix_age(record):  # 2 of the 12 failed records
        if record["_error"].startswith("age:"):
            record["age"] = "40"

    fixed = fix_rejects(first["rejects_file"], tmp_path / "fixed.csv", fix_age)
    summary, state = run_to_end(retry_failed, "r-1", db=sqlite_url, from_file=str(fixed))
    recorded = recorded_state(state)
    assert recorded.type.value == "FAILED"
    assert recorded.message.startswith(
        "retry of batch r-1: 12 records retried, 2 loaded, 0 ignored, 10 still failed, 0 abandoned after "
        f"3 retries; the batch has 10 failed records: list them with batchyard errors r-1 --db {sqlite_url}")
    assert summary["retry"]["still_failed"] == 10 and summary["status"] == "completed"
    # the report lists the records that are still failed, not the two the retry loaded
    report = latest_artifact("batch-r-1-report")["data"]
    assert "age: Input should be less than or equal to 150" not in report
    assert "| failed | name: Field required | 2 |" in report
    with session(sqlite_url) as current:
        reasons = failure_reasons(current, "r-1")
    assert sum(n for status, _, n in reasons if status == "failed") == 10
    assert all("age:" not in reason for _, reason, _ in reasons)
    assert invoke("retry", "r-1", "--db", sqlite_url).exit_code == 3  # still failing: not done


def test_an_etl_run_with_a_failed_batch_ends_failed(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with session(source, write=True) as current:
        current.sql("CREATE TABLE events (id INTEGER PRIMARY KEY, amount REAL)")
        current.sql("INSERT INTO events VALUES " + ", ".join(f"({i}, {i * 2.5})" for i in range(1, 11)))
    with session(target, write=True) as current:
        current.sql("CREATE TABLE events (id INTEGER PRIMARY KEY, amount REAL CHECK (amount < 16))")
    state = etl_pipeline(pipeline_id="bad-load", batch_size=5,
                         sources=[{"type": "database", "id": "db", "url": source, "table": "events"}],
                         target={"type": "database", "url": target, "table": "events"},
                         return_state=True)
    recorded = recorded_state(state)
    assert recorded.type.value == "FAILED"
    assert recorded.message.startswith("pipeline bad-load: 5 of 10 records did not load (1 failed batch(es): "
                                       "db#1: load: LoadValidationError: ")
    assert recorded.message.endswith(f"they are recorded in {target} table events (batchyard_etl_failed): "
                                     "run the pipeline again to load them")
    assert state.result(raise_on_failure=False).summary["successful_records"] == 5


HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print(time.time(), flush=True)
time.sleep(float(sys.argv[2]))
print(time.time(), flush=True)
connection.execute("ROLLBACK")
"""


def test_a_wait_for_the_lock_before_the_batch_starts_is_part_of_its_duration(tmp_path, sqlite_url):
    batch_import(str(write_users(tmp_path / "one.csv", 5, bad=False)), db=sqlite_url)  # the ledger
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, sqlite_url.removeprefix("sqlite:///"), "2.5"],
                              stdout=subprocess.PIPE, text=True)
    float(holder.stdout.readline())
    started = time.time()
    summary = batch_import(str(write_users(tmp_path / "users.csv", 100, bad=False)), db=sqlite_url,
                           batch_id="waited")
    released = float(holder.stdout.readline())
    holder.wait(30)
    assert summary["status"] == "completed"
    (attempt,) = summary["attempt_history"]
    assert attempt["kind"] == "import" and attempt["status"] == "completed"
    assert summary["duration_seconds"] == attempt["seconds"] >= released - started - 0.1 > 2.0


def test_durations_add_up_over_import_resume_and_retry(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    source = write_users(tmp_path / "users.csv", 300)
    refuse_ids(tmp_path, sqlite_url, 101, 200)
    run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, batch_id="d-1")
    rows(sqlite_url, "drop trigger maintenance")
    batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="d-1")
    run_to_end(retry_failed, "d-1", db=sqlite_url)
    summary = batch_summary(sqlite_url, "d-1")
    history = summary["attempt_history"]
    assert [(a["attempt"], a["kind"], a["status"]) for a in history] == [
        (1, "import", "failed"), (2, "resume", "completed"), (3, "retry", "completed")]
    assert all(a["seconds"] > 0 for a in history)
    assert summary["attempts"] == 3
    assert abs(summary["duration_seconds"] - sum(a["seconds"] for a in history)) < 0.01
    assert summary["elapsed_seconds"] >= summary["duration_seconds"]
    with read_ledger(sqlite_url) as current:
        figures = metrics(current)
    batch_one = batch_summary(sqlite_url, [b for b in rows(sqlite_url, "select batch_id from batchyard_batches")
                                           if b[0] != "d-1"][0][0])
    assert figures["attempts"] == 4  # the three, and the import refuse_ids made its table with
    assert abs(figures["total_duration_seconds"] - summary["duration_seconds"] - batch_one["duration_seconds"]) < 0.01
    shown = invoke("status", "d-1", "--db", sqlite_url).stdout
    assert f"  duration {summary['duration_seconds']:.2f} s of work in 3 attempts" in shown
    assert "    attempt 2 (resume): " in shown and "    attempt 3 (retry): " in shown
    assert "in 4 attempts" in invoke("metrics", "--db", sqlite_url).stdout
