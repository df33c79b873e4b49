"""Record schemas: pydantic models plus the few facts a bulk load needs (key, derived columns).

A schema is a plain pydantic model. `compile_plan` turns its fields into column specs so that
validation can run on whole Arrow columns at C speed; pydantic itself stays the authority for
every record the vectorised checks reject, so the messages users see are pydantic's own.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

import annotated_types as at
import pyarrow as pa
from pydantic import AwareDatetime, BaseModel, ConfigDict, NaiveDatetime
from pydantic.fields import FieldInfo

from batchyard.chunks import BATCH, ROW
from batchyard.errors import ConfigurationError


class Lower:
    """Marker: lower-case this column before validation."""


class Upper:
    """Marker: upper-case this column before validation."""


class CollapseSpaces:
    """Marker: collapse runs of whitespace inside the value to one space."""


class RecordSchema(BaseModel):
    """Base for batchyard schemas; a plain `BaseModel` works too (key: `__batchyard_key__`, else
    an `id` field; a model with neither is refused).

    Subclasses may set `__batchyard_key__` (key fields), `__batchyard_table__` (default target
    table) and override `derive` (vectorised derived columns, declared in `derived_columns`).
    Text keeps its whitespace unless the model asks for stripping (`str_strip_whitespace` in
    its `model_config`, or a field's `StringConstraints(strip_whitespace=True)`).
    """

    model_config = ConfigDict(extra="ignore")

    derived_columns: ClassVar[dict[str, pa.DataType]] = {}

    @classmethod
    def derive(cls, table: pa.Table) -> pa.Table:
        return table


KINDS: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str", dt.date: "date"}
ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "decimal": pa.float64(),
    "json": pa.string(),
}


@dataclass
class ColumnSpec:
    name: str
    kind: str
    required: bool
    nullable: bool
    default: Any = None
    ge: Any = None
    gt: Any = None
    le: Any = None
    lt: Any = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    allow_inf_nan: bool = True
    markers: set[type] = field(default_factory=set)
    strip: bool = False
    vectorised: bool = True
    alias: str | None = None
    """The header the column is read from when it is not the field's name (`"Order ID"`)."""

    @property
    def source_name(self) -> str:
        return self.alias or self.name

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.kind]


@dataclass
class SchemaPlan:
    model: type[BaseModel]
    name: str
    columns: list[ColumnSpec]
    key: tuple[str, ...]
    derived: dict[str, pa.DataType]
    vectorised: bool
    keyless: bool = False
    """Declared keyless (`__batchyard_key__ = ()`): rows are appended, each identified by its
    batch and row number (`table_key`), so a resumed or retried chunk never writes twice."""

    @property
    def table_key(self) -> tuple[str, ...]:
        """The target table's primary key: the schema's key, or (batch, row) when keyless."""
        return self.key or (BATCH, ROW)

    @property
    def field_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required_names(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def output_schema(self) -> pa.Schema:
        fields = [pa.field(c.name, c.arrow_type) for c in self.columns]
        fields += [pa.field(n, t) for n, t in self.derived.items()]
        return pa.schema(fields)

    def derive(self, table: pa.Table) -> pa.Table:
        derive = getattr(self.model, "derive", None)
        return derive(table) if derive is not None else table


def _unwrap(annotation: Any) -> tuple[Any, bool, list[Any]]:
    """Strip Optional and Annotated; return the base type, nullability and collected metadata."""
    metadata: list[Any] = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            base, *extra = typing.get_args(annotation)
            metadata.extend(extra)
            annotation = base
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != len(typing.get_args(annotation)):
                nullable = True
            if len(args) != 1:
                return annotation, nullable, metadata
            annotation = args[0]
        else:
            return annotation, nullable, metadata


_CONSTRAINTS: dict[type, str] = {at.Ge: "ge", at.Gt: "gt", at.Le: "le", at.Lt: "lt",
                                 at.MinLen: "min_length", at.MaxLen: "max_length"}
"""annotated-types constraints and the ColumnSpec attribute each sets (of the same name)."""


def _apply_metadata(spec: ColumnSpec, items: list[Any]) -> None:
    for item in items:
        if isinstance(item, FieldInfo):
            _apply_metadata(spec, list(item.metadata))
        elif isinstance(item, type) and item in (Lower, Upper, CollapseSpaces):
            spec.markers.add(item)
        elif type(item) in _CONSTRAINTS:
            name = _CONSTRAINTS[type(item)]
            setattr(spec, name, getattr(item, name))
        elif type(item).__name__ == "StringConstraints":
            spec.min_length = item.min_length if item.min_length is not None else spec.min_length
            spec.max_length = item.max_length if item.max_length is not None else spec.max_length
            if item.pattern is not None:
                spec.pattern = str(item.pattern)
            if item.strip_whitespace:
                spec.strip = True
            if item.to_lower:
                spec.markers.add(Lower)
            if item.to_upper:
                spec.markers.add(Upper)
        elif hasattr(item, "pattern") and type(item).__name__ == "_PydanticGeneralMetadata":
            spec.pattern = item.pattern
        elif getattr(item, "allow_inf_nan", None) is False:
            spec.allow_inf_nan = False
        elif type(item).__name__ in ("Strict", "MultipleOf", "Interval") or callable(item):
            spec.vectorised = False


def _column_spec(name: str, info: FieldInfo) -> ColumnSpec:
    base, nullable, metadata = _unwrap(info.annotation)
    required = info.is_required()
    spec = ColumnSpec(
        name=name,
        kind="json",
        required=required,
        nullable=nullable,
        default=None if required else info.get_default(call_default_factory=True),
        alias=info.alias if info.alias and info.alias != name else None,
    )
    _apply_metadata(spec, list(info.metadata) + metadata)
    if typing.get_origin(base) is Literal and all(isinstance(a, str) for a in typing.get_args(base)):
        spec.kind, spec.choices = "str", tuple(typing.get_args(base))
    elif isinstance(base, type) and issubclass(base, Enum) and issubclass(base, str):
        spec.kind, spec.choices = "str", tuple(m.value for m in base)
        spec.vectorised = False
    elif base in KINDS:
        spec.kind = KINDS[base]
    elif base is AwareDatetime:
        spec.kind, spec.vectorised = "timestamptz", False
    elif base in (dt.datetime, NaiveDatetime):
        spec.kind, spec.vectorised = "datetime", False
    else:
        spec.kind, spec.vectorised = ("decimal" if getattr(base, "__name__", "") == "Decimal"
                                      else "json"), False
    return spec


def _has_custom_validators(model: type[BaseModel]) -> bool:
    decorators = model.__pydantic_decorators__
    return bool(
        decorators.field_validators or decorators.model_validators or decorators.validators
    )


def declared_key(model: type[BaseModel]) -> tuple[str, ...] | None:
    """The model's `__batchyard_key__` as declared (`()` for keyless), None when undeclared."""
    for klass in model.__mro__:
        if "__batchyard_key__" in vars(klass):
            return tuple(vars(klass)["__batchyard_key__"] or ())
    return None


def compile_plan(model: type[BaseModel], name: str | None = None) -> SchemaPlan:
    """The plan of a pydantic model: its column specs, key and derived columns.

    The key is `__batchyard_key__`, else a field named `id`; batchyard never picks one the user
    did not name (keyed on a wrong column, most records would be ignored as duplicates). A
    model that declares `__batchyard_key__ = ()` is keyless. Raises ConfigurationError for a
    model with no key declared and no `id` field."""
    columns = [_column_spec(n, f) for n, f in model.model_fields.items()]
    names = [c.name for c in columns]
    declared = declared_key(model)
    keyless = declared == ()
    key = declared or (("id",) if "id" in names and declared is None else ())
    if not key and not keyless:
        raise ConfigurationError(
            f"schema {name or model.__name__}: no key: declare one with __batchyard_key__ = "
            f"(\"{names[0] if names else 'column'}\",) on {model.__name__} (or give it an id field; "
            f"__batchyard_key__ = () declares it keyless)"
        )
    unknown = [k for k in key if k not in names]
    if unknown:
        raise ConfigurationError(f"schema {name or model.__name__}: key column(s) {', '.join(unknown)} "
                                 f"are not fields of {model.__name__}")
    if model.model_config.get("str_strip_whitespace"):
        for column in columns:
            column.strip = True
    derived = dict(getattr(model, "derived_columns", {}) or {})
    vectorised = all(c.vectorised for c in columns) and not _has_custom_validators(model)
    return SchemaPlan(
        model=model,
        name=name or model.__name__.lower(),
        columns=columns,
        key=key,
        derived=derived,
        vectorised=vectorised,
        keyless=keyless,
    )
