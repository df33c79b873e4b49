"""Retrying failed records without Prefect, from the ledger and from a corrected file."""

from __future__ import annotations

import pytest

from batchyard.demo import write_users
from batchyard.errors import BatchStateError, SourceError
from batchyard.ingest.lifecycle import close_batch
from batchyard.ingest.retry import begin_retry, job_for, retry_chunk, spool_retry
from batchyard.ingest.spool import spool_dir
from tests.helpers import fix_rejects, import_without_prefect, rows


def _retry(db: str, batch_id: str, tmp_path, from_file=None, max_retries: int = 3) -> dict:
    job = job_for(db, batch_id)
    begin_retry(job)
    totals = dict.fromkeys(("retried", "succeeded", "ignored", "still_failed", "abandoned", "not_failed"), 0)
    for ref in spool_retry(job, spool_dir(batch_id + "-retry"), 7, str(from_file) if from_file else None):
        for key, value in vars(retry_chunk(job, ref, max_retries)).items():
            if key != "index":
                totals[key] = totals.get(key, 0) + value
    close_batch(job)
    return totals


def test_retry_from_a_fixed_file_then_from_the_ledger_until_abandoned(tmp_path, db_url):
    first = import_without_prefect(write_users(tmp_path / "u.csv", 200), db_url, chunk_size=50,
                                   batch_id="b-retry")
    assert (first["success"], first["failed"], first["ignored"]) == (186, 12, 2)

    def fix_email(record: dict) -> None:  # 2 of the 12
        if record["_error"].startswith("email:"):
            record["email"] = f"fixed{record['_row_number']}@example.com"

    fixed = fix_rejects(first["rejects_file"], tmp_path / "fixed.csv", fix_email)
    assert _retry(db_url, "b-retry", tmp_path, fixed, max_retries=2) == {
        "retried": 12, "succeeded": 2, "ignored": 0, "still_failed": 10, "abandoned": 0, "not_failed": 0}
    assert rows(db_url, "select email from users where _row_number = 8") == [("fixed8@example.com",)]
    assert _retry(db_url, "b-retry", tmp_path, max_retries=2) == {
        "retried": 10, "succeeded": 0, "ignored": 0, "still_failed": 0, "abandoned": 10, "not_failed": 0}
    assert rows(db_url, "select total, success, failed, ignored from batchyard_batches") == [(200, 188, 10, 2)]
    assert rows(db_url, "select status, retry_count, count(*) from batchyard_records group by 1, 2 "
                        "order by 1, 2") == [("abandoned", 2, 10), ("ignored", 0, 2), ("succeeded", 1, 2)]
    assert _retry(db_url, "b-retry", tmp_path)["retried"] == 0  # abandoned records stay put


def test_a_fixed_file_without_row_numbers_is_refused(tmp_path, sqlite_url):
    import_without_prefect(write_users(tmp_path / "u.csv", 100), sqlite_url, batch_id="b-nofix")
    (tmp_path / "fixed.csv").write_text("id,email\n1,a@example.com\n")
    with pytest.raises(SourceError, match="no _row_number column; it says which record a row fixes"):
        _retry(sqlite_url, "b-nofix", tmp_path, tmp_path / "fixed.csv")


def test_retry_of_an_unknown_batch(tmp_path, sqlite_url):
    import_without_prefect(write_users(tmp_path / "u.csv", 3, bad=False), sqlite_url)
    with pytest.raises(BatchStateError, match="no batch 'nope'"):
        job_for(sqlite_url, "nope")
