"""Writing an inferred model (`infer.ModelSpec`) as a plain pydantic module a person reads,
edits and commits: one field per line, constraints spelled out, what the sample showed in the
module's docstring. Nothing in it depends on batchyard: it imports as any custom schema does.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from batchyard.schemas.infer import ColumnFacts, FieldSpec, ModelSpec

TYPES = {"bool": "bool", "int": "int", "float": "float", "decimal": "Decimal", "date": "dt.date",
         "datetime": "dt.datetime", "timestamptz": "AwareDatetime", "str": "str"}
CONSTRAINT_ORDER = ("ge", "le", "max_digits", "decimal_places", "max_length", "pattern")


def _doc_text(text: str) -> str:
    """Text safe inside a triple-quoted docstring."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _short(value: str, limit: int = 24) -> str:
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"


def seen(facts: ColumnFacts) -> str:
    """What the sample held, in a few characters: a range, or the commonest values."""
    if not facts.present:
        return "(always missing)"
    if facts.minimum is not None and facts.kind != "str":
        return f"{facts.minimum} .. {facts.maximum}"
    more = ", ..." if facts.distinct > len(facts.examples[:3]) else ""
    return ", ".join(_short(e) for e in facts.examples[:3]) + more


def _literal(value: Any) -> str:
    if isinstance(value, Decimal):
        return f'Decimal("{value}")'
    if isinstance(value, str):
        if '"' not in value and not value.endswith("\\"):
            return f'r"{value}"' if "\\" in value else f'"{value}"'
        return repr(value)
    return repr(value)


def annotation(spec: FieldSpec) -> str:
    """The field's type as written in the module: `float | None`, `Literal["a", "b"]`."""
    facts = spec.facts
    if facts.choices is not None:
        base = "Literal[" + ", ".join(_literal(c) for c in facts.choices) + "]"
    else:
        base = TYPES[facts.kind]
    return f"{base} | None" if spec.optional else base


def field_line(spec: FieldSpec) -> str:
    """`    dep_time: float | None = Field(None, ge=0, le=2400)`."""
    arguments = ["None"] if spec.optional else []
    if spec.alias is not None:
        arguments.append(f"alias={_literal(spec.alias)}")
    arguments += [f"{k}={_literal(spec.constraints[k])}" for k in CONSTRAINT_ORDER
                  if k in spec.constraints]
    if not arguments:
        return f"    {spec.name}: {annotation(spec)}"
    if arguments == ["None"]:
        return f"    {spec.name}: {annotation(spec)} = None"
    return f"    {spec.name}: {annotation(spec)} = Field({', '.join(arguments)})"


def facts_table(fields: list[FieldSpec]) -> list[str]:
    """The docstring's table: one line per column with its type, nulls, distinct and range."""
    width = max([len("column"), *(len(f.facts.header) for f in fields)])
    lines = [f"{'column':<{width}}  {'type':<11} {'nulls':>9} {'distinct':>9}  seen"]
    for f in fields:
        kind = "Literal" if f.facts.choices is not None else f.facts.kind
        lines.append(f"{f.facts.header:<{width}}  {kind:<11} {f.facts.nulls:>9,} "
                     f"{f.facts.distinct:>9,}  {seen(f.facts)}")
    return lines


def _imports(fields: list[FieldSpec]) -> list[str]:
    kinds = {f.facts.kind for f in fields if f.facts.choices is None}
    lines = []
    if kinds & {"date", "datetime"}:
        lines.append("import datetime as dt")
    if "decimal" in kinds:
        lines.append("from decimal import Decimal")
    if any(f.facts.choices is not None for f in fields):
        lines.append("from typing import Literal")
    if lines:
        lines.append("")
    names = ["AwareDatetime"] if "timestamptz" in kinds else []
    names += ["BaseModel", "ConfigDict"]
    if any("Field(" in field_line(f) for f in fields):
        names.append("Field")
    lines.append(f"from pydantic import {', '.join(names)}")
    return lines


def key_line(key: tuple[str, ...]) -> str:
    if not key:
        return "    __batchyard_key__ = ()  # keyless: rows are appended, identified by batch and row"
    return f"    __batchyard_key__ = ({', '.join(_literal(k) for k in key)},)"


def render_module(spec: ModelSpec) -> str:
    """The module's text."""
    key = ", ".join(spec.key) if spec.key else "none"
    doc = [
        f"{spec.class_name}: a batchyard contract inferred from {spec.source}.",
        "",
        f"Sampled: {spec.sampled}.",
        f"Key: {key} ({spec.key_reason}).",
        "Review it before importing with it: loosen a bound, widen a Literal, name the key.",
        "",
        *facts_table(spec.fields),
    ]
    lines = ['"""' + _doc_text(doc[0]), *(_doc_text(d).rstrip() for d in doc[1:]), '"""', ""]
    lines += _imports(spec.fields)
    lines += ["", "", f"class {spec.class_name}(BaseModel):",
              f'    """One record of {_doc_text(spec.source)}."""', "",
              '    model_config = ConfigDict(extra="ignore", populate_by_name=True)', "",
              key_line(spec.key), f"    __batchyard_table__ = {_literal(spec.table)}", ""]
    lines += [field_line(f) for f in spec.fields]
    return "\n".join(lines) + "\n"
