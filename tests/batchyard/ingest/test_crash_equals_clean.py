"""A run killed (`kill -9`) at any pause point the code has, then resumed, ends with the table a
clean run of the same file gives: the same content (every column but the lineage ones, hashed),
the same winner of every key, and the same ledger (counts, chunks, every rejected or ignored
record with its reason), on SQLite and PostgreSQL.

The file has 5 chunks of 200 rows, each repeating 50 keys of the chunk before with other values,
and an invalid record every 37 rows, so a crash that let a later record win a key, lost a
reject or counted one twice would show.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.conftest import fresh_postgres_database
from tests.crash import ledger_digest, overlapping_users, run_import, start_paused, table_digest
from tests.helpers import rows

POINTS = ["chunk-spooled:2", "spooled:1", "chunk-prepared:2", "chunk-loaded:1", "chunk-loaded:3",
          "chunk-committed:2", "batch-closing:1"]
SOURCE_TREE = Path(__file__).resolve().parents[3] / "batchyard"


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))


def test_every_pause_point_of_the_code_is_killed_at():
    """The list above is every pause point the import path has: a new one must be added."""
    found = set()
    for path in SOURCE_TREE.rglob("*.py"):
        found |= set(re.findall(r'pause_point\("([a-z-]+)"', path.read_text()))
    assert found == {point.split(":")[0] for point in POINTS}


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_a_pause_point_then_resume_equals_a_clean_run(tmp_path, crash_db, point):
    source = tmp_path / "users.csv"
    winners = overlapping_users(source, chunks=5, chunk=200, overlap=50)
    clean = run_import(source, crash_db, "clean", table="users_clean")
    assert (clean["status"], clean["total"], clean["success"]) == ("completed", 1_000, len(winners))

    process = start_paused(tmp_path, source, crash_db, "crashed", point)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert rows(crash_db, "select status from batchyard_batches where batch_id = 'crashed'") == [
        ("running",)]
    resumed = run_import(source, crash_db, "crashed")

    assert resumed["status"] == "completed"
    assert table_digest(crash_db, "users") == table_digest(crash_db, "users_clean")
    assert rows(crash_db, "select id, _row_number from users order by id") == sorted(winners.items())
    assert ledger_digest(crash_db, "crashed") == ledger_digest(crash_db, "clean")
