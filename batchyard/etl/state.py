"""Pipeline state kept in the target itself: incremental cursors and failed batches.

Keeping it beside the data (two tables in a database or DuckDB target, a JSON file beside a file
target) means the state moves, is backed up and is lost together with what it describes. Each
target type stores it its own way (`EtlTarget.ensure_state` and the operations after it, in
`batchyard.etl.targets`); this module holds what they share: the record of a failed batch, the
rows they write and the queries the SQL targets read them back with.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from batchyard.etl.extract import Cursor

STATE_TABLE = "batchyard_etl_state"
FAILED_TABLE = "batchyard_etl_failed"

CURSOR_QUERY = (f"SELECT cursor_column, cursor_kind, cursor_value FROM {STATE_TABLE} "
                "WHERE pipeline_id = {p} AND source_id = {p}")
"""A source's cursor; `{p}` is the driver's placeholder."""

FAILED_COLUMNS = ["run_id", "source_id", "batch_index", "n_rows", "path", "error"]
FAILED_QUERY = (f"SELECT {', '.join(FAILED_COLUMNS)} FROM {FAILED_TABLE} "
                "WHERE pipeline_id = {p} ORDER BY recorded_at, source_id, batch_index")
"""A pipeline's failures, oldest first, as `FAILED_COLUMNS`; `{p}` is the driver's placeholder."""


class FailedBatch(BaseModel):
    """A batch that did not load after its retries; its transformed file is kept for a re-run."""

    source_id: str
    batch_index: int
    n_rows: int
    path: str
    error: str


def now() -> str:
    """The time state is recorded at: UTC, ISO 8601 (sorts as text)."""
    return dt.datetime.now(dt.UTC).isoformat()


def cursor_row(pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> dict:
    """A cursor as a row of the state table, its columns in the table's order."""
    return {"pipeline_id": pipeline_id, "source_id": source_id, "cursor_column": cursor.column,
            "cursor_kind": cursor.kind, "cursor_value": cursor.value, "run_id": run_id,
            "updated_at": now()}


def failure_rows(pipeline_id: str, run_id: str, failed: list[FailedBatch]) -> list[dict]:
    """The run's failed batches as rows of the failures table, its columns in the table's order."""
    return [{"pipeline_id": pipeline_id, "run_id": run_id, **f.model_dump(), "recorded_at": now()}
            for f in failed]


def cursor_from_rows(rows: list) -> Cursor | None:
    """The cursor in the result of `CURSOR_QUERY`, or None when there was no row."""
    if not rows:
        return None
    column, kind, value = rows[0]
    return Cursor(column=column, kind=kind, value=value)
