"""The `schema` commands: `infer` writes a reviewable pydantic module from a file; `show`,
`diff` and `history` print the contracts saved in a ledger database (they only read); `save`
makes a reviewed module a table's next contract version."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Annotated

import typer

from batchyard.cli.common import DEFAULT_DB, DbOption, fail, resolve_db
from batchyard.errors import BatchyardError

schema_app = typer.Typer(no_args_is_help=True, help=(
    "Infer a schema from a file; show the contracts saved beside a table."))

FormatOption = Annotated[str | None, typer.Option("--format", help="csv, jsonl, parquet, xlsx.")]
DelimiterOption = Annotated[str, typer.Option(help="CSV delimiter.")]
EncodingOption = Annotated[str, typer.Option(help="Text encoding.")]
SheetOption = Annotated[str | None, typer.Option(help="Excel sheet name.")]
NullValuesOption = Annotated[str | None, typer.Option(
    help="Comma-separated values that mean missing, e.g. 'NA,N/A'.")]


def register(app: typer.Typer) -> None:
    app.add_typer(schema_app, name="schema")


def infer(
    source: Annotated[Path, typer.Argument(help="CSV, JSON Lines, Parquet or .xlsx file.")],
    out: Annotated[Path | None, typer.Option(help="Write the module here (default: stdout).")] = None,
    name: Annotated[str | None, typer.Option(help="The model's class name (default: from the "
                                                  "file name).")] = None,
    key: Annotated[str | None, typer.Option(help=(
        "Key column(s), comma-separated, or none for a keyless table (default: a column "
        "unique and never missing in the sample, else none)."))] = None,
    sample: Annotated[int, typer.Option(help=(
        "Records read from the start; a tenth as many more are spread over the rest."))] = 100_000,
    table: Annotated[str | None, typer.Option(help="The model's default table (default: from "
                                                   "the file name).")] = None,
    fmt: FormatOption = None,
    delimiter: DelimiterOption = ",",
    encoding: EncodingOption = "utf-8",
    sheet: SheetOption = None,
    null_values: NullValuesOption = None,
) -> None:
    """Write a pydantic model of a file's columns, typed and constrained from a sample.

    What the sample showed is in the module's docstring. Review it, then import with
    --schema FILE.py:Class."""
    from batchyard.contracts.resolve import infer_text
    from batchyard.ingest.lifecycle import source_options

    if sample < 1:
        fail(f"--sample must be at least 1, not {sample}")
    try:
        options = source_options(fmt, delimiter, encoding, sheet,
                                 null_values.split(",") if null_values else None)
        spec, text = infer_text(source, options, name=name, key=key, table=table, first=sample)
    except BatchyardError as exc:
        fail(str(exc))
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    key_text = ", ".join(spec.key) if spec.key else "none (keyless)"
    typer.echo(f"wrote {out}: class {spec.class_name}, {len(spec.fields)} fields, key {key_text}, "
               f"from {spec.sampled}", err=True)
    given = [f"--format {fmt}" if fmt else "", f"--delimiter '{delimiter}'" if delimiter != "," else "",
             f"--encoding {encoding}" if encoding != "utf-8" else "",
             f"--sheet '{sheet}'" if sheet else "", f"--null-values '{null_values}'" if null_values else ""]
    flags = "".join(f" {g}" for g in given if g)
    typer.echo(f"review it, then: batchyard import {source} --schema {out}:{spec.class_name}{flags}",
               err=True)


def show(
    table: Annotated[str, typer.Argument(help="The target table.")],
    db: DbOption = DEFAULT_DB,
    version: Annotated[int | None, typer.Option(help="This version (default: the latest).")] = None,
) -> None:
    """Print the module of a table's saved contract."""
    from batchyard.contracts.store import read_contracts

    contracts = _contracts(db, table, read_contracts)
    chosen = _version(contracts, version, table)
    typer.echo(f"# contract of table {table}, version {chosen['version']} of {len(contracts)} "
               f"({chosen['change']}, {chosen['created_at']})", err=True)
    sys.stdout.write(chosen["module_text"])


def diff(
    table: Annotated[str, typer.Argument(help="The target table.")],
    db: DbOption = DEFAULT_DB,
    old: Annotated[int | None, typer.Option("--from", help="Old version (default: the one "
                                                            "before the new).")] = None,
    new: Annotated[int | None, typer.Option("--to", help="New version (default: the latest).")] = None,
) -> None:
    """Show what changed between two versions of a table's contract, as a unified diff."""
    from batchyard.contracts.store import read_contracts

    contracts = _contracts(db, table, read_contracts)
    after = _version(contracts, new, table)
    before = _version(contracts, old if old is not None else max(after["version"] - 1, 1), table)
    lines = difflib.unified_diff(before["module_text"].splitlines(keepends=True),
                                 after["module_text"].splitlines(keepends=True),
                                 fromfile=f"{table} v{before['version']}",
                                 tofile=f"{table} v{after['version']}")
    text = "".join(lines)
    sys.stdout.write(text or f"versions {before['version']} and {after['version']} are the same\n")


def history(
    table: Annotated[str, typer.Argument(help="The target table.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """List the versions of a table's contract: when, from which file and batch, and why."""
    from batchyard.contracts.store import read_contracts

    for c in _contracts(db, table, read_contracts):
        typer.echo(f"v{c['version']}  {c['created_at']}  {c['class_name']}  {c['change']}  "
                   f"(from {c['source']})")


def save(
    table: Annotated[str, typer.Argument(help="The target table.")],
    schema: Annotated[str, typer.Argument(help="The reviewed module, PATH.py:Class.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Save a reviewed module as the table's next contract version (what --schema infer then
    imports with); the table gains its new optional columns."""
    from batchyard.contracts.resolve import save_reviewed
    from batchyard.schemas import is_file_ref

    if not is_file_ref(schema):
        fail(f"{schema!r}: give the module as PATH.py:Class")
    try:
        saved = save_reviewed(resolve_db(db), table, schema)
    except BatchyardError as exc:
        fail(str(exc))
    if saved.action == "used":
        typer.echo(f"contract of table {table}: version {saved.version} is already this module; "
                   "nothing saved")
        return
    typer.echo(saved.describe())


def _contracts(db: str, table: str, read) -> list[dict]:
    try:
        contracts = read(resolve_db(db), table)
    except BatchyardError as exc:
        fail(str(exc))
    if not contracts:
        fail(f"no contract for table {table} in {_safe(db)}")
    return contracts


def _version(contracts: list[dict], version: int | None, table: str) -> dict:
    if version is None:
        return contracts[-1]
    found = [c for c in contracts if c["version"] == version]
    if not found:
        fail(f"table {table} has no contract version {version} (versions 1 to {len(contracts)})")
    return found[0]


def _safe(db: str) -> str:
    from batchyard.engines import safe_url

    return safe_url(db)


schema_app.command()(infer)
schema_app.command()(show)
schema_app.command()(diff)
schema_app.command()(history)
schema_app.command()(save)
