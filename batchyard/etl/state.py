"""Pipeline state kept in the target itself: incremental cursors and failed batches.

Keeping it beside the data (two tables in a database or DuckDB target, a JSON file beside a file
target) means the state moves, is backed up and is lost together with what it describes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel

from batchyard.engines import session
from batchyard.etl.extract import Cursor
from batchyard.etl.load import duckdb_connection
from batchyard.etl.spec import Target

_metadata = sa.MetaData()
cursors = sa.Table(
    "batchyard_etl_state", _metadata,
    sa.Column("pipeline_id", sa.Text, primary_key=True),
    sa.Column("source_id", sa.Text, primary_key=True),
    sa.Column("cursor_column", sa.Text, nullable=False),
    sa.Column("cursor_kind", sa.Text, nullable=False),
    sa.Column("cursor_value", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text),
    sa.Column("updated_at", sa.Text),
)
failures = sa.Table(
    "batchyard_etl_failed", _metadata,
    sa.Column("pipeline_id", sa.Text, nullable=False),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("source_id", sa.Text, nullable=False),
    sa.Column("batch_index", sa.BigInteger, nullable=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("recorded_at", sa.Text),
)
_DUCK_DDL = [
    "CREATE TABLE IF NOT EXISTS batchyard_etl_state (pipeline_id VARCHAR, source_id VARCHAR, "
    "cursor_column VARCHAR, cursor_kind VARCHAR, cursor_value VARCHAR, run_id VARCHAR, "
    "updated_at VARCHAR, PRIMARY KEY (pipeline_id, source_id))",
    "CREATE TABLE IF NOT EXISTS batchyard_etl_failed (pipeline_id VARCHAR, run_id VARCHAR, "
    "source_id VARCHAR, batch_index BIGINT, n_rows BIGINT, path VARCHAR, error VARCHAR, "
    "recorded_at VARCHAR)",
]


class FailedBatch(BaseModel):
    """A batch that did not load after its retries; its transformed file is kept for a re-run."""

    source_id: str
    batch_index: int
    n_rows: int
    path: str
    error: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _state_file(target: Target) -> Path:
    return Path(f"{target.path.rstrip('/')}.batchyard-state.json")


def _read_file(target: Target) -> dict:
    path = _state_file(target)
    return json.loads(path.read_text()) if path.exists() else {"cursors": {}, "failed": []}


def _write_file(target: Target, state: dict) -> None:
    path = _state_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
    temporary.replace(path)


def ensure_state(target: Target) -> None:
    if target.type == "database":
        with session(target.url, write=True) as current:
            current.create(_metadata)
    elif target.type == "warehouse":
        with duckdb_connection(target.path) as connection:
            for ddl in _DUCK_DDL:
                connection.execute(ddl)


def read_cursor(target: Target, pipeline_id: str, source_id: str) -> Cursor | None:
    if target.type == "file":
        found = _read_file(target)["cursors"].get(f"{pipeline_id}/{source_id}")
        return Cursor(**found) if found else None
    query = ("SELECT cursor_column, cursor_kind, cursor_value FROM batchyard_etl_state "
             "WHERE pipeline_id = {p} AND source_id = {p}")
    if target.type == "database":
        with session(target.url) as current:
            rows = current.sql(query.format(p=current.placeholder), (pipeline_id, source_id)).rows
    else:
        with duckdb_connection(target.path) as connection:
            rows = connection.execute(query.format(p="?"), [pipeline_id, source_id]).fetchall()
    if not rows:
        return None
    column, kind, value = rows[0]
    return Cursor(column=column, kind=kind, value=value)


def save_cursor(target: Target, pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> None:
    if target.type == "file":
        state = _read_file(target)
        state["cursors"][f"{pipeline_id}/{source_id}"] = cursor.model_dump()
        _write_file(target, state)
        return
    row = {"pipeline_id": pipeline_id, "source_id": source_id, "cursor_column": cursor.column,
           "cursor_kind": cursor.kind, "cursor_value": cursor.value, "run_id": run_id,
           "updated_at": _now()}
    if target.type == "database":
        with session(target.url, write=True) as current:
            current.execute(cursors.delete().where(cursors.c.pipeline_id == pipeline_id,
                                                   cursors.c.source_id == source_id))
            current.execute(cursors.insert().values(**row))
        return
    with duckdb_connection(target.path) as connection:
        connection.execute("INSERT OR REPLACE INTO batchyard_etl_state VALUES (?, ?, ?, ?, ?, ?, ?)",
                           list(row.values()))


def record_failures(target: Target, pipeline_id: str, run_id: str, failed: list[FailedBatch]) -> None:
    if not failed:
        return
    rows = [{"pipeline_id": pipeline_id, "run_id": run_id, **f.model_dump(), "recorded_at": _now()}
            for f in failed]
    if target.type == "file":
        state = _read_file(target)
        state["failed"] += rows
        _write_file(target, state)
    elif target.type == "database":
        with session(target.url, write=True) as current:
            current.execute(failures.insert(), rows)
    else:
        with duckdb_connection(target.path) as connection:
            connection.executemany(
                "INSERT INTO batchyard_etl_failed (pipeline_id, run_id, source_id, batch_index, n_rows, "
                "path, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[r["pipeline_id"], r["run_id"], r["source_id"], r["batch_index"], r["n_rows"], r["path"],
                  r["error"], r["recorded_at"]] for r in rows])


def failed_batches(target: Target, pipeline_id: str) -> list[dict]:
    """Every recorded failure of the pipeline, oldest first (what a re-run would load)."""
    if target.type == "file":
        return [r for r in _read_file(target)["failed"] if r["pipeline_id"] == pipeline_id]
    query = ("SELECT run_id, source_id, batch_index, n_rows, path, error FROM batchyard_etl_failed "
             "WHERE pipeline_id = {p} ORDER BY recorded_at, source_id, batch_index")
    names = ["run_id", "source_id", "batch_index", "n_rows", "path", "error"]
    if target.type == "database":
        with session(target.url) as current:
            rows = current.sql(query.format(p=current.placeholder), (pipeline_id,)).rows
    else:
        with duckdb_connection(target.path) as connection:
            rows = connection.execute(query.format(p="?"), [pipeline_id]).fetchall()
    return [dict(zip(names, r, strict=True)) for r in rows]
