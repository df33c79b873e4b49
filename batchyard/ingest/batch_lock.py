"""The batch's write lock, held by a chunk's transaction while it loads: what makes the first
record in file order win a key whatever order the chunks commit in (`ingest.load.load_rows`,
`first_wins`)."""

from __future__ import annotations

import sqlalchemy as sa

from batchyard.ingest.ledger_schema import attempts, batches

BATCH_LOCKS = 0x6279  # "by": the first key of every batch's advisory lock on PostgreSQL


def lock_batch(connection, batch_id: str, shared: bool = False) -> None:
    """Hold the batch's write lock until this transaction ends, so that a chunk taking over a
    key from a later record of its batch sees every record of the batch that wrote one.

    Chunks that only append new keys share it, and a chunk that upserts over existing keys
    takes it alone, waiting for the appends in flight to commit. On PostgreSQL an advisory
    lock (taken in a savepoint that is rolled back, the shared lock is released, so no chunk
    waits to upgrade it). On MariaDB the lock of the batch's open attempt row, which nothing
    else writes while chunks load (the batch row takes every chunk's counters): InnoDB keeps
    a shared lock past a rolled-back savepoint, so two chunks upgrading at once deadlock and
    the one InnoDB rolls back runs its transaction again (`chunk._process_chunk`). SQLite's
    writers queue anyway: the batch row's lock, held alone."""
    if connection.dialect_name == "postgresql":
        # Waited for without the session's lock bound (the statement's still holds): the
        # holders are this batch's own chunks, each bounded itself, and one stuck on another
        # session's row must not make its siblings fail as timeouts too.
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        connection.sql("SET LOCAL lock_timeout = 0")
        connection.sql(f"SELECT {function}(%s, hashtext(%s))", (BATCH_LOCKS, batch_id))
        connection.sql("SET LOCAL lock_timeout TO DEFAULT")
        return
    if connection.dialect_name == "mysql":
        found = connection.execute(
            sa.select(attempts.c.attempt)
            .where(attempts.c.batch_id == batch_id, attempts.c.finished_at.is_(None))
            .with_for_update(read=shared))
        if found.rows:
            return
    connection.execute(sa.select(batches.c.batch_id).where(batches.c.batch_id == batch_id)
                       .with_for_update())
