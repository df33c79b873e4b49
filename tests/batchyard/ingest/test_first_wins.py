"""The first record in file order wins a key, whatever order the chunks of its batch commit in.

A file of 3 chunks of 1,000 rows, each chunk repeating 300 keys of the chunk before, is loaded
with its chunks committing in reverse order: chunk 0 is held at its `chunk-prepared` pause point
(before its transaction) while chunks 2 and 1 commit, then let go. The table, the ignored records
and every count must be those of the file read front to back.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

from batchyard import faults
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
from batchyard.readers import SourceOptions
from tests.helpers import rows

CHUNK, OVERLAP, CHUNKS = 1_000, 300, 3


def overlapping_users(path: Path) -> dict[int, int]:
    """Write the file; return each key's first row number in it (rows count from 1)."""
    first: dict[int, int] = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "age", "country", "signup_date", "balance"])
        row = 0
        for chunk in range(CHUNKS):
            for offset in range(CHUNK):
                row += 1
                key = chunk * (CHUNK - OVERLAP) + offset + 1
                first.setdefault(key, row)
                writer.writerow([key, f"user{row}@example.com", f"Row {row}", 30, "DE",
                                 "2020-01-01", "1.5"])
    return first


def test_first_record_in_file_order_wins_when_chunks_commit_in_reverse(tmp_path, monkeypatch,
                                                                        db_url):
    source = tmp_path / "overlap.csv"
    first = overlapping_users(source)
    job = resolve_job(str(source), "users", db_url, None, "first-wins")
    options = SourceOptions()
    open_batch(job, CHUNK, options)
    refs, total, _ = plan_batch(job, options, CHUNK)
    assert [r.index for r in refs] == [0, 1, 2] and total == CHUNK * CHUNKS

    marker = tmp_path / "held"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-prepared[0]:1")
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    faults._hits.clear()
    held = threading.Thread(target=process_chunk, args=(job, refs[0]))
    held.start()
    deadline = time.time() + 60
    while not marker.exists():
        assert time.time() < deadline, "chunk 0 never reached its pause point"
        time.sleep(0.02)
    process_chunk(job, refs[2])
    process_chunk(job, refs[1])
    marker.unlink()
    held.join(60)
    order = rows(db_url, "select chunk_index from batchyard_chunks order by committed_at, chunk_index")
    assert order == [(2,), (1,), (0,)]

    final = close_batch(job)
    ignored = CHUNK * CHUNKS - len(first)
    assert (final["status"], final["total"], final["success"], final["failed"], final["ignored"]) \
        == ("completed", CHUNK * CHUNKS, len(first), 0, ignored)
    assert rows(db_url, "select id, _row_number, name from users order by id") == [
        (key, row, f"Row {row}") for key, row in sorted(first.items())]
    # every later record of a key is ignored, naming the row that won
    later = [(row, key) for row, key in _rows_and_keys() if row != first[key]]
    number = "`row_number`" if db_url.startswith("mariadb") else '"row_number"'
    assert rows(db_url, f"select {number}, chunk_index, status, error from batchyard_records "
                        f"order by {number}") == [
        (row, (row - 1) // CHUNK, "ignored",
         f"duplicate key id={key}: already loaded from row {first[key]} of this batch")
        for row, key in later]
    assert rows(db_url, "select chunk_index, success, failed, ignored from batchyard_chunks "
                        "order by chunk_index") == [
        (0, CHUNK, 0, 0), (1, CHUNK - OVERLAP, 0, OVERLAP), (2, CHUNK - OVERLAP, 0, OVERLAP)]


def _rows_and_keys():
    """Every record of the file as (row number, key)."""
    row = 0
    for chunk in range(CHUNKS):
        for offset in range(CHUNK):
            row += 1
            yield row, chunk * (CHUNK - OVERLAP) + offset + 1
