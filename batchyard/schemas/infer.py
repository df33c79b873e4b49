"""Inferring a reviewable schema from a sample: pure functions, no I/O beyond the sample.

Each column's text values decide its type (the narrowest of bool, int, Decimal of a fixed
scale, float, date, datetime, str that takes every value seen), its optionality (a missing
value seen) and constraints a reviewer can loosen: bounds rounded outward to two significant
digits, a `Literal` for a column of a few distinct words, a maximum length, a pattern for
e-mail addresses and codes. The key is the one given, else a column unique and never missing in
the sample, else none (the table is then keyless). `render.render_module` writes the result.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from batchyard.errors import ConfigurationError
from batchyard.schemas.sample import Sample

INT_TEXT = r"^[+-]?[0-9]{1,18}$"
LEADING_ZERO = r"^[+-]?0[0-9]"
FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
FIXED_TEXT = r"^[+-]?[0-9]*\.(?P<fraction>[0-9]+)$"
DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATETIME_TEXT = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
                 r"(Z|[+-][0-9]{2}:?[0-9]{2})?$")
AWARE_TEXT = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
BOOL_WORDS = ({"true", "false"}, {"yes", "no"})
LITERAL_MAX = 10
"""A text column with at most this many distinct values (each seen often) becomes a Literal."""
CODE_MAX_LENGTH = 12


@dataclass
class ColumnFacts:
    """What the sample shows of one column."""

    header: str
    rows: int
    nulls: int
    distinct: int
    kind: str  # bool int decimal float date datetime timestamptz str
    minimum: Any = None
    maximum: Any = None
    min_length: int | None = None
    max_length: int | None = None
    scale: int | None = None
    choices: list[str] | None = None
    pattern: str | None = None
    examples: list[str] = field(default_factory=list)

    @property
    def present(self) -> int:
        return self.rows - self.nulls


@dataclass
class FieldSpec:
    """One field of the model to write."""

    name: str
    alias: str | None
    facts: ColumnFacts
    optional: bool
    constraints: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """The model to write: its class, table, key and fields, and the sample it came from."""

    class_name: str
    table: str
    key: tuple[str, ...]
    key_reason: str
    fields: list[FieldSpec]
    source: str
    sampled: str


def _all(mask) -> bool:
    return bool(pc.all(pc.fill_null(mask, False)).as_py())


def _kind(values: pa.Array, typed: pa.DataType | None) -> tuple[str, int | None]:
    """The narrowest kind taking every (trimmed, present) value, and a Decimal's scale."""
    if typed is not None and pa.types.is_boolean(typed):
        return "bool", None
    if typed is not None and pa.types.is_decimal(typed):
        return "decimal", typed.scale
    lowered = pc.utf8_lower(values)
    if any(_all(pc.is_in(lowered, value_set=pa.array(sorted(words)))) for words in BOOL_WORDS):
        return "bool", None
    floating = typed is not None and pa.types.is_floating(typed)
    coded = not floating and pc.any(pc.match_substring_regex(values, LEADING_ZERO)).as_py()
    if not floating and not coded and _all(pc.match_substring_regex(values, INT_TEXT)):
        return "int", None
    if not coded and _all(pc.match_substring_regex(values, FLOAT_TEXT)):
        scales = pc.unique(pc.utf8_length(pc.extract_regex(values, FIXED_TEXT).field("fraction")))
        if not floating and _all(pc.match_substring_regex(values, FIXED_TEXT)) and len(scales) == 1 \
                and scales[0].as_py() >= 2:
            return "decimal", scales[0].as_py()
        return "float", None
    if _all(pc.match_substring_regex(values, DATE_TEXT)):
        try:
            pc.cast(values, pa.date32())
            return "date", None
        except (pa.ArrowInvalid, OverflowError):
            return "str", None
    if _all(pc.match_substring_regex(values, DATETIME_TEXT)):
        aware = pc.match_substring_regex(values, AWARE_TEXT)
        return ("timestamptz" if _all(aware) else "datetime"), None
    return "str", None


def _code_pattern(values: pa.Array, min_length: int, max_length: int) -> str | None:
    """`^[A-Z]{3}$`, `^[0-9]{5}$` or `^[A-Z0-9]{5,6}$` for a column of short upper-case codes."""
    if max_length > CODE_MAX_LENGTH or min_length < 1:
        return None
    if not _all(pc.match_substring_regex(values, r"^[A-Z0-9]+$")):
        return None
    if _all(pc.match_substring_regex(values, r"^[A-Z]+$")):
        chars = "[A-Z]"
    elif _all(pc.match_substring_regex(values, r"^[0-9]+$")):
        chars = "[0-9]"
    else:
        chars = "[A-Z0-9]"
    count = f"{{{min_length}}}" if min_length == max_length else f"{{{min_length},{max_length}}}"
    return f"^{chars}{count}$"


def column_facts(header: str, column: pa.ChunkedArray | pa.Array,
                 typed: pa.DataType | None = None) -> ColumnFacts:
    """The facts of one text column of a sample."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(column)
    present = column.drop_null()
    nulls = rows - len(present)
    distinct = pc.count_distinct(present).as_py() if len(present) else 0
    if not len(present):
        return ColumnFacts(header, rows, nulls, 0, "str")
    trimmed = pc.utf8_trim_whitespace(present)
    kind, scale = _kind(trimmed, typed)
    facts = ColumnFacts(header, rows, nulls, distinct, kind, scale=scale)
    counts = pc.value_counts(present)
    order = pc.array_sort_indices(counts.field("counts"), order="descending")
    facts.examples = [str(v) for v in pc.take(counts.field("values"), order)[:5].to_pylist()]
    if kind in ("int", "float", "decimal"):
        numbers = pc.cast(trimmed, pa.float64() if kind != "int" else pa.int64())
        extremes = pc.min_max(numbers)
        if kind == "decimal":
            texts = trimmed.to_pylist()
            decimals = [Decimal(t) for t in texts]
            facts.minimum, facts.maximum = min(decimals), max(decimals)
        else:
            facts.minimum, facts.maximum = extremes["min"].as_py(), extremes["max"].as_py()
        if kind == "float" and not (math.isfinite(facts.minimum) and math.isfinite(facts.maximum)):
            facts.minimum = facts.maximum = None
    elif kind in ("date", "datetime", "timestamptz"):
        extremes = pc.min_max(trimmed)
        facts.minimum, facts.maximum = extremes["min"].as_py(), extremes["max"].as_py()
    elif kind == "str":
        lengths = pc.min_max(pc.utf8_length(present))
        facts.min_length, facts.max_length = lengths["min"].as_py(), lengths["max"].as_py()
        if distinct <= LITERAL_MAX and len(present) >= 10 * distinct:
            facts.choices = sorted(pc.unique(present).to_pylist())
        elif _all(pc.match_substring_regex(present, EMAIL_PATTERN)):
            facts.pattern = EMAIL_PATTERN
        else:
            facts.pattern = _code_pattern(present, facts.min_length, facts.max_length)
    return facts


def sample_facts(sample: Sample) -> list[ColumnFacts]:
    """The facts of every column of a sample, in header order."""
    return [column_facts(h, sample.table[h], sample.typed.get(h)) for h in sample.header]


def round_outward(value: Any, up: bool) -> Any:
    """`value` rounded away from the data to two significant digits (517 → 510 as a lower
    bound, 2359 → 2400 as an upper one); an int stays an int, a Decimal a Decimal."""
    if value == 0:
        return value
    number = Decimal(str(value))
    step = Decimal(1).scaleb(number.copy_abs().adjusted() - 1)
    rounded = (number / step).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR) * step
    if isinstance(value, int):
        return int(rounded)
    if isinstance(value, Decimal):
        return rounded
    return float(rounded)


def _length_bound(facts: ColumnFacts) -> int:
    """The longest value seen; text of varying length gets room: the next power of two."""
    longest = facts.max_length or 1
    if facts.min_length == longest or longest <= 8:
        return longest
    return 1 << (longest - 1).bit_length()


_RESERVED = set(dir(BaseModel))


def field_name(header: str, taken: set[str]) -> str:
    """A Python identifier for a header (`"Order ID"` → `order_id`), unique among `taken`."""
    name = header.strip()
    if not (name.isidentifier() and name.isascii()) or keyword.iskeyword(name) or name.startswith("_"):
        name = re.sub(r"[^0-9A-Za-z]+", "_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name))
        name = name.strip("_").lower() or "column"
        if name[0].isdigit():
            name = f"c_{name}"
        if keyword.iskeyword(name):
            name += "_"
    if name in _RESERVED or name.startswith("model_"):
        name += "_"
    name = name[:60]
    base, n = name, 2
    while name.lower() in {t.lower() for t in taken}:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def constraints_of(facts: ColumnFacts) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if facts.kind in ("int", "float", "decimal") and facts.minimum is not None:
        found["ge"] = round_outward(facts.minimum, up=False)
        found["le"] = round_outward(facts.maximum, up=True)
    if facts.kind == "decimal":
        digits = max(len(str(abs(int(v)))) for v in (facts.minimum, facts.maximum))
        found["max_digits"] = digits + 1 + facts.scale
        found["decimal_places"] = facts.scale
    if facts.kind == "str" and facts.choices is None and facts.present:
        found["max_length"] = _length_bound(facts)
        if facts.pattern:
            found["pattern"] = facts.pattern
    return found


def class_name(stem: str) -> str:
    """`flights_2013` → `Flights2013`: a class name from a file name."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", stem) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Records"
    return f"R{name}" if name[0].isdigit() else name


def table_name(stem: str) -> str:
    """A table name from a file name: lower case, letters, digits and underscores."""
    name = re.sub(r"[^0-9a-z]+", "_", stem.lower()).strip("_") or "records"
    return (f"t_{name}" if name[0].isdigit() else name)[:63]


def _pick_key(fields: list[FieldSpec], rows: int) -> tuple[tuple[str, ...], str]:
    candidates = [f for f in fields if f.facts.kind in ("int", "str") and f.facts.nulls == 0
                  and f.facts.choices is None and rows >= 2 and f.facts.distinct == rows]
    if not candidates:
        return (), "no column is unique and never missing in the sample: keyless"
    named = [f for f in candidates if f.name.lower() == "id"] or \
        [f for f in candidates if f.name.lower().endswith("_id")] or candidates
    chosen = named[0]
    return (chosen.name,), f"{chosen.name} is unique and never missing in the sample"


def infer_model(sample: Sample, name: str | None = None, key: str | None = None,
                table: str | None = None, facts: list[ColumnFacts] | None = None) -> ModelSpec:
    """The model a sample suggests. `key`: column names separated by commas (a field name
    or a header), `none` for a keyless table, or None to infer it.

    Raises ConfigurationError for a key that names no column."""
    facts = facts if facts is not None else sample_facts(sample)
    taken: set[str] = set()
    fields = []
    for fact in facts:
        field_ = field_name(fact.header, taken)
        fields.append(FieldSpec(field_, None if field_ == fact.header else fact.header, fact,
                                optional=fact.nulls > 0 or not fact.present,
                                constraints=constraints_of(fact)))
    if key is None:
        chosen, reason = _pick_key(fields, sample.rows)
    elif key.strip().lower() == "none":
        chosen, reason = (), "--key none: keyless"
    else:
        by_any = {f.name.lower(): f.name for f in fields}
        by_any.update({f.facts.header.lower(): f.name for f in fields})
        wanted = [k.strip() for k in key.split(",") if k.strip()]
        unknown = [k for k in wanted if k.lower() not in by_any]
        if unknown or not wanted:
            raise ConfigurationError(f"--key {key!r}: no column {', '.join(unknown) or key!r} in "
                                     f"{sample.path.name} (columns: {', '.join(sample.header)})")
        chosen, reason = tuple(by_any[k.lower()] for k in wanted), "--key"
    for f in fields:
        if f.name in chosen:  # a key is never missing, and ids grow: no bounds on it
            f.optional = False
            f.constraints.pop("ge", None)
            f.constraints.pop("le", None)
    stem = sample.path.stem
    chosen_class = name if name and name.isidentifier() else class_name(name or stem)
    return ModelSpec(chosen_class, table or table_name(stem),
                     chosen, reason, fields, sample.path.name, sample.describe())
