"""A schema whose fields are SQL keywords, importable as
`tests.batchyard.bad_input_schemas:Keywords` (tests/batchyard/test_bad_input.py)."""

from __future__ import annotations

from pydantic import BaseModel


class Keywords(BaseModel):
    """Every column name is a reserved word somewhere: each must be quoted in every statement."""

    __batchyard_key__ = ("select",)
    __batchyard_table__ = "order"

    select: int
    order: str
    group: str | None = None
    user: str | None = None
    table: int | None = None
    limit: float | None = None
