"""The ledger's writes, each inside one session's transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from batchyard.chunks import ChunkRef
from batchyard.engines import session
from batchyard.errors import BatchStateError
from batchyard.ingest import ledger
from batchyard.ingest.ledger import RecordEntry, RetryOutcome


def _new_batch(db: str, chunks: list[tuple[int, int]]) -> None:
    with session(db, write=True) as current:
        ledger.ensure_ledger(current)
        ledger.create_batch(current, batch_id="b1", source="s.csv", schema_name="users",
                            target_table="users", chunk_size=10, options="{}")
        ledger.start_batch(current, "b1", None, "me:1:1", None)
        refs = [ChunkRef(index=i, path="-", first_row=f, n_rows=n) for i, (f, n) in enumerate(chunks)]
        ledger.record_plan(current, "b1", sum(n for _, n in chunks), refs, 10)


def _counts(db: str) -> tuple:
    with session(db) as current:
        batch = ledger.get_batch(current, "b1")
    return batch["total"], batch["success"], batch["failed"], batch["ignored"]


def _entry(row: int, status: str = "failed") -> RecordEntry:
    return RecordEntry(row, status, "VALIDATION_ERROR", f"age: bad (row {row})", "age: bad", {"age": "x"})


def test_ensure_ledger_is_idempotent_and_adds_missing_columns(db_url):
    with session(db_url, write=True) as current:
        current.sql("CREATE TABLE batchyard_batches (batch_id VARCHAR(64) PRIMARY KEY, source TEXT NOT NULL, "
                    "schema_name TEXT NOT NULL, target_table TEXT NOT NULL, status VARCHAR(16) NOT NULL, "
                    "total BIGINT NOT NULL, success BIGINT NOT NULL, failed BIGINT NOT NULL, "
                    "ignored BIGINT NOT NULL, created_at TIMESTAMP NOT NULL)")
    for _ in range(2):
        with session(db_url, write=True) as current:
            ledger.ensure_ledger(current)
    with session(db_url) as current:
        columns, key = current.describe("batchyard_batches")
    assert {"owner", "heartbeat_at", "stop_requested", "error_code"} <= set(columns) and key == ["batch_id"]


def test_commit_chunk_counts_entries_and_claims_only_once(db_url):
    _new_batch(db_url, [(1, 10), (11, 10)])
    with session(db_url, write=True) as current:
        assert ledger.claim_chunk(current, "b1", 0)
        ledger.commit_chunk(current, "b1", 0, 7, [_entry(2), _entry(3), _entry(4, "ignored")])
    with session(db_url, write=True) as current:
        assert not ledger.claim_chunk(current, "b1", 0)  # committed: never loaded again
    assert _counts(db_url) == (20, 7, 2, 1)
    with session(db_url) as current:
        assert list(ledger.committed_chunks(current, "b1")) == [0]
        assert [r[0] for r in ledger.iter_records(current, "b1")] == [2, 3]


def test_a_failed_chunk_counts_as_failed_until_it_is_reopened(db_url):
    _new_batch(db_url, [(1, 10), (11, 10)])
    with session(db_url, write=True) as current:
        ledger.fail_chunk(current, "b1", 1, 10, "database is locked", "TIMEOUT_ERROR")
        ledger.fail_chunk(current, "b1", 1, 10, "again", "TIMEOUT_ERROR")  # counted once
    assert _counts(db_url) == (20, 0, 10, 0)
    with session(db_url, write=True) as current:
        ledger.reopen_failed_chunks(current, "b1")
    assert _counts(db_url) == (20, 0, 0, 0)
    with session(db_url) as current:
        assert [c["status"] for c in ledger.planned_chunks(current, "b1")] == ["pending", "pending"]


def test_two_starts_of_one_batch_one_wins(db_url):
    _new_batch(db_url, [(1, 5)])
    with session(db_url, write=True) as current, pytest.raises(BatchStateError, match="already running"):
        ledger.start_batch(current, "b1", None, "other:2:2", None)
    with session(db_url, write=True) as current:  # taking over from the dead owner it saw
        ledger.start_batch(current, "b1", None, "other:2:2", "me:1:1")
        assert ledger.get_batch(current, "b1")["owner"] == "other:2:2"


def test_stop_flag_and_finish(db_url):
    _new_batch(db_url, [(1, 5)])
    with session(db_url, write=True) as current:
        assert ledger.request_stop(current, "b1")
        assert not ledger.heartbeat(current, "b1", "me:1:1")  # False: a stop was asked for
        final = ledger.finish_batch(current, "b1", "cancelled")
    assert (final["status"], final["owner"], final["stop_requested"]) == ("cancelled", None, False)


def test_retries_move_the_counters_with_the_records(db_url):
    _new_batch(db_url, [(1, 10)])
    with session(db_url, write=True) as current:
        ledger.commit_chunk(current, "b1", 0, 6, [_entry(2), _entry(3), _entry(4), _entry(5)])
        assert ledger.currently_failed(current, "b1", [2, 3, 4, 5, 6]) == {2: 0, 3: 0, 4: 0, 5: 0}
        ledger.record_retries(current, "b1", [
            RetryOutcome(2, "succeeded", 1), RetryOutcome(3, "ignored", 1, "duplicate", "dup"),
            RetryOutcome(4, "failed", 1, "age: bad", "age: bad"), RetryOutcome(5, "abandoned", 3)])
        assert ledger.currently_failed(current, "b1", [2, 3, 4, 5]) == {4: 1}
    assert _counts(db_url) == (10, 7, 2, 1)


def test_reset_forgets_chunks_and_records(db_url):
    _new_batch(db_url, [(1, 10)])
    with session(db_url, write=True) as current:
        ledger.commit_chunk(current, "b1", 0, 9, [_entry(2)])
        ledger.reset_batch(current, "b1")
        assert ledger.planned_chunks(current, "b1") == []
        assert list(ledger.iter_records(current, "b1")) == []
    assert _counts(db_url) == (0, 0, 0, 0)
