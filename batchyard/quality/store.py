"""Chunk profiles in the ledger database (`batchyard_chunk_profiles`): written in the chunk's
own transaction, so a batch's profile covers exactly its committed chunks, and a resumed or
repeated chunk replaces its row instead of counting twice."""

from __future__ import annotations

import json

import sqlalchemy as sa

metadata = sa.MetaData()

chunk_profiles = sa.Table(
    "batchyard_chunk_profiles", metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("chunk_index", sa.Integer, primary_key=True),
    sa.Column("profile", sa.Text, nullable=False),
)


def ensure_profiles(connection) -> None:
    connection.create(metadata)


def record_chunk_profile(connection, batch_id: str, chunk_index: int, profile: dict) -> None:
    """A committed chunk's profile (`quality.profile.profile_chunk`), in its transaction."""
    condition = sa.and_(chunk_profiles.c.batch_id == batch_id,
                        chunk_profiles.c.chunk_index == chunk_index)
    connection.execute(chunk_profiles.delete().where(condition))
    connection.execute(chunk_profiles.insert().values(
        batch_id=batch_id, chunk_index=chunk_index, profile=json.dumps(profile, default=str)))


def forget_profiles(connection, batch_id: str) -> None:
    """A batch that runs again from its first record starts a new profile."""
    if connection.describe(chunk_profiles.name) is not None:
        connection.execute(chunk_profiles.delete().where(chunk_profiles.c.batch_id == batch_id))


def read_chunk_profiles(connection, batch_id: str) -> list[dict]:
    """The profiles of a batch's committed chunks, in chunk order (none in an older ledger)."""
    if connection.describe(chunk_profiles.name) is None:
        return []
    found = connection.execute(
        sa.select(chunk_profiles.c.profile).where(chunk_profiles.c.batch_id == batch_id)
        .order_by(chunk_profiles.c.chunk_index)).rows
    return [json.loads(r[0]) for r in found]
