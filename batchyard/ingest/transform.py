"""Record transforms as plain functions on Arrow tables: normalise before validation, dedupe and
derive after it. No Prefect here; everything is vectorised so a chunk costs C time, not Python."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchyard.bytescan import contains_any, has_double_space
from batchyard.chunks import ROW
from batchyard.readers.base import as_text
from batchyard.schemas.base import CollapseSpaces, ColumnSpec, Lower, SchemaPlan, Upper

TEXT_KINDS = ("str", "json")
"""Kinds whose value is the text itself: it keeps its whitespace unless the schema strips it.
The others (numbers, booleans, dates, times) are parsed, and spaces around them are not data."""


def normalise_column(values: pa.ChunkedArray | pa.Array, spec: ColumnSpec) -> pa.ChunkedArray:
    """One column as text for validation: trimmed where the value is parsed or the schema asks
    for stripping, then the schema's case and spacing markers. A missing cell stays null and an
    empty string stays an empty string: which is which was decided by the reader."""
    text = as_text(values)
    if spec.strip or spec.kind not in TEXT_KINDS:
        text = pc.utf8_trim_whitespace(text)
    markers = spec.markers
    if CollapseSpaces in markers and _has_inner_space_runs(text):
        text = pc.replace_substring_regex(text, r"\s+", " ")
    if Lower in markers:
        text = pc.utf8_lower(text)
    if Upper in markers:
        text = pc.utf8_upper(text)
    return text


def _has_inner_space_runs(text) -> bool:
    """A byte prefilter first (most names have none); then plain substring scans, several
    times cheaper than one regex over the column."""
    if not (contains_any(text, b"\t\n\r\xa0") or has_double_space(text)):
        return False
    return any(pc.any(pc.match_substring(text, needle)).as_py()
               for needle in ("  ", "\t", "\n", "\r", "\u00a0"))


def normalise(raw: pa.Table, plan: SchemaPlan) -> pa.Table:
    """Return one text column per schema field, normalised; absent optional columns are nulls."""
    columns = {}
    for spec in plan.columns:
        if spec.name in raw.column_names:
            columns[spec.name] = normalise_column(raw[spec.name], spec)
        else:
            columns[spec.name] = pa.nulls(raw.num_rows, pa.string())
    columns[ROW] = raw[ROW]
    return pa.table(columns)


@dataclass
class Duplicate:
    row_number: int
    first_row: int
    key: dict


def dedupe(table: pa.Table, key: tuple[str, ...]) -> tuple[pa.Table, list[Duplicate]]:
    """Keep the first record of each key inside the table; report the others as duplicates.

    One sort by key and row number puts each key's records together, first record first: a
    record whose key equals its predecessor's is a duplicate of that run's first. (A hash
    group-by and a join cost five times as much, on a chunk with any duplicate.) Missing key
    values count as equal to each other, as in a group-by."""
    n = table.num_rows
    if n < 2:
        return table, []
    order = pc.sort_indices(table.select([*key, ROW]),
                            sort_keys=[(k, "ascending") for k in key] + [(ROW, "ascending")])
    repeat = np.ones(n - 1, dtype=bool)  # sorted record i + 1 has the key of record i
    for k in key:
        column = table[k].take(order)
        later, earlier = column.slice(1), column.slice(0, n - 1)
        same = pc.or_(pc.fill_null(pc.equal(later, earlier), False),
                      pc.and_(pc.is_null(later), pc.is_null(earlier)))
        repeat &= same.to_numpy(zero_copy_only=False)
    if not repeat.any():
        return table, []
    first = np.concatenate(([True], ~repeat))
    positions = order.to_numpy()
    rows = table[ROW].take(order).to_numpy()
    first_rows = rows[first][np.cumsum(first) - 1]
    later_ones = ~first
    by_row = np.argsort(rows[later_ones], kind="stable")
    dropped = positions[later_ones][by_row]
    keep = np.ones(n, dtype=bool)
    keep[dropped] = False
    keys = table.select(list(key)).take(pa.array(dropped)).to_pylist()
    duplicates = [Duplicate(int(row), int(first_row), values) for row, first_row, values in
                  zip(rows[later_ones][by_row], first_rows[later_ones][by_row], keys, strict=True)]
    return table.filter(pa.array(keep)), duplicates


def derive(table: pa.Table, plan: SchemaPlan) -> pa.Table:
    """Add the schema's derived columns (computed on validated, typed values)."""
    return plan.derive(table) if plan.derived else table
