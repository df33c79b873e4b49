"""A batch's life in the ledger, without Prefect, on a real SQLite file and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from batchyard.demo import expected_counts, write_users
from batchyard.engines import session
from batchyard.errors import BatchStateError, ConfigurationError, SourceError
from batchyard.ingest import ledger
from batchyard.ingest.chunk import fail_chunk, process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lease import owner_id
from batchyard.ingest.lifecycle import (
    check_startable,
    close_batch,
    open_batch,
    plan_batch,
    preflight,
    request_stop,
)
from batchyard.ingest.summary import batch_row
from batchyard.readers import SourceOptions
from tests.helpers import import_without_prefect, rows

NOW = dt.datetime.now(dt.UTC)


def _batch(status: str, owner: str | None = None) -> dict:
    return {"batch_id": "b1", "status": status, "success": 5, "owner": owner, "heartbeat_at": NOW}


@pytest.mark.parametrize("batch, fresh", [
    (None, False),
    (_batch("failed"), False),
    (_batch("cancelled"), False),
    (_batch("completed"), True),
    ({**_batch("running", "other-host:1:0"), "heartbeat_at": NOW - dt.timedelta(minutes=5)}, False),
])
def test_startable_batches(batch, fresh):
    """New, failed, cancelled, completed with --fresh, and running on another host whose lease
    ran out."""
    assert check_startable(batch, fresh) is None


@pytest.mark.parametrize("batch, message", [
    (_batch("completed"), "batch b1 already completed (5 loaded); pass --fresh to import it again"),
    (_batch("running", owner_id()), "batch b1 is already running (pid "),
])
def test_batches_that_may_not_start(batch, message):
    with pytest.raises(BatchStateError) as caught:
        check_startable(batch, fresh=False)
    assert str(caught.value).startswith(message)


def test_open_batch_creates_ledger_and_table_and_owns_the_batch(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 10, bad=False)
    job = resolve_job(str(source), "users", db_url, None, "b-open")
    batch = open_batch(job, 4, SourceOptions())
    assert (batch["status"], batch["owner"], batch["chunk_size"]) == ("running", owner_id(), 4)
    assert rows(db_url, "select count(*) from users") == [(0,)]
    with pytest.raises(BatchStateError, match="already running"):
        open_batch(job, 4, SourceOptions())


def test_plan_records_boundaries_and_a_changed_source_is_refused(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 10, bad=False)
    job = resolve_job(str(source), "users", db_url, None, "b-plan")
    open_batch(job, 4, SourceOptions())
    todo, total, warnings = plan_batch(job, SourceOptions(), 4)
    assert ([(c.first_row, c.n_rows) for c in todo], total, warnings) == ([(1, 4), (5, 4), (9, 2)], 10, [])
    process_chunk(job, todo[0])
    again, _, _ = plan_batch(job, SourceOptions(), 4)
    assert [c.index for c in again] == [1, 2]  # the committed chunk is not planned again
    write_users(source, 12, bad=False)
    with pytest.raises(BatchStateError, match=r"no longer matches the recorded chunks \(3 recorded, 4 now\)"):
        plan_batch(job, SourceOptions(), 4)


def test_close_batch_writes_rejects_and_completes(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 300)
    summary = import_without_prefect(source, db_url, chunk_size=100, batch_id="b-close")
    want = expected_counts(300)
    assert {k: summary[k] for k in want} == want
    assert summary["status"] == "completed"
    assert summary["rejects_file"] == str(tmp_path / "u.b-close.rejects.csv")
    lines = (tmp_path / "u.b-close.rejects.csv").read_text().splitlines()
    assert len(lines) == 1 + want["failed"]


def test_a_failed_chunk_fails_the_batch_and_a_stopped_one_cancels(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 10, bad=False)
    job = resolve_job(str(source), "users", db_url, None, "b-fail")
    open_batch(job, 5, SourceOptions())
    first, second = plan_batch(job, SourceOptions(), 5)[0]
    process_chunk(job, first)
    fail_chunk(job, second, "PROCESSING_ERROR: OperationalError: database is locked")
    final = close_batch(job)
    assert (final["status"], final["error"], final["success"], final["failed"]) == (
        "failed", "1 chunk(s) failed: chunk 1, rows 6-10 (5 records): PROCESSING_ERROR: "
                  "OperationalError: database is locked", 5, 5)
    open_batch(job, 5, SourceOptions())  # a resume: the failed chunk is pending again
    assert batch_row(db_url, "b-fail")["failed"] == 0
    request_stop(db_url, "b-fail")
    assert close_batch(job, cancelled=True)["status"] == "cancelled"


def test_stop_refuses_a_batch_that_is_not_running(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 3, bad=False)
    import_without_prefect(source, db_url, batch_id="b-done")
    with pytest.raises(BatchStateError, match="no batch 'nope'"):
        request_stop(db_url, "nope")
    with pytest.raises(BatchStateError, match="batch b-done is completed, not running"):
        request_stop(db_url, "b-done")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"fmt": "xml"}, ConfigurationError, "invalid source option: format: unknown format 'xml'"),
    ({"table": "bad name"}, ConfigurationError, "invalid table name 'bad name'"),
    ({"batch_id": "b;1"}, ConfigurationError, "invalid batch id 'b;1'"),
    ({"source": "missing.csv"}, SourceError, "missing.csv: no such file"),
])
def test_preflight_refuses_in_one_line(tmp_path, sqlite_url, kwargs, error, message):
    source = write_users(tmp_path / "u.csv", 3, bad=False)
    arguments = {"source": str(source), "schema_name": "users", "db": sqlite_url, "table": None,
                 "batch_id": None, "fmt": None, "delimiter": ",", "encoding": "utf-8", "sheet": None}
    arguments.update(kwargs)
    if arguments["source"] == "missing.csv":
        arguments["source"] = str(tmp_path / "missing.csv")
    with pytest.raises(error) as caught:
        preflight(**arguments)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_ledger_counts_match_the_records_table(tmp_path, db_url):
    source = write_users(tmp_path / "u.csv", 200)
    summary = import_without_prefect(source, db_url, chunk_size=64, batch_id="b-count")
    with session(db_url) as current:
        by_status = dict(current.sql("select status, count(*) from batchyard_records group by status").rows)
        chunk_sums = current.sql("select sum(success), sum(failed), sum(ignored) from batchyard_chunks").rows[0]
    assert by_status == {"failed": summary["failed"], "ignored": summary["ignored"]}
    assert tuple(int(v) for v in chunk_sums) == (summary["success"], summary["failed"], summary["ignored"])
    assert rows(db_url, "select count(*) from users") == [(summary["success"],)]
    assert ledger.FINAL == ("completed", "failed", "cancelled")


def test_a_chunk_file_is_deleted_once_its_chunk_commits(tmp_path, sqlite_url):
    """The spool holds only what is still to load; a retried task of a committed chunk finds no
    file and is skipped, not failed."""
    from pathlib import Path

    source = write_users(tmp_path / "u.csv", 10, bad=False)
    job = resolve_job(str(source), "users", sqlite_url, None, "b-spool")
    open_batch(job, 5, SourceOptions())
    first, second = plan_batch(job, SourceOptions(), 5)[0]
    result = process_chunk(job, first)
    assert (result.success, Path(first.path).exists(), Path(second.path).exists()) == (5, False, True)
    again = process_chunk(job, first)
    assert again.skipped and rows(sqlite_url, "select count(*) from users") == [(5,)]
