"""What identifies a batch and what a chunk reports back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import BaseModel, Field

from batchyard.schemas import default_table, load_schema


class ImportJob(BaseModel):
    """Everything a chunk needs to know about its batch; small and serialisable."""

    batch_id: str
    source: str
    schema_name: str = Field("users", description="users, orders or module:Class")
    db: str
    table: str


@dataclass
class ChunkResult:
    """The counts of one processed chunk; `skipped` when it had been committed already."""

    index: int
    n_rows: int
    success: int = 0
    failed: int = 0
    ignored: int = 0
    skipped: bool = False


def new_batch_id() -> str:
    """A fresh batch id: `b` and 12 hex digits."""
    return "b" + uuid.uuid4().hex[:12]


def resolve_job(source: str, schema_name: str, db: str, table: str | None,
                batch_id: str | None) -> ImportJob:
    """The job for these parameters: a new batch id unless one is given, the schema's default
    table unless one is named. Raises ConfigurationError for an unknown schema."""
    plan = load_schema(schema_name)
    return ImportJob(batch_id=batch_id or new_batch_id(), source=str(source),
                     schema_name=schema_name, db=db, table=table or default_table(plan))
