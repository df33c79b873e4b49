"""What every `batchyard` command shares: exit codes and one-line errors, the Prefect
environment, running a flow, resolving `--db`, printing a batch summary and the option types.

Nothing here imports Prefect, SQLAlchemy or the pipeline at import time: `main()` sets the
Prefect environment before anything imports Prefect, and `--help` stays quick."""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, NoReturn

import typer

from batchyard import local_server, temporary_server
from batchyard.errors import BatchyardError
from batchyard.prefect_runtime import COMMAND_DEFAULTS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # the command line itself is wrong (click's usage errors)
EXIT_NOT_COMPLETED = 3

DEFAULT_DB = "sqlite:///batchyard.db"

DbOption = Annotated[str, typer.Option(help="Database URL (or block:NAME) holding the ledger.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TaskRunnerOption = Annotated[str, typer.Option(
    help="Where chunk tasks run: thread (default), process (a local process pool) or dask.")]
DaskAddressOption = Annotated[str | None, typer.Option(
    help="Scheduler of an existing Dask cluster, e.g. tcp://HOST:8786 (with --task-runner dask; "
         "without it dask starts a temporary local cluster).")]


def prefect_environment() -> None:
    """Set the Prefect settings of a `batchyard` process in `os.environ`; call it before
    Prefect is imported (Prefect reads its settings at import).

    No network here and none needed: telemetry off. For the temporary server of ephemeral
    mode: a generous start-up timeout (a loaded machine), and task-run states recorded in
    batches. Settings the user gave are kept."""
    for name, value in COMMAND_DEFAULTS.items():
        os.environ.setdefault(name, value)


class NoTracebackForUserErrors(logging.Filter):
    """Prefect logs task and flow exceptions with their traceback; a BatchyardError already
    says everything in one line, so its traceback is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop the traceback of a record about a BatchyardError; always keep the record."""
        if record.exc_info and isinstance(record.exc_info[1], BatchyardError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_user_errors() -> None:
    """Add a `NoTracebackForUserErrors` filter to every handler of every logger there is now
    (the root logger and each named one)."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            handler.addFilter(NoTracebackForUserErrors())


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: MESSAGE` on stderr and end the command.

    Raises:
        typer.Exit: always, with exit status `code` (EXIT_ERROR unless given)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def connect_prefect() -> None:
    """Before this process talks to Prefect: its environment set, and the server it uses
    answering (the local server, which this command may have just started, or the early
    temporary server handed to Prefect).

    Raises:
        typer.Exit: (EXIT_ERROR, via `fail`) when the local server does not answer."""
    prefect_environment()
    try:
        local_server.hand_over()
    except BatchyardError as exc:
        fail(str(exc))
    temporary_server.hand_to_prefect()


def run_flow(flow, **parameters):
    """Run a flow in this process and return its final state.

    Connects to Prefect's server first (`connect_prefect`) and hides the tracebacks of user
    errors in Prefect's logs; the run's UI link is printed on stderr as it starts.

    Args:
        flow: a Prefect flow object.
        **parameters: the flow's parameters.

    Returns:
        The flow run's final Prefect state (completed or not: a failed run raises nothing)."""
    connect_prefect()
    quiet_user_errors()
    from batchyard.prefect_runtime import run_flow_cleanly

    return run_flow_cleanly(flow, parameters)


def resolve_db(db: str) -> str:
    """The database URL a `--db` value means.

    `block:NAME` needs Prefect (the block lives on its server); plain URLs do not.

    A password given in the URL moves to the engine's variable for this process (PGPASSWORD
    for PostgreSQL, which libpq reads; MYSQL_PWD for MariaDB), so that it is in no flow
    parameter, log line, artifact or ledger row.

    Args:
        db: a database URL or `block:NAME` (a saved database block).

    Returns:
        The URL to connect to: the block's URL, or `db` itself, without its password when
        it has one and its engine reads a password from the environment.

    Raises:
        typer.Exit: (EXIT_ERROR, via `fail`) when the block cannot be loaded."""
    if not db.startswith("block:"):
        return _password_to_environment(db)
    connect_prefect()
    from blocks.database import database_url

    try:
        return database_url(db)
    except (ValueError, KeyError) as exc:
        fail(f"cannot load database block {db!r}: {str(exc).splitlines()[0]}")


def db_parameter(given: str, resolved: str) -> str:
    """What the flow run records as its `db` parameter: the block name, or the URL without
    its password; never a secret.

    Args:
        given: the `--db` value as the user gave it.
        resolved: what `resolve_db(given)` returned."""
    return given if given.startswith("block:") else resolved


def _password_to_environment(db: str) -> str:
    from sqlalchemy.engine import make_url

    from batchyard.engines import password_variable

    try:
        url = make_url(db)
    except Exception:
        return db  # the one-line error comes from the connection check
    variable = password_variable(db)
    if variable is None or not url.password:
        return db
    os.environ[variable] = str(url.password)
    return url._replace(password=None).render_as_string(hide_password=False)  # set() keeps it


def finished(state, job) -> dict:
    """The flow's summary: its result, the one a Failed or Cancelled run carries (a batch that
    did not complete, a retry that left records failing), or the batch as the ledger has it
    when the run crashed after it was closed.

    Args:
        state: the final state of a batch-import or retry-failed flow run.
        job: the run's `ImportJob` (its `db` and `batch_id` find the ledger row).

    Returns:
        The batch summary (a dict as `print_summary` takes it), with `run_state`, the flow
        run's final state type (COMPLETED, FAILED, CANCELLED, ...).

    Raises:
        typer.Exit: (EXIT_ERROR, via `fail`) with the flow's error when the batch is not in
            the ledger, is still pending or running, or failed on a BatchyardError."""
    from batchyard.errors import RunNotCompleted

    if state.is_completed():
        return {**state.result(), "run_state": state.type.value}
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # the state may hold no result at all
        error = exc
    if isinstance(error, RunNotCompleted):
        return {**error.summary, "run_state": state.type.value}
    from batchyard.ingest.summary import batch_summary

    message = str(error) if isinstance(error, BaseException) else (state.message or state.name)
    if isinstance(error, BatchyardError):
        fail(message)
    try:
        summary = batch_summary(job.db, job.batch_id)
    except BatchyardError:
        summary = None
    if summary is None or summary["status"] in ("pending", "running"):
        fail(message)
    return {**summary, "run_state": state.type.value}


def report(summary: dict, as_json: bool) -> None:
    """Print a finished batch; exit 3 unless it completed and so did its flow run (a retry
    that left records failing is a completed batch in a Failed run).

    Raises:
        typer.Exit: (EXIT_NOT_COMPLETED) when the batch or its run did not complete."""
    print_summary(summary, as_json)
    if summary["status"] != "completed" or summary.get("run_state", "COMPLETED") != "COMPLETED":
        raise typer.Exit(EXIT_NOT_COMPLETED)


def print_summary(summary: dict, as_json: bool) -> None:
    """Print a batch summary on stdout: one JSON object, or a few lines for a person.

    Args:
        summary: a batch summary (`batchyard.ingest.summary.summary`, or a flow's result).
        as_json: print it as one JSON object."""
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    stage = f" ({summary['stage']})" if summary.get("stage") and summary["status"] == "running" else ""
    typer.echo(f"batch {summary['batch_id']}: {summary['status']}{stage}")
    typer.echo(
        f"  total {summary['total']:,}{'' if summary.get('source_read', True) else ' (read so far)'}"
        f"  success {summary['success']:,}  "
        f"failed {summary['failed']:,}  ignored {summary['ignored']:,}  "
        f"({summary['progress_percent']}% done)"
    )
    if summary.get("duration_seconds") is not None:
        attempts = summary.get("attempts") or 0
        of = f" of work in {attempts} attempts" if attempts > 1 else ""
        elapsed = summary.get("elapsed_seconds")
        wall = f" ({elapsed:.2f} s from the first start to the last end)" if attempts > 1 and elapsed else ""
        typer.echo(f"  duration {summary['duration_seconds']:.2f} s{of}{wall}")
    if summary.get("rows_per_second"):
        eta = summary.get("eta_seconds")
        typer.echo(f"  {summary['rows_per_second']:,.0f} rows/s"
                   + (f", ETA {eta:,.0f} s" if eta is not None else ""))
    history = summary.get("attempt_history") or []
    for attempt in history if len(history) > 1 else []:
        seconds = f"{attempt['seconds']:.2f} s" if attempt["seconds"] is not None else "running"
        typer.echo(f"    attempt {attempt['attempt']} ({attempt['kind']}): {attempt['started_at']}, "
                   f"{seconds}, {attempt['status']}")
    if summary.get("rejects_file"):
        typer.echo(f"  rejected records: {summary['rejects_file']}")
    failed_chunks = summary.get("failed_chunks") or []
    if summary.get("error") and not failed_chunks:  # else the chunks below say it
        typer.echo(f"  error: {summary['error']}")
    if failed_chunks:
        from batchyard.ingest.summary import describe_failed_chunk

        for chunk in failed_chunks:
            typer.echo(f"  failed {describe_failed_chunk(chunk)}")
    if summary.get("retry"):
        typer.echo("  retry: " + ", ".join(f"{k} {v:,}" for k, v in summary["retry"].items()))
    for warning in summary.get("warnings") or []:
        typer.echo(f"  warning: {warning}")
    if summary.get("stale"):
        typer.echo("  its process is gone: resume it with batchyard resume "
                   f"{summary['batch_id']}")
