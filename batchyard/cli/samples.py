"""The sample-data commands: `generate` (a sample users file) and `demo` (one imported)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from batchyard.cli.common import EXIT_NOT_COMPLETED, finished, print_summary, run_flow


def register(app: typer.Typer) -> None:
    """Add `generate` and `demo` to `app`."""
    app.command()(generate)
    app.command()(demo)


def generate(
    path: Annotated[Path, typer.Argument(help="Output file (.csv or .parquet).")],
    rows: Annotated[int, typer.Option(min=1, help="Number of records.")] = 100_000,
    clean: Annotated[bool, typer.Option(help="No deliberately bad rows.")] = False,
) -> None:
    """Write a deterministic sample users file."""
    from batchyard.demo import expected_counts, write_users

    write_users(path, rows, bad=not clean)
    counts = expected_counts(rows) if not clean else {"total": rows, "success": rows}
    typer.echo(f"wrote {rows:,} users to {path} (expected: {counts})")


def demo(
    directory: Annotated[Path, typer.Option(help="Where to put the demo files.")] = Path("demo"),
    rows: Annotated[int, typer.Option(min=1)] = 100_000,
) -> None:
    """Make a sample users file with some bad rows and import it into SQLite."""
    from batchyard.demo import write_users

    source = write_users(directory / "users.csv", rows)
    db_path = directory / "batchyard.db"
    db = f"sqlite:///{db_path}"
    typer.echo(f"sample file: {source} ({rows:,} users, some deliberately bad)")
    from batchyard.ingest.lifecycle import preflight
    from flows.batch_import import batch_import

    job, options = preflight(str(source), "users", db, None, None, None, ",", "utf-8", None)
    state = run_flow(batch_import, source=str(source), schema_name="users", db=db,
                     batch_id=job.batch_id, options=options)
    summary = finished(state, job)
    print_summary(summary, False)
    typer.echo("")
    me = _command_name()
    typer.echo("where to look next:")
    typer.echo(f"  the data:     sqlite3 {db_path} 'select count(*) from users'")
    typer.echo(f"  the ledger:   {me} status {summary['batch_id']} --db {db}")
    typer.echo(f"                {me} list --db {db}")
    typer.echo(f"                {me} errors {summary['batch_id']} --db {db}")
    if summary.get("rejects_file"):
        typer.echo(f"  the rejects:  {summary['rejects_file']}")
    from prefect.utilities.urls import url_for

    link = url_for("flow-run", obj_id=summary["flow_run_id"]) if summary.get("flow_run_id") else None
    if link:
        typer.echo(f"  the run:      {link} (the Prefect UI; {me} server status)")
    else:
        typer.echo(f"  the UI:       {me} server start, then run the demo again and open the "
                   "link it prints")
    if summary["status"] != "completed":
        raise typer.Exit(EXIT_NOT_COMPLETED)


def _command_name() -> str:
    """How the user can call this command again from here (`.venv/bin/batchyard` after setup)."""
    invoked = Path(sys.argv[0])
    try:
        return str(invoked.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return invoked.name
