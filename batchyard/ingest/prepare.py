"""A chunk from its spooled text to the typed rows to load: pure, no I/O, so a chunk task's
retry redoes nothing it needn't.

parse failures → NUL bytes → normalise → validate → duplicates within the chunk → derived
columns. Every record that does not reach the output leaves a ledger entry saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from batchyard.bytescan import contains_any
from batchyard.chunks import PARSE_ERROR, RAW, ROW
from batchyard.errors import VALIDATION_ERROR
from batchyard.ingest.ledger import RecordEntry
from batchyard.ingest.transform import dedupe, derive, normalise
from batchyard.ingest.validate import validate_table
from batchyard.schemas.base import SchemaPlan

_NUMBERS = re.compile(r"\b\d+\b")


@dataclass
class Prepared:
    """A chunk after validation and transforms, ready to load: the typed rows, and the records
    that failed or were ignored on the way (with their ledger entries)."""

    output: pa.Table
    entries: list[RecordEntry]


def duplicate_entry(row: int, first: int, key: dict) -> RecordEntry:
    """The ledger entry of record `row`, ignored because record `first` of the batch has its key."""
    shown = ", ".join(f"{k}={v}" for k, v in key.items())
    return RecordEntry(
        row, "ignored", VALIDATION_ERROR,
        f"duplicate key {shown}: already loaded from row {first} of this batch",
        "duplicate key in this batch", key,
    )


def load_entries(output: pa.Table, loaded) -> list[RecordEntry]:
    """The ledger entries of the records a load (`ingest.load.LoadResult`) left out of
    `output`: duplicates of an earlier record of the batch (ignored), and records whose values
    the database refused (failed, with its reason and the values as loaded)."""
    entries = [duplicate_entry(row, first, key) for row, first, key in loaded.duplicates]
    if loaded.refused:
        reasons = dict(loaded.refused)
        fields = [n for n in output.column_names if n != ROW]
        picked = output.filter(pc.is_in(output[ROW], pa.array(list(reasons), pa.int64())))
        for record in picked.to_pylist():
            row = record[ROW]
            payload = {f: None if record[f] is None else str(record[f]) for f in fields}
            entries.append(RecordEntry(row, "failed", VALIDATION_ERROR, reasons[row],
                                       _NUMBERS.sub("N", reasons[row]), payload))
    return entries


def _parse_failures(raw: pa.Table) -> tuple[pa.Table, list[RecordEntry]]:
    broken = pc.is_valid(raw[PARSE_ERROR])
    if not pc.any(broken).as_py():
        return raw, []
    entries = [
        RecordEntry(r[ROW], "failed", VALIDATION_ERROR, r[PARSE_ERROR],
                    _NUMBERS.sub("N", r[PARSE_ERROR]), {"_raw": r[RAW]})
        for r in raw.filter(broken).select([ROW, PARSE_ERROR, RAW]).to_pylist()
    ]
    return raw.filter(pc.invert(broken)), entries


def _nul_failures(raw: pa.Table, fields: list[str]) -> tuple[pa.Table, list[RecordEntry]]:
    """A NUL byte is valid in Arrow and pydantic but refused by PostgreSQL and breaks most
    tools downstream: reject the record, naming the field."""
    masks = {f: pc.fill_null(pc.match_substring(raw[f], "\x00"), False) for f in fields
             if contains_any(raw[f], b"\x00")}
    hits = [f for f, m in masks.items() if pc.any(m).as_py()]
    if not hits:
        return raw, []
    bad = masks[hits[0]]
    for f in hits[1:]:
        bad = pc.or_(bad, masks[f])
    entries = []
    for record in raw.filter(bad).to_pylist():
        named = [f for f in hits if record[f] is not None and "\x00" in record[f]]
        message = "; ".join(f"{f}: contains a NUL byte (\\x00)" for f in named)
        payload = {k: v for k, v in record.items() if k in fields}
        entries.append(RecordEntry(record[ROW], "failed", VALIDATION_ERROR, message, message, payload))
    return raw.filter(pc.invert(bad)), entries


def prepare_chunk(plan: SchemaPlan, raw: pa.Table) -> Prepared:
    """Validate and transform one spooled chunk (`raw`: text columns, row numbers, parse errors).

    Returns the rows in the schema's output types plus `_row_number`, and an entry for every
    record left out: failed (with pydantic's message) or ignored (a duplicate key)."""
    raw, entries = _parse_failures(raw)
    raw, nul_entries = _nul_failures(raw, plan.field_names)
    entries += nul_entries
    raw = raw.drop_columns([PARSE_ERROR, RAW])
    checked = validate_table(normalise(raw, plan), raw, plan)
    entries += [
        RecordEntry(r.row_number, "failed", r.code, r.error, r.reason, r.payload)
        for r in checked.rejects
    ]
    valid, duplicates = dedupe(checked.valid, plan.key) if plan.key else (checked.valid, [])
    entries += [duplicate_entry(d.row_number, d.first_row, d.key) for d in duplicates]
    output = derive(valid, plan)
    schema = plan.output_schema()
    output = output.select([*schema.names, ROW]).cast(schema.append(pa.field(ROW, pa.int64())))
    return Prepared(output, entries)
