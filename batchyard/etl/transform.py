"""Transforms: pure functions from one Arrow table to another, applied batch by batch.

The metadata columns are those of the Temporal data pipeline this one follows (`processed_at`,
the pipeline version) plus the source id the extractor already wrote, so every loaded row says
where and when it came from.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from batchyard.errors import ConfigurationError
from batchyard.etl.spec import TransformSpec
from batchyard.identifiers import check_identifier

PROCESSED_AT = "_processed_at"
VERSION = "_pipeline_version"


def rename_columns(table: pa.Table, mapping: dict[str, str]) -> pa.Table:
    missing = [old for old in mapping if old not in table.column_names]
    if missing:
        raise ConfigurationError(f"cannot rename missing column(s) {', '.join(missing)}")
    return table.rename_columns([mapping.get(name, name) for name in table.column_names])


def drop_columns(table: pa.Table, names: list[str]) -> pa.Table:
    return table.drop_columns([n for n in names if n in table.column_names])


def strip_strings(table: pa.Table) -> pa.Table:
    for i, column in enumerate(table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            table = table.set_column(i, table.field(i), pc.utf8_trim_whitespace(column))
    return table


def add_metadata(table: pa.Table, version: str, processed_at: dt.datetime) -> pa.Table:
    n = table.num_rows
    table = drop_columns(table, [PROCESSED_AT, VERSION])
    table = table.append_column(PROCESSED_AT, pa.array([processed_at] * n, pa.timestamp("us", "UTC")))
    return table.append_column(VERSION, pa.array([version] * n, pa.string()))


def user_function(reference: str) -> Callable[[pa.Table], pa.Table]:
    """`module:function`, imported by name so a spec can name it."""
    module_name, _, name = reference.partition(":")
    if not module_name or not name:
        raise ConfigurationError(f"transform function {reference!r}: use module:function")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"transform function {reference!r}: {exc}") from None
    if not callable(function):
        raise ConfigurationError(f"transform function {reference!r} is not callable")
    return function


def apply_steps(table: pa.Table, spec: TransformSpec) -> pa.Table:
    """rename → drop → trim → user function."""
    if spec.rename:
        table = rename_columns(table, spec.rename)
    table = drop_columns(table, spec.drop)
    if spec.strip_strings:
        table = strip_strings(table)
    if spec.function:
        result = user_function(spec.function)(table)
        if not isinstance(result, pa.Table):
            raise ConfigurationError(f"transform function {spec.function} returned "
                                     f"{type(result).__name__}, not a pyarrow Table")
        table = result
    return table


def transform_table(table: pa.Table, spec: TransformSpec, version: str,
                    processed_at: dt.datetime | None = None,
                    own: TransformSpec | None = None) -> pa.Table:
    """The source's `own` steps, then the pipeline's (`spec`), then the metadata; the result's
    names are checked, since they become column names in the target."""
    for steps in (own, spec):
        if steps is not None:
            table = apply_steps(table, steps)
    for name in table.column_names:
        check_identifier(name, "column name")
    return add_metadata(table, version, processed_at or dt.datetime.now(dt.UTC))


def check_steps(source_id: str, columns: list[str] | None, own: TransformSpec | None,
                spec: TransformSpec) -> set[str]:
    """Refuse, before anything is extracted, transform steps that name columns the source does
    not produce (`columns`; None when they cannot be known before its records arrive): its own
    steps' renames and drops, and the pipeline's renames. Returns the source's columns as the
    pipeline's steps see them (empty when unknown), so that the caller can check the
    pipeline's drops against all sources.

    Raises ConfigurationError naming the source, the columns and the ones it has."""
    if columns is None:
        return set()
    names = list(columns)
    if own is not None:
        missing = [c for c in [*own.rename, *own.drop] if c not in names]
        if missing:
            raise ConfigurationError(
                f"source {source_id}: its transform names column(s) {', '.join(missing)} it does "
                f"not produce (columns: {', '.join(names)})")
        if own.function:
            return set()  # what a function returns is only known when it runs
        names = [own.rename.get(c, c) for c in names if c not in own.drop]
    missing = [c for c in spec.rename if c not in names]
    if missing:
        raise ConfigurationError(
            f"the pipeline's transform renames column(s) {', '.join(missing)}, which source "
            f"{source_id} does not produce (columns: {', '.join(names)}); give that source its "
            "own transform (sources[].transform)")
    return set(names)
