"""`--schema infer`: the contract a file is imported with.

A table with no contract gets one inferred from the file, saved as version 1 in the ledger
database. A table with one has the file checked against it first: no drift (or only changes
within the threshold) imports with it; drift stops the import before anything is loaded, with
the report; with `--evolve`, additive drift (new columns) becomes a new version whose new
optional fields the table gains, and the import goes on with it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from batchyard.contracts.drift import DriftReport, check_drift
from batchyard.contracts.evolve import add_fields, new_fields
from batchyard.contracts.store import latest, materialize, restore, save
from batchyard.engines import check_connection, session
from batchyard.errors import VALIDATION_ERROR, BatchyardError, ConfigurationError
from batchyard.identifiers import check_identifier
from batchyard.ingest.load import add_columns
from batchyard.readers import SourceOptions
from batchyard.schemas import is_file_ref, load_schema
from batchyard.schemas.infer import ModelSpec, infer_model, table_name
from batchyard.schemas.render import render_module
from batchyard.schemas.sample import DEFAULT_FIRST, sample_source
from batchyard.settings import get_settings

INFER = "infer"


class ContractDrift(BatchyardError):
    """A file that drifted from its table's contract: nothing was loaded. The message is one
    line; `report` has the whole drift report."""

    code = VALIDATION_ERROR

    def __init__(self, message: str, report: DriftReport):
        super().__init__(message)
        self.report = report

    def __reduce__(self):
        return type(self), (self.args[0], self.report)


@dataclass
class Resolved:
    """The schema to import with and what happened to the contract on the way."""

    schema_ref: str
    table: str
    version: int
    action: str  # inferred | used | evolved | saved
    added: list[str] = field(default_factory=list)
    report: DriftReport | None = None

    def describe(self) -> str:
        if self.action == "inferred":
            return f"contract of table {self.table}: version 1, inferred from the file and saved"
        if self.action == "evolved":
            return (f"contract of table {self.table}: version {self.version}, evolved: added "
                    f"optional column(s) {', '.join(self.added)}")
        if self.action == "saved":
            added = f"; the table gained {', '.join(self.added)}" if self.added else ""
            return f"contract of table {self.table}: version {self.version}, saved{added}"
        return f"contract of table {self.table}: version {self.version}, the file matches it"


def infer_text(source: str | Path, options: SourceOptions, name: str | None = None,
               key: str | None = None, table: str | None = None,
               first: int = DEFAULT_FIRST) -> tuple[ModelSpec, str]:
    """The inferred model of a file and its module's text (`batchyard schema infer`)."""
    sample = sample_source(source, options, first)
    if table is not None:
        check_identifier(table)
    spec = infer_model(sample, name=name, key=key, table=table)
    return spec, render_module(spec)


def _refusal(report: DriftReport, evolve: bool) -> str:
    blocking = report.blocking(evolve)
    kinds = ", ".join(dict.fromkeys(f"{c.kind} {c.column}" for c in blocking))
    advice = ("--evolve accepts only new columns; change the file or review the contract "
              "(batchyard schema show)") if evolve or not all(c.additive for c in blocking) \
        else "pass --evolve to add the new column(s) to the contract and the table"
    return (f"the file drifted from the contract of table {report.table} (version "
            f"{report.version}): {kinds}; nothing was loaded; {advice}")


def resolve_contract(source: str | Path, options: SourceOptions, db: str, table: str | None = None,
                     key: str | None = None, evolve: bool = False,
                     first: int = DEFAULT_FIRST) -> Resolved:
    """The contract `source` is imported into `table` with (see the module's docstring).

    Raises ContractDrift with the report when the file drifted, SourceError when it cannot be
    read, ConfigurationError for a bad table name or an unreachable database."""
    source = Path(source)
    sample = sample_source(source, options, first)
    table = table or table_name(source.stem)
    check_identifier(table)
    check_connection(db)
    with session(db) as connection:
        current = latest(connection, table)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if current is None:
        spec = infer_model(sample, key=key, table=table)
        with session(db, write=True) as connection:
            row = save(connection, table, spec.class_name, render_module(spec), str(source),
                       f"inferred from {source.name} on {when}")
        return Resolved(materialize(row), table, row["version"], "inferred")
    plan = load_schema(materialize(current))
    report = check_drift(sample, plan, table, current["version"], get_settings().drift_threshold)
    if report.blocking(evolve):
        raise ContractDrift(_refusal(report, evolve), report)
    additive = report.additive()
    if not additive:
        return Resolved(materialize(current), table, current["version"], "used", report=report)
    fields = new_fields(additive, [c.name for c in plan.columns])
    added = [f.name for f in fields]
    version = current["version"] + 1
    text = add_fields(current["module_text"], current["class_name"], fields,
                      f"added in version {version} by --evolve, from {source.name} on {when}")
    with session(db, write=True) as connection:
        row = save(connection, table, current["class_name"], text, str(source),
                   f"evolved: added {', '.join(added)} from {source.name} on {when}")
        ref = materialize(row)
        add_columns(connection, load_schema(ref), table)
    return Resolved(ref, table, row["version"], "evolved", added, report)


def save_reviewed(db: str, table: str, schema_ref: str) -> Resolved:
    """A reviewed module (`PATH.py:Class`) as the next version of `table`'s contract
    (`batchyard schema save`); the table gains the module's new optional columns. An unchanged
    module saves nothing.

    Raises ConfigurationError for a module that does not load as a schema, or whose key is
    not the existing table's."""
    check_identifier(table)
    plan = load_schema(schema_ref)
    path_text, _, class_name = schema_ref.rpartition(":")
    text = Path(path_text).read_text()
    check_connection(db)
    with session(db, write=True) as connection:
        current = latest(connection, table)
        if current is not None and current["module_text"] == text and \
                current["class_name"] == class_name:
            return Resolved(materialize(current), table, current["version"], "used")
        existing = connection.describe(table)
        if existing is not None and set(existing[1]) != set(plan.table_key):
            raise ConfigurationError(
                f"{path_text}: its key ({', '.join(plan.table_key)}) is not table {table}'s "
                f"({', '.join(existing[1]) or 'none'})")
        row = save(connection, table, class_name, text, path_text,
                   f"reviewed: saved from {Path(path_text).name}")
        added = add_columns(connection, plan, table)
    return Resolved(materialize(row), table, row["version"], "saved", added)


def prepare_schema(schema_name: str, source: str, options: SourceOptions, db: str,
                   table: str | None, evolve: bool = False) -> tuple[str, str | None]:
    """The schema and table a batch-import run uses: `infer` resolved to its contract; a
    contract's file written again when the work directory lost it (a resume)."""
    if schema_name == INFER:
        resolved = resolve_contract(source, options, db, table, evolve=evolve)
        return resolved.schema_ref, resolved.table
    if is_file_ref(schema_name):
        restore(db, schema_name)
    return schema_name, table
