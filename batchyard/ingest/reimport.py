"""Keyless tables: the same file must not be appended twice by accident.

A keyless table has no key to upsert on, so importing a file again would append every row again.
Each keyless batch records its source's content hash and options; a new batch of the same
content and options into the same table is refused unless `--fresh` says it is meant. (Within
a batch, resume and retry stay exact: rows are identified by batch and row number.)
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import sqlalchemy as sa

from batchyard.errors import BatchStateError
from batchyard.ingest.ledger_schema import batches

_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}


def content_hash(path: str | Path) -> str:
    """The SHA-256 of the file's bytes (computed once per version of the file per process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _hashes:
            return _hashes[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    with _lock:
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def earlier_import(connection, table: str, digest: str, options: str, batch_id: str) -> dict | None:
    """An earlier batch that appended (or is appending) this content with these options."""
    found = connection.execute(
        sa.select(batches.c.batch_id, batches.c.status, batches.c.success)
        .where(batches.c.target_table == table, batches.c.content_hash == digest,
               batches.c.options == options, batches.c.batch_id != batch_id,
               sa.or_(batches.c.success > 0, batches.c.status == "running"))
        .order_by(batches.c.created_at)
    ).mappings()
    return dict(found[0]) if found else None


def check_not_reimported(connection, table: str, source: str, digest: str, options: str,
                         batch_id: str) -> None:
    """Raises BatchStateError when an earlier batch appended the same content into `table`."""
    earlier = earlier_import(connection, table, digest, options, batch_id)
    if earlier is None:
        return
    raise BatchStateError(
        f"{source}: the same content (sha256 {digest[:12]}) with the same options was already "
        f"imported into keyless table {table} by batch {earlier['batch_id']} ({earlier['status']}, "
        f"{earlier['success']:,} rows appended); importing it again appends every row again: pass "
        f"--fresh if that is meant"
        + (f", or resume that batch with: batchyard resume {earlier['batch_id']}"
           if earlier["status"] != "completed" else ""))
