"""The ledger's tables, kept in the target database beside the data (the batch and detail
tables of the PHP batch system this follows): one row per batch, per attempt at it, per chunk,
and per failed or ignored record. `ledger.py` writes them and is the only module that does;
`summary.py` reads them.
"""

from __future__ import annotations

import sqlalchemy as sa

from batchyard.engines.base import columns

metadata = sa.MetaData()


def _counters(kind: type) -> list[sa.Column]:
    """The success, failed and ignored counts a batch and a chunk keep."""
    return columns("success failed ignored", kind, nullable=False, default=0)


batches = sa.Table(
    "batchyard_batches", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    *columns("source schema_name target_table", nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False, default=0),
    *_counters(sa.BigInteger),
    *columns("chunk_size chunks", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    *columns("started_at finished_at", sa.DateTime(timezone=True)),
    sa.Column("flow_run_id", sa.String(64)),
    *columns("rejects_file error"),
    sa.Column("error_code", sa.String(32)),
    sa.Column("options", sa.Text),
    sa.Column("owner", sa.String(200)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("stop_requested", sa.Boolean, nullable=False, default=False,
              server_default=sa.false()),
    # what a batch is doing now (spooling, loading, closing, finished), the records of its
    # committed chunks (its progress), and its attempts with the seconds they took together
    sa.Column("stage", sa.String(16)), sa.Column("processed", sa.BigInteger),
    sa.Column("attempts", sa.Integer), sa.Column("work_seconds", sa.Float),
    # a keyless batch's source content (SHA-256), so the same file is not appended twice
    sa.Column("content_hash", sa.String(64)),
)

attempts = sa.Table(
    "batchyard_attempts", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    *columns("kind status", sa.String(16), nullable=False),
    sa.Column("flow_run_id", sa.String(64)),
    *columns("started_at finished_at", sa.DateTime(timezone=True)),
    sa.Column("seconds", sa.Float),
)

chunks = sa.Table(
    "batchyard_chunks", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("chunk_index", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("n_rows", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    *_counters(sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("error_code", sa.String(32)),
    sa.Column("committed_at", sa.DateTime(timezone=True)),
)

records = sa.Table(
    "batchyard_records", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("row_number", sa.BigInteger, primary_key=True),
    sa.Column("chunk_index", sa.Integer, nullable=False),
    *columns("status", sa.String(16), nullable=False),
    *columns("error_code", sa.String(32), nullable=False),
    *columns("error reason", nullable=False),
    sa.Column("retry_count", sa.Integer, nullable=False, default=0),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_batchyard_records_status", "batch_id", "status"),
)

TIMES = ("created_at", "started_at", "finished_at", "committed_at", "heartbeat_at")


def with_times(row: dict, table: sa.Table = batches) -> dict:
    """SQLite hands timestamps back as text and MariaDB as naive UTC datetimes; make them aware
    datetimes as PostgreSQL does. Columns an older ledger lacks (read without adding them) come
    back as None."""
    import datetime as dt

    for column in table.columns:
        row.setdefault(column.name, None)
    for name in TIMES:
        value = row.get(name)
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if isinstance(value, dt.datetime):
            row[name] = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return row
