"""Bounded waits (issue 14): a lock held by another real PostgreSQL session, a chunk that cannot
finish within its time limit, an HTTP source that does not answer in time. Each fails as
TIMEOUT_ERROR (after its retries) while the rest goes on, instead of hanging."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from batchyard import faults
from batchyard.demo import write_users
from batchyard.engines import normalise_url
from batchyard.etl.spec import PipelineSpec
from flows.batch_import import batch_import
from flows.etl_pipeline import etl_pipeline
from tests.batchyard.etl.api_server import TOKEN, ApiServer
from tests.helpers import rows, run_to_end


@pytest.mark.postgres
def test_a_row_locked_by_another_session_fails_its_chunk_as_a_timeout(tmp_path, postgres_url, unique_table,
                                                                      monkeypatch):
    source = write_users(tmp_path / "users.csv", 300, bad=False)
    assert batch_import(str(source), db=postgres_url, table=unique_table, chunk_size=100)["status"] == "completed"
    monkeypatch.setenv("BATCHYARD_PG_LOCK_TIMEOUT", "0.5")
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "1")
    other = sa.create_engine(normalise_url(postgres_url)).connect()  # another session, a transaction
    other.exec_driver_sql(f"SELECT * FROM {unique_table} WHERE id = 150 FOR UPDATE")
    release = threading.Timer(30, other.rollback)  # without a bounded wait, the batch waits for this
    release.start()
    try:
        started = time.monotonic()
        summary, state = run_to_end(batch_import, str(source), db=postgres_url, table=unique_table,
                                    chunk_size=100, batch_id=f"{unique_table}-again")
        took = time.monotonic() - started
    finally:
        release.cancel()
        other.rollback()
        other.close()
    try:
        assert state.is_failed() and took < 25
        assert (summary["success"], summary["failed"]) == (200, 100)
        (chunk,) = summary["failed_chunks"]
        assert (chunk["chunk"], chunk["first_row"], chunk["error_code"]) == (1, 101, "TIMEOUT_ERROR")
        assert "canceling statement due to lock timeout" in chunk["cause"]
        resumed = batch_import(str(source), db=postgres_url, table=unique_table, chunk_size=100,
                               batch_id=f"{unique_table}-again")
        assert (resumed["status"], resumed["success"]) == ("completed", 300)
    finally:
        rows(postgres_url, f"drop table {unique_table}")


def test_a_chunk_that_cannot_finish_within_its_limit_fails_and_the_others_go_on(tmp_path, sqlite_url,
                                                                                monkeypatch):
    marker = tmp_path / "paused"
    monkeypatch.setenv("BATCHYARD_CHUNK_TIMEOUT", "1")
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-loaded:2")  # the second chunk stops mid-load
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()
    watchdog = threading.Timer(20, lambda: marker.unlink(missing_ok=True))  # without a limit it would wait
    watchdog.start()
    try:
        source = write_users(tmp_path / "users.csv", 300, bad=False)
        started = time.monotonic()
        summary, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, max_parallel=1,
                                    batch_id="slow-chunk")
        took = time.monotonic() - started
    finally:
        watchdog.cancel()
    assert state.is_failed() and took < 15
    assert (summary["success"], summary["failed"]) == (200, 100)
    assert summary["failed_chunks"] == [{
        "chunk": 1, "first_row": 101, "last_row": 200, "records": 100, "error_code": "TIMEOUT_ERROR",
        "cause": "TIMEOUT_ERROR: the chunk did not finish within 1 s (BATCHYARD_CHUNK_TIMEOUT)"}]
    assert rows(sqlite_url, "select count(*) from users where id between 101 and 200") == [(0,)]


def test_an_api_that_does_not_answer_in_time_fails_the_extract(monkeypatch, tmp_path):
    monkeypatch.setenv("BATCHYARD_HTTP_TIMEOUT", "0.5")
    monkeypatch.setenv("BATCHYARD_ETL_RETRY_SCALE", "0.01")
    monkeypatch.setenv("API_TOKEN", TOKEN)
    with ApiServer() as api:
        spec = PipelineSpec.model_validate({
            "pipeline_id": "slow", "target": {"type": "database", "url": f"sqlite:///{tmp_path / 't.db'}",
                                              "table": "t"},
            "sources": [{"type": "api", "id": "slow-api", "url": api.url + "/slow?seconds=3",
                         "auth_env": "API_TOKEN", "max_retries": 0}]})
        started = time.monotonic()
        state = etl_pipeline(**{n: getattr(spec, n) for n in PipelineSpec.model_fields}, return_state=True)
    assert state.is_failed() and time.monotonic() - started < 20
    assert str(state.result(raise_on_failure=False)).startswith(
        f"extract failed, the run stops: source slow-api: ReadTimeout on {api.url}/slow")
