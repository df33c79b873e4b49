"""A new batch's plan, streamed: each chunk recorded in the ledger and handed to the load as the
spool cuts it; an interrupted plan resumed from the chunks it recorded; a file that changes
after chunks were handed out refused, saying how many."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from batchyard.demo import expected_counts, write_users
from batchyard.engines import session
from batchyard.errors import BatchStateError, SourceError
from batchyard.ingest import ledger
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, iter_plan, open_batch, plan_batch
from batchyard.ingest.spool import SourcePlan
from batchyard.ingest.summary import summary
from batchyard.readers import SourceOptions
from tests.conftest import fresh_postgres_database
from tests.helpers import FlakyPostgres


def _job(tmp_path, db_url, rows: int = 25, batch_id: str = "streamed"):
    source = write_users(tmp_path / "users.csv", rows)
    job = resolve_job(str(source), "users", db_url, None, batch_id)
    open_batch(job, 10, SourceOptions())
    return job


def _ledger(job) -> tuple[list[tuple], dict]:
    with session(job.db) as connection:
        chunk_rows = [(c["chunk_index"], c["first_row"], c["n_rows"], c["status"])
                      for c in ledger.planned_chunks(connection, job.batch_id)]
        batch = ledger.get_batch(connection, job.batch_id)
    return chunk_rows, {k: batch[k] for k in ("total", "chunks", "stage")}


def test_each_chunk_is_recorded_and_handed_out_before_the_next_is_read(tmp_path, db_url):
    job = _job(tmp_path, db_url)
    result = SourcePlan([], [], 0)
    plan = iter_plan(job, SourceOptions(), 10, result)
    first = next(plan)
    assert (first.index, first.first_row, first.n_rows) == (0, 1, 10)
    assert _ledger(job) == ([(0, 1, 10, "pending")], {"total": 10, "chunks": None, "stage": "spooling"})
    process_chunk(job, first)  # loads while the rest is still unread
    rest = list(plan)
    assert [(c.index, c.first_row, c.n_rows) for c in rest] == [(1, 11, 10), (2, 21, 5)]
    assert result.total == 25
    assert _ledger(job) == ([(0, 1, 10, "committed"), (1, 11, 10, "pending"), (2, 21, 5, "pending")],
                            {"total": 25, "chunks": 3, "stage": "loading"})
    for ref in rest:
        process_chunk(job, ref)
    final = summary(close_batch(job))
    assert {k: final[k] for k in expected_counts(25)} == expected_counts(25)


def test_a_plan_interrupted_after_two_chunks_is_resumed_from_them(tmp_path, db_url):
    job = _job(tmp_path, db_url)
    plan = iter_plan(job, SourceOptions(), 10, SourcePlan([], [], 0))
    first, _ = next(plan), next(plan)
    process_chunk(job, first)
    plan.close()  # a stop (or a crash) while the spool was still reading
    assert _ledger(job) == ([(0, 1, 10, "committed"), (1, 11, 10, "pending")],
                            {"total": 20, "chunks": None, "stage": "spooling"})
    close_batch(job, cancelled=True)
    open_batch(job, 10, SourceOptions())  # the resume
    result, todo = SourcePlan([], [], 0), []
    for ref in iter_plan(job, SourceOptions(), 10, result):
        # each chunk handed out is in the ledger already, the new ones too, and loads now
        assert _ledger(job)[1] == {"total": 25, "chunks": 3, "stage": "loading"}
        process_chunk(job, ref)
        todo.append((ref.index, ref.first_row, ref.n_rows))
    assert result.total == 25 and todo == [(1, 11, 10), (2, 21, 5)]
    final = summary(close_batch(job))
    assert final["status"] == "completed"
    assert {k: final[k] for k in expected_counts(25)} == expected_counts(25)


@pytest.mark.parametrize("interrupted, rows, accepted", [
    (True, 40, True),  # the file grew after the interruption: the recorded chunks still match
    (False, 40, False),  # a complete plan must match as a whole
    (True, 15, False),  # the file shrank below the recorded chunks
])
def test_a_resumed_plan_must_match_the_chunks_it_recorded(tmp_path, db_url, interrupted, rows,
                                                          accepted):
    job = _job(tmp_path, db_url)
    if interrupted:
        plan = iter_plan(job, SourceOptions(), 10, SourcePlan([], [], 0))
        next(plan), next(plan)
        plan.close()
    else:
        plan_batch(job, SourceOptions(), 10)
    close_batch(job, cancelled=True)
    write_users(tmp_path / "users.csv", rows)
    open_batch(job, 10, SourceOptions())
    if accepted:
        todo, total, _ = plan_batch(job, SourceOptions(), 10)
        assert total == rows and [c.index for c in todo] == [0, 1, 2, 3]
    else:
        with pytest.raises(BatchStateError, match="the source no longer matches the recorded chunks"):
            plan_batch(job, SourceOptions(), 10)


def test_a_file_that_changes_after_chunks_were_handed_out_says_how_many(tmp_path, sqlite_url):
    job = _job(tmp_path, sqlite_url, rows=30)
    plan = iter_plan(job, SourceOptions(), 10, SourcePlan([], [], 0))
    next(plan), next(plan)
    with open(job.source, "a") as handle:
        handle.write("999,late@example.com,L,30,DE,2020-01-31,1\n")
    with pytest.raises(SourceError) as caught:
        list(plan)
    assert str(caught.value) == (
        f"{job.source}: the file changed while it was read (size "
        f"{(tmp_path / 'users.csv').stat().st_size - 42:,} -> "
        f"{(tmp_path / 'users.csv').stat().st_size:,} bytes); only its first 20 records, read "
        "before the change, were given to the load: resume the batch once the file is complete, "
        "or import it again with --fresh")
    assert _ledger(job)[0] == [(0, 1, 10, "pending"), (1, 11, 10, "pending")]  # the third never was


@pytest.mark.postgres
@pytest.mark.parametrize("retries, back_after, recorded", [
    (6, 1.0, 3),  # the database is back within the retries: every chunk recorded once
    (1, None, 1),  # it stays away: the fault is raised, the chunk handed out stays recorded
])
def test_the_plan_records_its_chunks_through_a_dropped_connection(
        tmp_path, postgres_url, monkeypatch, caplog, retries, back_after, recorded):
    """The plan's task cannot run again once it has handed chunks out, so its own ledger
    writes retry a transient fault."""
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", str(retries))
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[0.3, 0.3, 0.5, 0.5, 1, 1]")
    for database in fresh_postgres_database(postgres_url):
        flaky = FlakyPostgres(database)
        job = _job(tmp_path, flaky.url)
        plan = iter_plan(job, SourceOptions(), 10, SourcePlan([], [], 0))
        assert next(plan).index == 0
        flaky.cut()
        if back_after is not None:
            threading.Timer(back_after, flaky.restore).start()
            assert [c.index for c in plan] == [1, 2]
        else:
            with pytest.raises(sa.exc.OperationalError):
                list(plan)
            flaky.restore()
        assert "the plan's ledger step failed" in caplog.text
        with session(database) as connection:
            chunks = ledger.planned_chunks(connection, job.batch_id)
            assert [c["chunk_index"] for c in chunks] == list(range(recorded))
        flaky.admin.dispose()


def test_a_chunk_recorded_twice_is_one_row(tmp_path, db_url):
    """The plan's writes are retried after a fault; one whose commit landed before the
    connection dropped is written again."""
    job = _job(tmp_path, db_url)
    plan = iter_plan(job, SourceOptions(), 10, SourcePlan([], [], 0))
    first = next(plan)
    plan.close()
    with session(job.db, write=True) as connection:
        ledger.record_chunk(connection, job.batch_id, first, 10)
    assert _ledger(job) == ([(0, 1, 10, "pending")], {"total": 10, "chunks": None, "stage": "spooling"})
