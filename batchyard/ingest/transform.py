"""Record transforms as plain functions on Arrow tables: normalise before validation, dedupe and
derive after it. No Prefect here; everything is vectorised so a chunk costs C time, not Python."""

from __future__ import annotations

from dataclasses import dataclass

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
    """Keep the first record of each key inside the table; report the others as duplicates."""
    if table.num_rows == 0:
        return table, []
    if len(key) == 1 and pc.count_distinct(table[key[0]]).as_py() == table.num_rows:
        return table, []
    firsts = table.group_by(list(key), use_threads=False).aggregate([(ROW, "min")])
    if firsts.num_rows == table.num_rows:
        return table, []
    keep = pc.is_in(table[ROW], value_set=firsts[f"{ROW}_min"])
    dropped = table.filter(pc.invert(keep)).select([*key, ROW])
    # only the dropped records' keys become Python objects, joined to their first row in Arrow
    joined = dropped.join(firsts, keys=list(key), join_type="inner", use_threads=False).sort_by(ROW)
    duplicates = [Duplicate(r[ROW], r[f"{ROW}_min"], {k: r[k] for k in key}) for r in joined.to_pylist()]
    return table.filter(keep), duplicates


def derive(table: pa.Table, plan: SchemaPlan) -> pa.Table:
    """Add the schema's derived columns (computed on validated, typed values)."""
    return plan.derive(table) if plan.derived else table
