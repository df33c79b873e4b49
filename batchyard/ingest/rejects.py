"""The failed records of a batch as CSV: the rejects file, and `batchyard errors`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TextIO

from batchyard.engines import session
from batchyard.ingest import ledger
from batchyard.ingest.job import ImportJob
from batchyard.schemas import load_schema


def write_failed(db: str, batch_id: str, schema_name: str, handle: TextIO) -> int:
    """Write the failed records as CSV with their original columns first, so they can be fixed
    and imported (or retried) again; `_row_number`, `_error_code` and `_error` come last.
    Returns how many records were written."""
    plan = load_schema(schema_name)
    fields = [*plan.field_names, "_raw", "_row_number", "_error_code", "_error"]
    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    count = 0
    with session(db) as connection:
        for row_number, code, error, payload in ledger.iter_records(connection, batch_id):
            writer.writerow({**json.loads(payload), "_row_number": row_number,
                             "_error_code": code, "_error": error})
            count += 1
    return count


def write_rejects(job: ImportJob, path: Path) -> int:
    """Write the batch's failed records to `path`; returns how many."""
    with path.open("w", newline="") as handle:
        return write_failed(job.db, job.batch_id, job.schema_name, handle)


def rejects_path(source: str, batch_id: str) -> Path:
    """`<source>.<batch_id>.rejects.csv` beside the source."""
    path = Path(source)
    return path.with_name(f"{path.stem}.{batch_id}.rejects.csv")
