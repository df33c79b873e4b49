"""The early spool: a new batch's source read while the command loads Prefect, taken by the
plan step instead of a second read; refused when anything differs; cleaned up when unused."""

from __future__ import annotations

from batchyard.demo import expected_counts, write_users
from batchyard.ingest import early_spool
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
from batchyard.ingest.spool import spool_dir
from batchyard.ingest.summary import summary
from batchyard.readers import SourceOptions


def _job(tmp_path, sqlite_url, rows: int = 25):
    source = write_users(tmp_path / "users.csv", rows)
    return resolve_job(str(source), "users", sqlite_url, None, None)


def test_the_plan_takes_the_early_spool_and_does_not_read_the_file_again(tmp_path, sqlite_url):
    job, options = _job(tmp_path, sqlite_url), SourceOptions()
    early_spool.start(job, options, 10)
    open_batch(job, 10, options)
    assert early_spool._started[job.batch_id].done.wait(60)  # spooled
    (tmp_path / "users.csv").unlink()  # a second read would now fail
    chunks, total, _ = plan_batch(job, options, 10)
    assert total == 25 and [(c.first_row, c.n_rows) for c in chunks] == [(1, 10), (11, 10), (21, 5)]
    for ref in chunks:
        process_chunk(job, ref)
    result = summary(close_batch(job))
    assert {k: result[k] for k in expected_counts(25)} == expected_counts(25)
    assert not spool_dir(job.batch_id).exists()


def test_an_early_spool_of_other_chunk_sizes_is_not_used(tmp_path, sqlite_url):
    job, options = _job(tmp_path, sqlite_url), SourceOptions()
    early_spool.start(job, options, 10)
    open_batch(job, 7, options)
    chunks, total, _ = plan_batch(job, options, 7)
    assert total == 25 and [c.n_rows for c in chunks] == [7, 7, 7, 4]
    assert job.batch_id not in early_spool._started


def test_an_early_spool_nobody_takes_is_removed(tmp_path, sqlite_url):
    job = _job(tmp_path, sqlite_url)
    early_spool.start(job, SourceOptions(), 10)
    early_spool.discard(job.batch_id)
    assert not spool_dir(job.batch_id).exists() and job.batch_id not in early_spool._started
