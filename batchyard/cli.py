"""The `batchyard` command: everything a user does from a terminal."""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from batchyard import temporary_server
from batchyard.errors import BatchyardError
from batchyard.prefect_runtime import RECORDER_IN_BATCHES
from batchyard.sizing import DEFAULT_CHUNK_SIZE

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Reliable bulk record imports as Prefect flows.")

EXIT_ERROR = 1
EXIT_NOT_COMPLETED = 3


def _prefect_environment() -> None:
    """No network here and none needed: telemetry off. For the temporary server of ephemeral
    mode: a generous start-up timeout (a loaded machine), and task-run states recorded in
    batches. Settings the user gave are kept."""
    for name, value in {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        **RECORDER_IN_BATCHES,
    }.items():
        os.environ.setdefault(name, value)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs task and flow exceptions with their traceback; a BatchyardError already
    says everything in one line, so its traceback is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BatchyardError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            handler.addFilter(_NoTracebackForUserErrors())


def fail(message: str, code: int = EXIT_ERROR) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def run_flow(flow, **parameters):
    """Run a flow in this process and return its final state."""
    _prefect_environment()
    temporary_server.hand_to_prefect()
    _quiet_user_errors()
    from batchyard.prefect_runtime import run_flow_cleanly

    return run_flow_cleanly(flow, parameters)


def _report(summary: dict, as_json: bool) -> None:
    """Print a finished batch; exit 3 unless it completed."""
    _print_summary(summary, as_json)
    if summary["status"] != "completed":
        raise typer.Exit(EXIT_NOT_COMPLETED)


def _print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    typer.echo(f"batch {summary['batch_id']}: {summary['status']}")
    typer.echo(
        f"  total {summary['total']:,}  success {summary['success']:,}  "
        f"failed {summary['failed']:,}  ignored {summary['ignored']:,}  "
        f"({summary['progress_percent']}%)"
    )
    if summary.get("duration_seconds") is not None:
        typer.echo(f"  duration {summary['duration_seconds']:.2f} s")
    if summary.get("rejects_file"):
        typer.echo(f"  rejected records: {summary['rejects_file']}")
    if summary.get("error"):
        typer.echo(f"  error: {summary['error']}")
    if summary.get("retry"):
        typer.echo("  retry: " + ", ".join(f"{k} {v:,}" for k, v in summary["retry"].items()))
    if summary.get("stale"):
        typer.echo("  its process is gone: resume it with batchyard resume "
                   f"{summary['batch_id']}")


TaskRunnerOption = Annotated[str, typer.Option(
    help="Where chunk tasks run: thread (default), process (a local process pool) or dask.")]
DaskAddressOption = Annotated[str | None, typer.Option(
    help="Scheduler of an existing Dask cluster, e.g. tcp://HOST:8786 (with --task-runner dask; "
         "without it dask starts a temporary local cluster).")]


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="CSV, JSON Lines, Parquet or .xlsx file.")],
    schema: Annotated[str, typer.Option(help="users, orders, or module:Class.")] = "users",
    db: Annotated[str, typer.Option(help="Target database URL.")] = "sqlite:///batchyard.db",
    table: Annotated[str | None, typer.Option(help="Target table; default from the schema.")] = None,
    chunk_size: Annotated[str, typer.Option(
        help="Records per chunk, or auto (from the machine's load, chunk by chunk).")] = str(
            DEFAULT_CHUNK_SIZE),
    max_parallel: Annotated[int, typer.Option(min=1, help=(
        "Chunks in flight at once (on threads at most one more than the cores)."))] = 10,
    batch_id: Annotated[str | None, typer.Option(help="Resume or name this batch.")] = None,
    fresh: Annotated[bool, typer.Option(help="Run a completed batch again.")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, jsonl, parquet, xlsx.")] = None,
    delimiter: Annotated[str, typer.Option(help="CSV delimiter.")] = ",",
    encoding: Annotated[str, typer.Option(help="Text encoding.")] = "utf-8",
    sheet: Annotated[str | None, typer.Option(help="Excel sheet name.")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Where to write rejected records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Import a file into a database table as a batch (the batch-import flow)."""
    from batchyard.ingest.lifecycle import preflight

    size = _chunk_size(chunk_size)
    _check_runner(task_runner, dask_address)
    try:
        job, options = preflight(str(source), schema, _resolve_db(db), table, batch_id, fmt,
                                 delimiter, encoding, sheet, fresh)
    except BatchyardError as exc:
        fail(str(exc))
    from flows.batch_import import batch_import

    state = run_flow(
        batch_import, source=job.source, schema_name=schema, db=_parameter(db, job.db),
        table=job.table,
        chunk_size=size, max_parallel=max_parallel, batch_id=job.batch_id, fresh=fresh,
        options=options, rejects_file=str(rejects) if rejects else None,
        task_runner=task_runner, dask_address=dask_address,
    )
    _report(_finished(state, job), as_json)


def _check_runner(name: str, dask_address: str | None) -> None:
    """A wrong runner or an unreachable scheduler: one line, before any batch is opened."""
    from tasks.runners import check_runner

    try:
        check_runner(name, dask_address)
    except BatchyardError as exc:
        fail(str(exc))


def _chunk_size(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        fail(f"--chunk-size must be a positive number of records or auto, not {text!r}")
    return int(text)


def _resolve_db(db: str) -> str:
    """`block:NAME` needs Prefect (the block lives on its server); plain URLs do not.

    A PostgreSQL password given in the URL moves to PGPASSWORD for this process, so that it
    is in no flow parameter, log line, artifact or ledger row (libpq reads it from there)."""
    if not db.startswith("block:"):
        return _password_to_environment(db)
    _prefect_environment()
    temporary_server.hand_to_prefect()
    from blocks.database import database_url

    try:
        return database_url(db)
    except (ValueError, KeyError) as exc:
        fail(f"cannot load database block {db!r}: {str(exc).splitlines()[0]}")


def _parameter(given: str, resolved: str) -> str:
    """What the flow run records as its `db` parameter: the block name, or the URL without
    its password; never a secret."""
    return given if given.startswith("block:") else resolved


def _password_to_environment(db: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(db)
    except Exception:
        return db  # the one-line error comes from the connection check
    if url.get_backend_name() != "postgresql" or not url.password:
        return db
    os.environ["PGPASSWORD"] = str(url.password)
    return url._replace(password=None).render_as_string(hide_password=False)  # set() keeps it


def _finished(state, job) -> dict:
    """The flow's summary, or the batch as the ledger has it when the flow failed."""
    if state.is_completed():
        return state.result()
    from batchyard.ingest.summary import batch_summary

    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # the state may hold no result at all
        error = exc
    message = str(error) if isinstance(error, BaseException) else (state.message or state.name)
    summary = batch_summary(job.db, job.batch_id)
    if summary is None or summary["status"] in ("pending", "running"):
        fail(message)
    if isinstance(error, BatchyardError):
        fail(message)
    return summary


@app.command()
def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id printed by import.")],
    db: Annotated[str, typer.Option(help="Database URL holding the ledger.")] = "sqlite:///batchyard.db",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a batch's status, counts and progress."""
    from batchyard.ingest.summary import batch_summary

    try:
        summary = batch_summary(_resolve_db(db), batch_id)
    except BatchyardError as exc:
        fail(str(exc))
    if summary is None:
        fail(f"no batch {batch_id!r} in {_safe(db)}")
    _print_summary(summary, as_json)


def _safe(db: str) -> str:
    from batchyard.engines import safe_url

    return safe_url(db)


DbOption = Annotated[str, typer.Option(help="Database URL (or block:NAME) holding the ledger.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_DB = "sqlite:///batchyard.db"


def _existing_batch(url: str, batch_id: str, fresh: bool):
    """The ledger row of a batch that may start now, and the job to run it; else exit 1."""
    from batchyard.ingest.job import ImportJob
    from batchyard.ingest.lifecycle import check_startable
    from batchyard.ingest.summary import batch_row

    try:
        batch = batch_row(url, batch_id)
        check_startable(batch, fresh=fresh)
    except BatchyardError as exc:
        fail(str(exc))
    job = ImportJob(batch_id=batch_id, source=batch["source"], schema_name=batch["schema_name"],
                    db=url, table=batch["target_table"])
    return batch, job


@app.command()
def resume(
    batch_id: Annotated[str, typer.Argument(help="A batch that did not complete.")],
    db: DbOption = DEFAULT_DB,
    max_parallel: Annotated[int, typer.Option(min=1, help=(
        "Chunks in flight at once (on threads at most one more than the cores)."))] = 10,
    as_json: JsonOption = False,
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Carry on a batch that failed, was stopped or crashed: committed chunks are kept."""
    from batchyard.readers import SourceOptions
    from flows.batch_import import batch_import

    _check_runner(task_runner, dask_address)
    url = _resolve_db(db)
    batch, job = _existing_batch(url, batch_id, fresh=False)
    options = SourceOptions.model_validate_json(batch["options"] or "{}")
    state = run_flow(batch_import, source=job.source, schema_name=job.schema_name,
                     db=_parameter(db, url),
                     table=job.table, chunk_size=batch["chunk_size"] or DEFAULT_CHUNK_SIZE,
                     max_parallel=max_parallel, batch_id=batch_id, options=options,
                     task_runner=task_runner, dask_address=dask_address)
    _report(_finished(state, job), as_json)


@app.command()
def retry(
    batch_id: Annotated[str, typer.Argument(help="The batch whose failed records to retry.")],
    db: DbOption = DEFAULT_DB,
    from_file: Annotated[Path | None, typer.Option(
        "--from", help="A corrected rejects file (keeps its _row_number column).")] = None,
    max_retries: Annotated[int, typer.Option(min=1, help="Abandon records after this many.")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Re-validate and load a batch's failed records (the retry-failed flow)."""
    from flows.retry_failed import retry_failed

    if from_file is not None and not from_file.is_file():
        fail(f"{from_file}: no such file")
    url = _resolve_db(db)
    _, job = _existing_batch(url, batch_id, fresh=True)
    state = run_flow(retry_failed, batch_id=batch_id, db=_parameter(db, url),
                     max_retries=max_retries,
                     from_file=str(from_file.resolve()) if from_file else None)
    _report(_finished(state, job), as_json)


@app.command()
def stop(
    batch_id: Annotated[str, typer.Argument(help="A running batch.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Stop a running batch after the chunks in flight; it ends `cancelled` and can be resumed."""
    from batchyard.ingest.lifecycle import request_stop

    try:
        request_stop(_resolve_db(db), batch_id)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(f"stop requested for batch {batch_id}: it ends after the chunks in flight")


@app.command("list")
def list_(
    db: DbOption = DEFAULT_DB,
    status_filter: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Batches with their status, counts, progress and duration."""
    from batchyard.ingest import ledger
    from batchyard.engines import check_connection, session
    from batchyard.ingest.summary import summary

    url = _resolve_db(db)
    try:
        check_connection(url)
        with session(url, write=True) as connection:
            ledger.ensure_ledger(connection)
            batches = [summary(b) for b in ledger.list_batches(connection, status_filter)]
    except BatchyardError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(batches, default=str))
        return
    typer.echo(f"{'batch':<16} {'status':<10} {'total':>10} {'success':>10} {'failed':>8} "
               f"{'ignored':>8} {'done':>7} {'seconds':>8}  source")
    for b in batches:
        seconds = f"{b['duration_seconds']:.1f}" if b["duration_seconds"] is not None else "-"
        state = b["status"] + ("*" if b["stale"] else "")
        typer.echo(f"{b['batch_id']:<16} {state:<10} {b['total']:>10,} {b['success']:>10,} "
                   f"{b['failed']:>8,} {b['ignored']:>8,} {b['progress_percent']:>6.1f}% "
                   f"{seconds:>8}  {b['source']}")
    if any(b["stale"] for b in batches):
        typer.echo("* running, but its process is gone: resume it with batchyard resume")


@app.command()
def errors(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    db: DbOption = DEFAULT_DB,
    out: Annotated[Path | None, typer.Option(help="Write the CSV here instead of stdout.")] = None,
) -> None:
    """The failed records of a batch with their reasons, as CSV."""
    from batchyard.ingest.rejects import write_failed
    from batchyard.ingest.summary import batch_row

    url = _resolve_db(db)
    try:
        batch = batch_row(url, batch_id)
        if out is None:
            write_failed(url, batch_id, batch["schema_name"], sys.stdout)
            return
        with out.open("w", newline="") as handle:
            count = write_failed(url, batch_id, batch["schema_name"], handle)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(f"{count:,} failed records of batch {batch_id} written to {out}", err=True)


@app.command()
def metrics(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Batches by status, record success rate, average and total duration."""
    from batchyard.ingest import ledger
    from batchyard.engines import check_connection, session

    url = _resolve_db(db)
    try:
        check_connection(url)
        with session(url, write=True) as connection:
            ledger.ensure_ledger(connection)
            figures = ledger.metrics(connection)
    except BatchyardError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(figures))
        return
    typer.echo(f"batches: {figures['batches']} "
               f"({', '.join(f'{k} {v}' for k, v in sorted(figures['by_status'].items()))})")
    records = figures["records"]
    typer.echo(f"records: {records['total']:,} total, {records['success']:,} loaded, "
               f"{records['failed']:,} failed, {records['ignored']:,} ignored")
    rate = figures["success_rate"]
    typer.echo(f"success rate: {rate:.2%}" if rate is not None else "success rate: -")
    average = figures["average_duration_seconds"]
    typer.echo(f"duration: average {average if average is not None else '-'} s, "
               f"total {figures['total_duration_seconds']} s")


@app.command()
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


@app.command()
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
    summary = _finished(state, job)
    _print_summary(summary, False)
    typer.echo("")
    me = _command_name()
    typer.echo("where to look next:")
    typer.echo(f"  the data:     sqlite3 {db_path} 'select count(*) from users'")
    typer.echo(f"  the ledger:   {me} status {summary['batch_id']} --db {db}")
    typer.echo(f"                {me} list --db {db}")
    typer.echo(f"                {me} errors {summary['batch_id']} --db {db}")
    if summary.get("rejects_file"):
        typer.echo(f"  the rejects:  {summary['rejects_file']}")
    prefect = str(Path(me).with_name("prefect")) if "/" in me else "prefect"
    typer.echo(f"  the UI:       {prefect} server start, then import with PREFECT_API_URL="
               "http://127.0.0.1:4200/api and watch the runs at http://127.0.0.1:4200")
    if summary["status"] != "completed":
        raise typer.Exit(EXIT_NOT_COMPLETED)


__import__("batchyard.cli_stream").cli_stream.register(app)
__import__("batchyard.cli_etl", fromlist=["register"]).register(app)


def _command_name() -> str:
    """How the user can call this command again from here (`.venv/bin/batchyard` after setup)."""
    invoked = Path(sys.argv[0])
    try:
        return str(invoked.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return invoked.name


def main() -> None:
    # Skip the collector's walk over every object at exit (about 1 s with Prefect loaded);
    # registered first, so it runs last, after Prefect's own exit hooks.
    atexit.register(gc.freeze)
    _prefect_environment()  # before anything imports Prefect: its settings are read at import
    temporary_server.start_early()
    try:
        app()
    except BatchyardError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
