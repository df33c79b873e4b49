"""Keyless tables: rows appended with a row identity (batch, row number), so resume, retry and
a fresh run stay exact, and the same file appended twice by accident is refused."""

from __future__ import annotations

import pytest

from batchyard.errors import BatchStateError
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, fail_batch, open_batch, plan_batch
from batchyard.ingest.retry import begin_retry, job_for, retry_chunk, spool_retry
from batchyard.ingest.spool import spool_dir
from batchyard.ingest.summary import summary
from batchyard.readers import SourceOptions
from tests.helpers import fix_rejects, import_without_prefect, rows

SCHEMA = "tests.batchyard.ingest.fidelity_schemas:DeclaredKeyless"
LINES = ["UA,1", "UA,1", "AA,2", "B6,x", "UA,1", "DL,7", "AA,2"]  # repeats: no key, so all load


def _retry(db: str, batch_id: str, fixed) -> dict:
    """`batchyard retry --from FIXED` without Prefect: the counts of its outcomes."""
    job = job_for(db, batch_id)
    begin_retry(job)
    totals: dict[str, int] = {}
    for ref in spool_retry(job, spool_dir(batch_id + "-retry"), 7, str(fixed)):
        for key, value in vars(retry_chunk(job, ref, 3)).items():
            totals[key] = totals.get(key, 0) + value
    close_batch(job)
    return totals


def _file(tmp_path, lines=LINES, name="flights.csv"):
    path = tmp_path / name
    path.write_text("carrier,flight\n" + "\n".join(lines) + "\n")
    return path


def _start(path, db, batch_id=None, fresh=False):
    job = resolve_job(str(path), SCHEMA, db, "flights", batch_id)
    open_batch(job, 2, SourceOptions(), fresh=fresh)
    return job, plan_batch(job, SourceOptions(), 2)[0]


def test_every_record_is_appended_with_its_batch_and_row(tmp_path, db_url):
    result = import_without_prefect(_file(tmp_path), db_url, chunk_size=2, schema=SCHEMA)
    assert (result["total"], result["success"], result["failed"], result["ignored"]) == (7, 6, 1, 0)
    assert rows(db_url, "select carrier, flight, _row_number from flights order by _row_number") == [
        ("UA", 1, 1), ("UA", 1, 2), ("AA", 2, 3), ("UA", 1, 5), ("DL", 7, 6), ("AA", 2, 7)]
    assert rows(db_url, "select count(distinct _batch_id) from flights") == [(1,)]


def test_the_same_content_in_a_new_batch_is_refused_unless_fresh(tmp_path, db_url):
    first = import_without_prefect(_file(tmp_path), db_url, chunk_size=2, schema=SCHEMA)
    copy = _file(tmp_path, name="copy.csv")  # another name, the same bytes
    with pytest.raises(BatchStateError) as caught:
        _start(copy, db_url)
    digest = rows(db_url, f"select content_hash from batchyard_batches where batch_id = '{first['batch_id']}'")
    assert str(caught.value) == (
        f"{copy}: the same content (sha256 {digest[0][0][:12]}) with the same options was already "
        f"imported into keyless table flights by batch {first['batch_id']} (completed, 6 rows "
        "appended); importing it again appends every row again: pass --fresh if that is meant")
    job, chunks = _start(copy, db_url, fresh=True)
    for ref in chunks:
        process_chunk(job, ref)
    assert summary(close_batch(job))["success"] == 6
    assert rows(db_url, "select count(*), count(distinct _batch_id) from flights") == [(12, 2)]
    other = import_without_prefect(_file(tmp_path, LINES[:3], "other.csv"), db_url, chunk_size=2,
                                   schema=SCHEMA)
    assert other["success"] == 3  # other content loads as usual


def test_resume_and_a_repeated_chunk_write_each_row_once(tmp_path, db_url):
    job, chunks = _start(_file(tmp_path), db_url, batch_id="k-resume")
    process_chunk(job, chunks[0])
    assert process_chunk(job, chunks[0]).skipped  # a retried task of a committed chunk
    fail_batch(job, "worker lost", "PROCESSING_ERROR")
    job, chunks = _start(_file(tmp_path), db_url, batch_id="k-resume")
    assert [c.index for c in chunks] == [1, 2, 3]
    for ref in chunks:
        process_chunk(job, ref)
    result = summary(close_batch(job))
    assert (result["status"], result["success"], result["failed"]) == ("completed", 6, 1)
    assert rows(db_url, "select _row_number from flights order by _row_number") == [
        (1,), (2,), (3,), (5,), (6,), (7,)]


def test_a_fresh_run_of_the_same_batch_replaces_its_rows(tmp_path, db_url):
    path = _file(tmp_path)
    import_without_prefect(path, db_url, chunk_size=2, schema=SCHEMA, batch_id="k-again")
    job, chunks = _start(path, db_url, batch_id="k-again", fresh=True)
    for ref in chunks:
        process_chunk(job, ref)
    close_batch(job)
    assert rows(db_url, "select count(*) from flights") == [(6,)]


def test_a_retried_record_is_appended_once(tmp_path, db_url):
    first = import_without_prefect(_file(tmp_path), db_url, chunk_size=2, schema=SCHEMA,
                                   batch_id="k-retry")

    def fix(record: dict) -> None:
        record["flight"] = "4"

    fixed = fix_rejects(first["rejects_file"], tmp_path / "fixed.csv", fix)
    assert _retry(db_url, "k-retry", fixed)["succeeded"] == 1
    assert _retry(db_url, "k-retry", fixed)["not_failed"] == 1
    assert rows(db_url, "select carrier, flight from flights where _row_number = 4") == [("B6", 4)]
    assert rows(db_url, "select count(*) from flights") == [(7,)]
