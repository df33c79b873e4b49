"""Schemas of the fidelity tests, importable as `tests.batchyard.ingest.fidelity_schemas:Item`."""

from __future__ import annotations

import datetime as dt

from pydantic import AwareDatetime, BaseModel


class Item(BaseModel):
    """A plain model: no stripping asked for, so text keeps its whitespace."""

    __batchyard_table__ = "items"

    id: int
    label: str
    note: str | None = None
    amount: float | None = None
    at: dt.datetime | None = None
    at_utc: AwareDatetime | None = None


class Keyless(BaseModel):
    """No `__batchyard_key__` and no `id`: batchyard must not guess a key."""

    carrier: str
    flight: int


class DeclaredKeyless(BaseModel):
    """Keyless on purpose: rows are appended, identified by batch and row number."""

    __batchyard_key__ = ()
    __batchyard_table__ = "flights"

    carrier: str
    flight: int


class Flight(BaseModel):
    __batchyard_key__ = ("carrier", "flight")

    carrier: str
    flight: int


class Penguin(BaseModel):
    """The columns of palmerpenguins' penguins.csv, with the id the tests add."""

    id: int
    species: str
    island: str
    bill_length_mm: float | None = None
    bill_depth_mm: float | None = None
    flipper_length_mm: int | None = None
    body_mass_g: int | None = None
    sex: str | None = None
    year: int
