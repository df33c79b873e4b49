"""What the ledger is read as (issue 14), without Prefect, on SQLite and PostgreSQL: progress and
stage while a batch runs, attempts, and ledgers read without being changed."""

from __future__ import annotations

import pytest

from batchyard.demo import write_users
from batchyard.engines import session
from batchyard.errors import ConfigurationError
from batchyard.ingest.chunk import fail_chunk, process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
from batchyard.ingest.summary import batch_summary, list_batches, metrics, read_ledger
from batchyard.readers import SourceOptions


def test_progress_and_stage_of_a_running_batch(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 10, bad=False)
    job = resolve_job(str(source), "users", db_url, None, "b-run")
    open_batch(job, 5, SourceOptions())
    spooling = batch_summary(db_url, "b-run")
    assert (spooling["status"], spooling["stage"], spooling["total"], spooling["progress_percent"]) == (
        "running", "spooling", 0, 0.0)  # was 100.0 with nothing known yet
    first, second = plan_batch(job, SourceOptions(), 5)[0]
    assert batch_summary(db_url, "b-run")["stage"] == "loading"
    fail_chunk(job, first, "TIMEOUT_ERROR: OperationalError: database is locked", "TIMEOUT_ERROR")
    failed_only = batch_summary(db_url, "b-run")
    assert (failed_only["failed"], failed_only["progress_percent"]) == (5, 0.0)  # was 50.0
    process_chunk(job, second)
    assert batch_summary(db_url, "b-run")["progress_percent"] == 50.0
    final = batch_summary(db_url, close_batch(job)["batch_id"])
    assert (final["status"], final["stage"], final["progress_percent"]) == ("failed", "finished", 50.0)
    assert [(a["attempt"], a["kind"], a["status"]) for a in final["attempt_history"]] == [(1, "import", "failed")]
    assert final["duration_seconds"] == final["attempt_history"][0]["seconds"] > 0


def test_a_ledger_from_an_older_batchyard_is_read_without_being_changed(db_url):
    with session(db_url, write=True) as current:
        current.sql("CREATE TABLE batchyard_batches (batch_id VARCHAR(64) PRIMARY KEY, source TEXT NOT NULL, "
                    "schema_name TEXT NOT NULL, target_table TEXT NOT NULL, status VARCHAR(16) NOT NULL, "
                    "total BIGINT NOT NULL, success BIGINT NOT NULL, failed BIGINT NOT NULL, "
                    "ignored BIGINT NOT NULL, created_at TIMESTAMP NOT NULL, started_at TIMESTAMP, "
                    "finished_at TIMESTAMP, flow_run_id VARCHAR(64), rejects_file TEXT, error TEXT)")
        current.sql("CREATE TABLE batchyard_chunks (batch_id VARCHAR(64), chunk_index INTEGER, first_row BIGINT, "
                    "n_rows INTEGER, status VARCHAR(16), success INTEGER, failed INTEGER, ignored INTEGER, "
                    "error TEXT)")
        current.sql("INSERT INTO batchyard_batches VALUES ('old-1', 's.csv', 'users', 'users', 'completed', 4, "
                    "3, 1, 0, '2026-01-01 10:00:00', '2026-01-01 10:00:00', '2026-01-01 10:00:07', NULL, NULL, "
                    "NULL)")
    with read_ledger(db_url) as current:
        (listed,) = list_batches(current)
        figures = metrics(current)
    summary = batch_summary(db_url, "old-1")
    assert (listed["batch_id"], summary["duration_seconds"], summary["progress_percent"],
            summary["attempt_history"], summary["failed_chunks"]) == ("old-1", 7.0, 100.0, [], [])
    assert (figures["batches"], figures["total_duration_seconds"], figures["attempts"]) == (1, 7.0, 1)
    with session(db_url) as current:
        assert current.describe("batchyard_attempts") is None
        assert "stage" not in current.describe("batchyard_batches")[0]


def test_no_ledger_is_refused(db_url):
    with session(db_url, write=True) as current:
        current.sql("CREATE TABLE mine (id INTEGER)")
    with pytest.raises(ConfigurationError, match="no batchyard ledger in "), read_ledger(db_url):
        pass
