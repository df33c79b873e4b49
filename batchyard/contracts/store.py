"""Contracts saved beside the data: one row per version of a table's inferred (or evolved)
schema, with the module's text, in the ledger database (`batchyard_contracts`).

A contract is what `--schema infer` imports with once a table has one. Its module is written
to the work directory (`materialize`) so that it loads as any `PATH.py:Class` schema does, in
every process and on every Dask worker that shares the work directory; its file name holds the
table, version and a hash of the text, so a different text is never mistaken for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from pathlib import Path

import sqlalchemy as sa

from batchyard.engines import session
from batchyard.ingest.summary import read_ledger
from batchyard.settings import get_settings

metadata = sa.MetaData()

contracts = sa.Table(
    "batchyard_contracts", metadata,
    sa.Column("target_table", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("class_name", sa.String(200), nullable=False),
    sa.Column("module_text", sa.Text, nullable=False),
    sa.Column("text_hash", sa.String(64), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("change", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

_FILE = re.compile(r"(?P<table>[A-Za-z0-9_]+)-v(?P<version>[0-9]+)-(?P<hash>[0-9a-f]{12})\.py$")


def ensure_store(connection) -> None:
    connection.create(metadata)


def _row(found) -> dict:
    row = dict(found)
    value = row.get("created_at")
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    row["created_at"] = value
    return row


def history(connection, table: str) -> list[dict]:
    """The versions of `table`'s contract, oldest first (none when the store is not there)."""
    if connection.describe(contracts.name) is None:
        return []
    found = connection.execute(sa.select(contracts).where(contracts.c.target_table == table)
                               .order_by(contracts.c.version)).mappings()
    return [_row(r) for r in found]


def latest(connection, table: str) -> dict | None:
    versions = history(connection, table)
    return versions[-1] if versions else None


def save(connection, table: str, class_name: str, text: str, source: str, change: str) -> dict:
    """Record a new version of `table`'s contract; returns its row."""
    ensure_store(connection)
    previous = latest(connection, table)
    row = {"target_table": table, "version": (previous["version"] if previous else 0) + 1,
           "class_name": class_name, "module_text": text,
           "text_hash": hashlib.sha256(text.encode()).hexdigest(), "source": source,
           "change": change, "created_at": dt.datetime.now(dt.UTC)}
    connection.execute(contracts.insert().values(**row))
    return row


def read_contracts(db: str, table: str) -> list[dict]:
    """Every version of `table`'s contract in `db`, read only (`schema show|diff|history`).

    Raises ConfigurationError for a database that is not there or has no ledger."""
    with read_ledger(db) as connection:
        return history(connection, table)


def contracts_dir() -> Path:
    return get_settings().work_dir / "contracts"


def materialize(contract: dict) -> str:
    """Write the contract's module into the work directory (once) and return its schema
    reference, `PATH.py:Class`."""
    name = f"{contract['target_table']}-v{contract['version']}-{contract['text_hash'][:12]}.py"
    path = contracts_dir() / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(contract["module_text"])
        partial.replace(path)
    return f"{path}:{contract['class_name']}"


def restore(db: str, schema_ref: str) -> None:
    """A contract's module file that is gone from the work directory (a cleaned cache, another
    machine) is written again from the ledger before a batch of it is resumed."""
    path_text, _, _ = schema_ref.rpartition(":")
    path = Path(path_text)
    found = _FILE.search(path.name)
    if found is None or path.exists() or path.parent != contracts_dir():
        return
    with session(db) as connection:
        for contract in history(connection, found["table"]):
            if contract["version"] == int(found["version"]) and \
                    contract["text_hash"].startswith(found["hash"]):
                materialize(contract)
