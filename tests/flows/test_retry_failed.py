"""The retry-failed flow: failed records re-validated, counters corrected, abandoned past the limit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from batchyard.demo import write_users
from flows.batch_import import batch_import
from flows.retry_failed import retry_failed
from tests.helpers import fix_rejects, rows, run_to_end


def invariant(url: str, batch_id: str) -> tuple:
    return rows(url, f"select total, success + failed + ignored from batchyard_batches "
                     f"where batch_id = '{batch_id}'")[0]


def fix_age_and_country(record: dict) -> None:
    """A user's fix of a rejects file: 6 of the 18 failures of 300 demo users."""
    if record["_error"].startswith(("age:", "country:")):
        record.update(age="40", country="DE")


@pytest.fixture(params=["sqlite", "mariadb"])
def target_url(request, sqlite_url) -> str:
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("mariadb_url")


def test_retry_from_a_corrected_file_then_abandon_the_rest(tmp_path, target_url):
    source = write_users(tmp_path / "users.csv", 300)
    first = batch_import(str(source), db=target_url, chunk_size=100)
    assert (first["failed"], first["ignored"]) == (18, 3)

    fixed = fix_rejects(first["rejects_file"], tmp_path / "fixed.csv", fix_age_and_country)
    second, state = run_to_end(retry_failed, first["batch_id"], db=target_url, from_file=str(fixed),
                               max_retries=2)
    assert state.is_failed()  # issue 14: records are still failing, so the retry run fails
    assert second["retry"] == {"retried": 18, "succeeded": 6, "ignored": 0, "still_failed": 12,
                               "abandoned": 0, "not_failed": 0}
    assert (second["success"], second["failed"], second["ignored"]) == (285, 12, 3)
    assert invariant(target_url, first["batch_id"]) == (300, 300)
    assert rows(target_url, "select count(*) from users") == [(285,)]
    assert rows(target_url, "select age, country from users where _row_number = 20") == [(40, "DE")]

    third, state = run_to_end(retry_failed, first["batch_id"], db=target_url, max_retries=2)
    assert state.is_failed() and "12 abandoned after 2 retries" in state.message
    assert third["retry"] == {"retried": 12, "succeeded": 0, "ignored": 0, "still_failed": 0,
                              "abandoned": 12, "not_failed": 0}
    assert (third["success"], third["failed"]) == (285, 12)
    assert rows(target_url, "select status, retry_count, count(*) from batchyard_records "
                            "group by 1, 2 order by 1, 2") == [
        ("abandoned", 2, 12), ("ignored", 0, 3), ("succeeded", 1, 6)]
    fourth = retry_failed(first["batch_id"], db=target_url, max_retries=2)  # nothing left to retry
    assert fourth["retry"]["retried"] == 0
    assert invariant(target_url, first["batch_id"]) == (300, 300)
    with Path(third["rejects_file"]).open() as handle:
        assert len(list(csv.DictReader(handle))) == 12


def test_retry_with_current_schema_from_ledger_counts_duplicates_as_ignored(tmp_path, sqlite_url):
    path = tmp_path / "users.csv"
    path.write_text("id,email,name,age,country,signup_date,balance\n"
                    "1,a@example.com,A,30,DE,2020-01-01,1\n"
                    "2,b@example.com,B,30,Germany,2020-01-01,1\n"
                    "1,c@example.com,C,30,de ,2020-01-01,1\n")
    first = batch_import(str(path), db=sqlite_url)
    assert (first["success"], first["failed"], first["ignored"]) == (1, 1, 1)
    again, _ = run_to_end(retry_failed, first["batch_id"], db=sqlite_url)
    assert again["retry"] == {"retried": 1, "succeeded": 0, "ignored": 0, "still_failed": 1,
                              "abandoned": 0, "not_failed": 0}
    assert rows(sqlite_url, "select retry_count, status from batchyard_records "
                            "where row_number = 2") == [(1, "failed")]
