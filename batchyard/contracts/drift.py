"""Drift: how a file's sample differs from a table's contract. Pure: a sample and a plan in,
a report out.

A new column, a missing required column, a type change (values that no longer parse as the
contract's type), out-of-range values (that parse but break a bound, a length, a pattern or a
Literal) and missing values in a required column are each a change, counted in the sampled
records. Only new columns are additive (`--evolve` adds them as optional fields); the others,
when more than the threshold share of sampled records shows them, stop the import. Fewer than
that are ordinary rejects: the import loads the rest and reports those records one by one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from batchyard.ingest.transform import normalise_column
from batchyard.ingest.validate import check_column
from batchyard.schemas.base import SchemaPlan
from batchyard.schemas.infer import ColumnFacts, column_facts
from batchyard.schemas.sample import Sample

VECTORISED = ("str", "int", "float", "date", "bool")
SAMPLES = 3
CHECKED_VALUES = 20_000
"""Distinct values of a column of another kind (datetime, Decimal) checked by pydantic."""


@dataclass
class Change:
    kind: str  # new column | missing column | type change | out of range | missing values
    column: str
    records: int
    sampled: int
    detail: str
    samples: list[str] = field(default_factory=list)
    facts: ColumnFacts | None = None

    @property
    def additive(self) -> bool:
        return self.kind == "new column"

    def describe(self) -> str:
        share = f"{self.records:,} of {self.sampled:,} sampled records"
        shown = f"; e.g. {', '.join(repr(s) for s in self.samples)}" if self.samples else ""
        return f"{self.kind}: {self.column}: {self.detail} ({share}){shown}"


@dataclass
class DriftReport:
    table: str
    version: int
    sampled: str
    threshold: float
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def blocking(self, evolve: bool) -> list[Change]:
        """The changes that stop the import: all of them, or with `evolve` the non-additive."""
        return [c for c in self.changes if not (evolve and c.additive)]

    def additive(self) -> list[Change]:
        return [c for c in self.changes if c.additive]

    def render(self) -> str:
        lines = [f"drift from the contract of table {self.table} (version {self.version}), "
                 f"sampled {self.sampled}:"]
        lines += [f"  {c.describe()}" for c in self.changes]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _match(header: list[str], plan: SchemaPlan) -> dict[str, str]:
    """Field → header, as the import matches them (alias or name, trimmed, any case)."""
    by_lower = {h.strip().lower(): h for h in header}
    mapping = {}
    for spec in plan.columns:
        for name in (spec.source_name.lower(), spec.name.lower()):
            if name in by_lower:
                mapping[spec.name] = by_lower[name]
                break
    return mapping


def _examples(values: pa.Array, mask: pa.Array) -> list[str]:
    bad = pc.filter(values, mask)
    return [str(v) for v in pc.unique(bad)[:SAMPLES].to_pylist()]


def _unconstrained(spec):
    return dataclasses.replace(spec, ge=None, gt=None, le=None, lt=None, min_length=None,
                               max_length=None, pattern=None, choices=None, required=False)


def _failing_vectorised(spec, text: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array]:
    """The normalised text, and masks of the present cells that do not parse as the type and
    of those that parse but break a bound."""
    normal = normalise_column(text, spec)
    normal = normal.combine_chunks() if isinstance(normal, pa.ChunkedArray) else normal
    present = pc.is_valid(normal)
    _, parses = check_column(_unconstrained(spec), normal)
    _, passes = check_column(dataclasses.replace(spec, required=False), normal)
    not_type = pc.and_(present, pc.invert(parses))
    out_of_range = pc.and_(pc.and_(present, parses), pc.invert(passes))
    return normal, not_type, out_of_range


def _failing_pydantic(plan: SchemaPlan, spec, text: pa.Array):
    """The same masks for kinds Arrow does not check (datetimes, Decimals): pydantic decides,
    once per distinct value (at most CHECKED_VALUES of them; the others count as passing)."""
    info = plan.model.model_fields[spec.name]
    base = info.annotation
    args = [a for a in typing.get_args(base) if a is not type(None)]
    if typing.get_origin(base) in (typing.Union, types.UnionType) and args:
        base = args[0]
    typed = TypeAdapter(base)
    full = TypeAdapter(Annotated[base, info])
    normal = normalise_column(text, spec)
    normal = normal.combine_chunks() if isinstance(normal, pa.ChunkedArray) else normal
    bad_type, bad_range = [], []
    for value in pc.unique(normal.drop_null())[:CHECKED_VALUES].to_pylist():
        try:
            typed.validate_python(value)
        except ValidationError:
            bad_type.append(value)
            continue
        try:
            full.validate_python(value)
        except ValidationError:
            bad_range.append(value)
    return (normal, pc.is_in(normal, value_set=pa.array(bad_type, pa.string())),
            pc.is_in(normal, value_set=pa.array(bad_range, pa.string())))


def _limits(spec) -> str:
    """`ge=0, le=2400` or `choices 'a', 'b'`: what a value must meet besides its type."""
    limits = [f"{name}={getattr(spec, name)}" for name in ("ge", "gt", "le", "lt", "min_length",
                                                           "max_length", "pattern")
              if getattr(spec, name) is not None]
    if spec.choices is not None:
        limits.append("choices " + ", ".join(repr(c) for c in spec.choices))
    return ", ".join(limits) or "constraints"


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False).cast(pa.int64())).as_py() or 0)


def check_drift(sample: Sample, plan: SchemaPlan, table: str, version: int,
                threshold: float) -> DriftReport:
    """Compare a sample with a contract's plan; see the module's docstring."""
    report = DriftReport(table, version, sample.describe(), threshold)
    rows = sample.rows
    mapping = _match(sample.header, plan)
    used = set(mapping.values())
    for header in sample.header:
        if header not in used:
            facts = column_facts(header, sample.table[header], sample.typed.get(header))
            report.changes.append(Change(
                "new column", header, facts.present, rows,
                f"not in the contract; looks like {facts.kind}"
                f"{', sometimes missing' if facts.nulls else ''}", facts.examples[:SAMPLES], facts))
    for spec in plan.columns:
        if spec.name not in mapping:
            if spec.required:
                report.changes.append(Change("missing column", spec.source_name, rows, rows,
                                             "the contract requires it; the file has no such column"))
            else:
                report.notes.append(f"optional column {spec.source_name} is not in the file: "
                                    "it loads as missing")
            continue
        text = sample.table[mapping[spec.name]].combine_chunks()
        if spec.kind in VECTORISED:
            normal, not_type, out_of_range = _failing_vectorised(spec, text)
        else:
            normal, not_type, out_of_range = _failing_pydantic(plan, spec, text)
        changes = []
        if (n := _count(not_type)):
            now = column_facts(spec.name, pc.filter(text, pc.is_valid(text)))
            changes.append(Change("type change", spec.source_name, n, rows,
                                  f"the contract says {spec.kind}; the file's values look like "
                                  f"{now.kind}", _examples(normal, not_type)))
        if (n := _count(out_of_range)):
            changes.append(Change("out of range", spec.source_name, n, rows,
                                  f"values outside the contract's {_limits(spec)}",
                                  _examples(normal, out_of_range)))
        if spec.required and (n := rows - len(text.drop_null())):
            changes.append(Change("missing values", spec.source_name, n, rows,
                                  "the contract requires a value"))
        for change in changes:
            if change.records > threshold * rows:
                report.changes.append(change)
            else:
                report.notes.append(f"{change.describe()}: within the {threshold:.0%} threshold; "
                                    "those records will be rejected one by one")
    return report
