"""What the crash and fault tests share: a file whose chunks overlap in keys and hold bad records,
the batch-import steps run as the flow runs them (chunks in a pool of threads) but without
Prefect, a subprocess that runs them until a pause point (to be killed there), and digests of
what a batch leaves behind (the target's content without lineage, the ledger).

`python -m tests.crash SOURCE DB BATCH_ID TABLE CHUNK_SIZE` runs one import and prints its
summary as JSON.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LINEAGE = ("_batch_id", "_row_number")
USER_COLUMNS = ("id", "email", "name", "age", "country", "signup_date", "balance")


def overlapping_users(path: Path, chunks: int, chunk: int, overlap: int, bad_every: int = 37,
                      first_key: int = 1) -> dict[int, int]:
    """`chunks` chunks of `chunk` rows, each repeating `overlap` keys of the one before (with
    other values), every `bad_every`-th row an invalid email. Returns each key's first valid
    row: the one the table must hold."""
    winners: dict[int, int] = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(USER_COLUMNS)
        row = 0
        for c in range(chunks):
            for offset in range(chunk):
                row += 1
                key = first_key + c * (chunk - overlap) + offset
                bad = row % bad_every == 0
                if not bad:
                    winners.setdefault(key, row)
                email = "not-an-email" if bad else f"user{row}@example.com"
                writer.writerow([key, email, f"Row {row}", 20 + row % 50, "DE", "2020-01-01",
                                 f"{row}.25"])
    return winners


def run_import(source: Path | str, db: str, batch_id: str, table: str | None = None,
               chunk_size: int = 200, parallel: int = 2) -> dict:
    """Open (or take up again), spool, load every chunk (`parallel` at a time) and close a
    batch, as the batch-import flow does. Returns its summary."""
    from batchyard.ingest.chunk import process_chunk
    from batchyard.ingest.job import resolve_job
    from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
    from batchyard.ingest.summary import summary
    from batchyard.readers import SourceOptions

    job = resolve_job(str(source), "users", db, table, batch_id)
    options = SourceOptions()
    open_batch(job, chunk_size, options)
    refs, _, _ = plan_batch(job, options, chunk_size)
    with ThreadPoolExecutor(parallel) as pool:
        for future in [pool.submit(process_chunk, job, ref) for ref in refs]:
            future.result()
    return summary(close_batch(job))


def start_paused(tmp_path: Path, source: Path, db: str, batch_id: str, point: str,
                 table: str | None = None, chunk_size: int = 200) -> subprocess.Popen:
    """`python -m tests.crash` paused at `point` (`NAME:N`); returns once it is there."""
    marker = tmp_path / f"paused-{batch_id}"
    env = {**os.environ, "BATCHYARD_PAUSE_AT": point, "BATCHYARD_PAUSE_FILE": str(marker)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash", str(source), db, batch_id, table or "",
         str(chunk_size)], env=env, cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the import ended before {point}: {process.stderr.read()[-3000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"the import never reached {point}")
        time.sleep(0.02)
    return process


def table_digest(db: str, table: str, key: str = "id") -> tuple[int, str]:
    """The number of rows and a SHA-256 of every column but the lineage ones, in key order."""
    from tests.helpers import rows

    names = [c for c in USER_COLUMNS if c not in LINEAGE]
    found = rows(db, f"select {', '.join(names)} from {table} order by {key}")
    digest = hashlib.sha256()
    for record in found:
        digest.update(repr(tuple(str(v) for v in record)).encode())
    return len(found), digest.hexdigest()


def ledger_digest(db: str, batch_id: str) -> tuple:
    """The batch's status and counts, and every failed or ignored record with its reason."""
    from tests.helpers import rows

    number = "`row_number`" if db.startswith("mariadb") else '"row_number"'
    counts = rows(db, "select status, total, success, failed, ignored from batchyard_batches "
                      f"where batch_id = '{batch_id}'")
    records = rows(db, f"select {number}, status, error from batchyard_records "
                       f"where batch_id = '{batch_id}' order by {number}")
    chunks = rows(db, "select chunk_index, status, success, failed, ignored from batchyard_chunks "
                      f"where batch_id = '{batch_id}' order by chunk_index")
    return counts, records, chunks


if __name__ == "__main__":
    source_, db_, batch_, table_, size_ = sys.argv[1:6]
    print(json.dumps(run_import(source_, db_, batch_, table_ or None, int(size_)), default=str))
