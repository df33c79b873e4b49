"""Validation of whole chunks against a pydantic schema.

The fast path checks each column at C speed with Arrow compute (types, bounds, lengths,
patterns, choices). Records it rejects are handed to pydantic one by one, which either names
the failing fields or, if it disagrees, accepts the record with its own values: pydantic stays
the single authority, the vectorised checks only decide which records need its attention.
Schemas Arrow cannot express (custom validators, datetimes, nested types) take the row-wise path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import TypeAdapter, ValidationError

from batchyard.bytescan import contains_only
from batchyard.chunks import ROW
from batchyard.schemas.base import ColumnSpec, SchemaPlan

INT_TEXT = r"^[+-]?[0-9]{1,18}$"
FLOAT_TEXT = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$"
DATE_TEXT = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TRUE_TEXT = ["true", "1", "yes", "on", "t", "y"]
FALSE_TEXT = ["false", "0", "no", "off", "f", "n"]


@dataclass
class Reject:
    row_number: int
    error: str
    payload: dict[str, Any]
    reason: str = ""
    code: str = "VALIDATION_ERROR"

    def __post_init__(self):
        self.reason = self.reason or self.error


@dataclass
class ValidationResult:
    valid: pa.Table
    rejects: list[Reject] = field(default_factory=list)


def _bounds(spec: ColumnSpec, typed: pa.ChunkedArray, ok: pa.ChunkedArray) -> pa.ChunkedArray:
    for bound, op in ((spec.ge, pc.greater_equal), (spec.gt, pc.greater),
                      (spec.le, pc.less_equal), (spec.lt, pc.less)):
        if bound is not None:
            ok = pc.and_(ok, pc.fill_null(op(typed, pa.scalar(bound, typed.type)), False))
    return ok


# Bytes of a plainly written number or date: with only these, Arrow's cast accepts what the
# patterns above accept (it would also take "0x10" as 16; "x" is not among them), plus integers
# of 19 digits within 64 bits and exponents of 4 digits, which pydantic accepts too (and the
# infinities those can give are sent to pydantic below).
PLAIN_BYTES = {"int": b"0123456789-", "float": b"0123456789+-.eE", "date": b"0123456789-"}


def _cast_plain(spec: ColumnSpec, text: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The typed column when every cell is plainly written (the common case: one cast, no
    pattern scans); None sends the column down the pattern path, which finds the bad cells."""
    if not contains_only(text, PLAIN_BYTES[spec.kind]):
        return None
    if spec.kind == "date" and not pc.all(pc.equal(pc.binary_length(text), 10)).as_py():
        return None
    try:  # Arrow's date cast refuses impossible days (2021-02-30), unlike strptime
        return pc.cast(text, spec.arrow_type)
    except (pa.ArrowInvalid, OverflowError):
        return None


def check_column(spec: ColumnSpec, text: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Parse one normalised text column; return typed values and a mask of acceptable cells."""
    present = pc.is_valid(text)
    if spec.kind == "str":
        typed = text
        ok = present
        if spec.min_length is not None or spec.max_length is not None:
            length = pc.utf8_length(text)
            if spec.min_length is not None:
                ok = pc.and_(ok, pc.greater_equal(length, spec.min_length))
            if spec.max_length is not None:
                ok = pc.and_(ok, pc.less_equal(length, spec.max_length))
        if spec.pattern is not None:
            ok = pc.and_(ok, pc.match_substring_regex(text, spec.pattern))
        if spec.choices is not None:
            ok = pc.and_(ok, pc.is_in(text, value_set=pa.array(spec.choices)))
    elif spec.kind == "bool":
        lowered = pc.utf8_lower(text)
        truthy = pc.is_in(lowered, value_set=pa.array(TRUE_TEXT))
        ok = pc.or_(truthy, pc.is_in(lowered, value_set=pa.array(FALSE_TEXT)))
        typed = pc.if_else(present, truthy, pa.scalar(None, pa.bool_()))
    elif (typed := _cast_plain(spec, text)) is not None:
        ok = _bounds(spec, typed, present)
    else:
        pattern = {"int": INT_TEXT, "float": FLOAT_TEXT, "date": DATE_TEXT}[spec.kind]
        ok = pc.fill_null(pc.match_substring_regex(text, pattern), False)
        candidate = pc.if_else(ok, text, pa.scalar(None, pa.string()))
        if spec.kind == "date":
            stamps = pc.strptime(candidate, format="%Y-%m-%d", unit="s", error_is_null=True)
            typed = pc.cast(stamps, pa.date32())
            # strptime rolls impossible days over (2021-02-30 → 03-02): require a round trip
            ok = pc.and_(ok, pc.fill_null(pc.equal(pc.cast(typed, pa.string()), candidate), False))
        else:
            typed = pc.cast(pc.replace_substring_regex(candidate, r"^\+", ""), spec.arrow_type)
        ok = _bounds(spec, typed, ok)
    if spec.kind == "float":  # "1e400" parses as inf: whether a schema allows it is pydantic's call
        ok = pc.and_(ok, pc.fill_null(pc.is_finite(typed), True))
    ok = pc.fill_null(ok, False)
    if spec.required:
        return typed, ok
    missing_ok = pc.invert(present)
    if spec.default is not None:
        typed = pc.fill_null(typed, pa.scalar(spec.default, spec.arrow_type))
    return typed, pc.or_(ok, missing_ok)


def format_errors(error: ValidationError, original: dict[str, Any] | None = None) -> tuple[str, str]:
    """One readable line naming each failing field, as pydantic describes it, and the same line
    without the offending values (the reason, for grouping failures). A field's value is shown
    as it was in the file (`original`), not as normalised ('Germany', not 'GERMANY')."""
    return format_error_items(error.errors(include_url=False), original)


def format_error_items(items: list[dict], original: dict[str, Any] | None = None) -> tuple[str, str]:
    """`format_errors` for the items of one record's `ValidationError.errors()`."""
    parts, reasons = [], []
    for item in items:
        where = ".".join(str(p) for p in item["loc"]) or "record"
        got = item.get("input")
        if original and len(item["loc"]) == 1 and original.get(item["loc"][0]) is not None:
            got = original[item["loc"][0]]
        shown = "" if item["type"] == "missing" or isinstance(got, dict) else f" (got {_short(got)})"
        parts.append(f"{where}: {item['msg']}{shown}")
        reasons.append(f"{where}: {item['msg']}")
    return "; ".join(parts), "; ".join(reasons)


def _short(value: Any, limit: int = 60) -> str:
    """Quote the offending value, shortened: a 1 MB field must not make a 1 MB message."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(str(value)):,} characters)"


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None and k != ROW}


def _typed_rows(models: list[Any], plan: SchemaPlan, rows: list[int]) -> pa.Table:
    """Turn pydantic-validated records into a typed table with the plan's column types."""
    columns = {}
    dumped = [m.model_dump() for m in models]
    for spec in plan.columns:
        values = [d.get(spec.name) for d in dumped]
        if spec.kind == "json":
            values = [None if v is None else json.dumps(v, default=str) for v in values]
        elif spec.kind == "decimal":  # stored as a float (ARROW_TYPES), as every engine can
            values = [None if v is None else float(v) for v in values]
        columns[spec.name] = pa.array(values, spec.arrow_type)
    columns[ROW] = pa.array(rows, pa.int64())
    return pa.table(columns)


def validate_rows(normalised: pa.Table, raw: pa.Table, plan: SchemaPlan) -> ValidationResult:
    """The row-wise path: pydantic validates each record (for schemas Arrow cannot express)."""
    adapter = TypeAdapter(list[plan.model])
    records = normalised.to_pylist()
    inputs = [_present(r) for r in records]
    bad: dict[int, tuple[str, str]] = {}
    try:
        models = adapter.validate_python(inputs)
    except ValidationError:
        for i, item in enumerate(inputs):
            try:
                plan.model.model_validate(item)
            except ValidationError as exc:
                bad[i] = format_errors(exc, raw.slice(i, 1).to_pylist()[0])
        good = [i for i in range(len(inputs)) if i not in bad]
        models = adapter.validate_python([inputs[i] for i in good])
    else:
        good = list(range(len(inputs)))
    rows = [records[i][ROW] for i in good]
    raw_rows = raw.take(sorted(bad)).to_pylist() if bad else []
    rejects = [
        Reject(r[ROW], bad[i][0], {k: v for k, v in r.items() if k != ROW}, bad[i][1])
        for i, r in zip(sorted(bad), raw_rows, strict=True)
    ]
    return ValidationResult(_typed_rows(models, plan, rows), rejects)


BY_VALUE_FROM = 64
"""Suspects from which pydantic is asked once per failing value rather than once per record."""


def _rejects_by_value(plan: SchemaPlan, template: list[dict], normalised: pa.Table, raw: pa.Table,
                      column_ok: dict[str, pa.ChunkedArray]
                      ) -> tuple[list[tuple[int, Reject]], list[int] | None]:
    """The suspects' rejects with pydantic asked once per distinct failing value of a column,
    not once per record: a file's bad values repeat ('N/A', '', a wrong country name), and
    a record's message is its failing fields' messages in field order, as pydantic writes it.

    A vectorised schema has no validator that looks at two fields, so a field's error depends
    on its value alone: each value is validated inside `template`, a record of the chunk that
    passed every check. Returns the rejects (with their positions among the suspects), and
    the positions of the suspects left to
    validate one by one (pydantic accepted all their failing values, or named another field);
    None for all of them (too few suspects, or no template)."""
    if normalised.num_rows < BY_VALUE_FROM or not template:
        return [], None
    base = _present(template[0])
    fields = [spec.name for spec in plan.columns]
    rows = normalised[ROW].to_pylist()
    payloads = raw.select([c for c in raw.column_names if c != ROW]).to_pylist()
    parts: list[list[tuple[str, str]]] = [[] for _ in rows]
    unsure: set[int] = set()
    for name in fields:
        failing = pc.indices_nonzero(pc.invert(column_ok[name])).to_pylist()
        if not failing:
            continue
        values = normalised[name].take(failing).to_pylist()
        originals = raw[name].take(failing).to_pylist() if name in raw.column_names else \
            [None] * len(failing)
        verdicts: dict[tuple, tuple[str, str] | None] = {}
        for i, value, original in zip(failing, values, originals, strict=True):
            key = (value, original)
            if key not in verdicts:
                verdicts[key] = _field_verdict(plan, base, name, value, original)
            verdict = verdicts[key]
            if verdict is None:
                unsure.add(i)
            else:
                parts[i].append(verdict)
    rejects = []
    for i, (row, payload) in enumerate(zip(rows, payloads, strict=True)):
        if i in unsure or not parts[i]:
            unsure.add(i)
            continue
        message = "; ".join(p[0] for p in parts[i])
        reason = "; ".join(p[1] for p in parts[i])
        rejects.append((i, Reject(row, message, payload, reason)))
    return rejects, sorted(unsure)


def _field_verdict(plan: SchemaPlan, base: dict, name: str, value, original) -> tuple[str, str] | None:
    """pydantic's (message, reason) for field `name` holding `value` in an otherwise valid
    record; None when it accepts the value or names any other field."""
    probe = {k: v for k, v in base.items() if k != name}
    if value is not None:
        probe[name] = value
    try:
        plan.model.model_validate(probe)
    except ValidationError as exc:
        items = exc.errors(include_url=False)
        if all(item["loc"][:1] == (name,) for item in items):
            return format_error_items(items, {name: original})
    return None


def validate_table(normalised: pa.Table, raw: pa.Table, plan: SchemaPlan) -> ValidationResult:
    """Validate a chunk; `raw` (same rows, same order) supplies the payload kept for rejects."""
    if not plan.vectorised:
        return validate_rows(normalised, raw, plan)
    typed_columns, column_oks = {}, {}
    ok = None
    for spec in plan.columns:
        typed, column_ok = check_column(spec, normalised[spec.name])
        typed_columns[spec.name] = typed
        column_oks[spec.name] = column_ok
        ok = column_ok if ok is None else pc.and_(ok, column_ok)
    typed_columns[ROW] = normalised[ROW]
    typed = pa.table(typed_columns)
    if ok is None or pc.all(ok).as_py() is not False:
        return ValidationResult(typed)
    suspect_index = pc.indices_nonzero(pc.invert(ok))
    column_ok = {name: mask.take(suspect_index) for name, mask in column_oks.items()}
    first_valid = pc.index(ok, True).as_py()
    template = normalised.slice(first_valid, 1).to_pylist() if first_valid >= 0 else []
    rejects, unsure = _rejects_by_value(plan, template, normalised.take(suspect_index),
                                        raw.take(suspect_index), column_ok)
    positions = range(len(suspect_index)) if unsure is None else unsure
    picked = suspect_index if unsure is None else suspect_index.take(pa.array(unsure, pa.int64()))
    suspects = normalised.take(picked).to_pylist()
    suspect_raw = raw.take(picked).to_pylist()
    accepted, accepted_rows = [], []
    for position, record, raw_record in zip(positions, suspects, suspect_raw, strict=True):
        payload = {k: v for k, v in raw_record.items() if k != ROW}
        try:
            model = plan.model.model_validate(_present(record))
            _typed_rows([model], plan, [record[ROW]])
        except ValidationError as exc:
            message, reason = format_errors(exc, payload)
            rejects.append((position, Reject(record[ROW], message, payload, reason)))
        except (pa.ArrowInvalid, OverflowError):
            reason = "record: a value does not fit its column type (64-bit integer or float)"
            rejects.append((position, Reject(record[ROW], reason, payload, reason)))
        else:
            accepted.append(model)
            accepted_rows.append(record[ROW])
    valid = typed.filter(ok)
    if accepted:
        valid = pa.concat_tables([valid, _typed_rows(accepted, plan, accepted_rows)])
    rejects.sort(key=lambda found: found[0])  # in the chunk's order, as the records came
    return ValidationResult(valid, [reject for _, reject in rejects])
