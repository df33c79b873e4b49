"""The batch commands: `import`, `status`, `resume`, `retry`, `stop`, `cancel`, `list`, `errors`
and `metrics` (the batch-import and retry-failed flows, and the ledger). The commands that only
look (`status`, `list`, `errors`, `metrics`) create nothing, not even a database file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from batchyard.cli.common import (
    DEFAULT_DB,
    DaskAddressOption,
    DbOption,
    JsonOption,
    TaskRunnerOption,
    db_parameter,
    fail,
    finished,
    print_summary,
    report,
    resolve_db,
    run_flow,
)
from batchyard.errors import BatchyardError
from batchyard.sizing import DEFAULT_CHUNK_SIZE

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
MaxParallelOption = Annotated[int, typer.Option(help=(
    "Chunks in flight at once, at least 1 (on threads at most one more than the cores)."))]


def register(app: typer.Typer) -> None:
    """Add the batch commands to `app`, in the order `batchyard --help` lists them."""
    app.command("import")(import_)
    app.command()(status)
    app.command()(resume)
    app.command()(retry)
    app.command()(stop)
    app.command()(cancel)
    app.command("list")(list_)
    app.command()(errors)
    app.command()(metrics)


def import_(
    source: Annotated[Path, typer.Argument(help="CSV, JSON Lines, Parquet or .xlsx file.")],
    schema: Annotated[str, typer.Option(help=(
        "users, orders, module:Class, PATH.py:Class, or infer (the table's saved contract; "
        "inferred from the file and saved when it has none)."))] = "users",
    db: Annotated[str, typer.Option(help="Target database URL.")] = DEFAULT_DB,
    table: Annotated[str | None, typer.Option(help="Target table; default from the schema.")] = None,
    chunk_size: Annotated[str, typer.Option(
        help="Records per chunk, or auto (from the machine's load, chunk by chunk).")] = str(
            DEFAULT_CHUNK_SIZE),
    max_parallel: MaxParallelOption = 10,
    batch_id: Annotated[str | None, typer.Option(help=(
        "Resume or name this batch: letters, digits, hyphens, underscores."))] = None,
    fresh: Annotated[bool, typer.Option(help="Run a completed batch again.")] = False,
    fmt: Annotated[str | None, typer.Option("--format", help="csv, jsonl, parquet, xlsx.")] = None,
    delimiter: Annotated[str, typer.Option(help="CSV delimiter.")] = ",",
    encoding: Annotated[str, typer.Option(help="Text encoding.")] = "utf-8",
    sheet: Annotated[str | None, typer.Option(help="Excel sheet name.")] = None,
    null_values: Annotated[str | None, typer.Option(
        help="Comma-separated values that mean missing, e.g. 'NA,N/A,\\N' (an empty unquoted "
             "cell always does).")] = None,
    rejects: Annotated[Path | None, typer.Option(help="Where to write rejected records.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
    evolve: Annotated[bool, typer.Option(help=(
        "With --schema infer: accept new columns as a new contract version (the table gains "
        "them) instead of stopping the import."))] = False,
    key: Annotated[str | None, typer.Option(help=(
        "With --schema infer and no saved contract: the key column(s), or none (keyless)."))] = None,
) -> None:
    """Import a file into a database table as a batch (the batch-import flow)."""
    from batchyard.ingest.lifecycle import preflight

    size = _chunk_size(chunk_size)
    _at_least_one("--max-parallel", max_parallel)
    _check_runner(task_runner, dask_address)
    if schema == "infer":
        schema, table = _contract(source, db, table, key, evolve, fmt, delimiter, encoding, sheet,
                                  null_values)
    elif evolve or key is not None:
        fail("--evolve and --key go with --schema infer")
    try:
        job, options = preflight(str(source), schema, resolve_db(db), table, batch_id, fmt,
                                 delimiter, encoding, sheet, fresh,
                                 null_values.split(",") if null_values else None)
    except BatchyardError as exc:
        fail(str(exc))
    if batch_id is None and size != "auto":  # a new batch: read the file while Prefect loads
        from batchyard.ingest import early_spool

        early_spool.start(job, options, size)
    from flows.batch_import import batch_import

    state = run_flow(
        batch_import, source=job.source, schema_name=schema, db=db_parameter(db, job.db),
        table=job.table,
        chunk_size=size, max_parallel=max_parallel, batch_id=job.batch_id, fresh=fresh,
        options=options, rejects_file=str(rejects) if rejects else None,
        task_runner=task_runner, dask_address=dask_address,
    )
    report(finished(state, job), as_json)


def _contract(source: Path, db: str, table: str | None, key: str | None, evolve: bool,
              fmt, delimiter, encoding, sheet, null_values) -> tuple[str, str]:
    """`--schema infer`: the table's contract (inferred and saved, used, or evolved), said on
    stderr; drift is refused here with its report, before anything starts."""
    from batchyard.contracts.resolve import ContractDrift, resolve_contract
    from batchyard.ingest.lifecycle import source_options

    try:
        options = source_options(fmt, delimiter, encoding, sheet,
                                 null_values.split(",") if null_values else None)
        resolved = resolve_contract(source, options, resolve_db(db), table, key=key, evolve=evolve)
    except ContractDrift as exc:
        typer.echo(exc.report.render(), err=True)
        fail(str(exc))
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(resolved.describe(), err=True)
    return resolved.schema_ref, resolved.table


def _check_runner(name: str, dask_address: str | None) -> None:
    """A wrong runner or an unreachable scheduler: one line, before any batch is opened."""
    from tasks.runners import check_runner

    try:
        check_runner(name, dask_address)
    except BatchyardError as exc:
        fail(str(exc))


def _at_least_one(option: str, value: int) -> None:
    if value < 1:
        fail(f"{option} must be at least 1, not {value}")


def _chunk_size(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        fail(f"--chunk-size must be a positive number of records or auto, not {text!r}")
    return int(text)


def status(
    batch_id: Annotated[str, typer.Argument(help="The batch id printed by import.")],
    db: Annotated[str, typer.Option(help="Database URL holding the ledger.")] = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a batch's status and stage, counts, progress, attempts and failed chunks."""
    from batchyard.ingest.summary import batch_summary

    try:
        summary = batch_summary(resolve_db(db), batch_id)
    except BatchyardError as exc:
        fail(str(exc))
    if summary is None:
        fail(f"no batch {batch_id!r} in {_safe(db)}")
    print_summary(summary, as_json)


def _safe(db: str) -> str:
    from batchyard.engines import safe_url

    return safe_url(db)


def _existing_batch(url: str, batch_id: str, fresh: bool, as_json: bool = False):
    """The ledger row of a batch that may start now, and the job to run it; else exit 1. A
    completed batch, unless `fresh`, is printed and the command ends with 0: resuming a batch
    until it is done can be repeated."""
    from batchyard.ingest.job import ImportJob
    from batchyard.ingest.lifecycle import check_startable
    from batchyard.ingest.summary import batch_row, summary

    try:
        batch = batch_row(url, batch_id)
        if batch["status"] == "completed" and not fresh:
            print_summary(summary(batch), as_json)
            raise typer.Exit(0)
        check_startable(batch, fresh=fresh)
    except BatchyardError as exc:
        fail(str(exc))
    job = ImportJob(batch_id=batch_id, source=batch["source"], schema_name=batch["schema_name"],
                    db=url, table=batch["target_table"])
    return batch, job


def resume(
    batch_id: Annotated[str, typer.Argument(help="A batch that did not complete.")],
    db: DbOption = DEFAULT_DB,
    max_parallel: MaxParallelOption = 10,
    as_json: JsonOption = False,
    task_runner: TaskRunnerOption = "thread",
    dask_address: DaskAddressOption = None,
) -> None:
    """Carry on a batch that failed, was stopped or crashed: committed chunks are kept. A
    completed batch is left as it is: its summary is printed and the command exits 0."""
    from batchyard.readers import SourceOptions
    from flows.batch_import import batch_import

    _at_least_one("--max-parallel", max_parallel)
    _check_runner(task_runner, dask_address)
    url = resolve_db(db)
    batch, job = _existing_batch(url, batch_id, fresh=False, as_json=as_json)
    options = SourceOptions.model_validate_json(batch["options"] or "{}")
    state = run_flow(batch_import, source=job.source, schema_name=job.schema_name,
                     db=db_parameter(db, url),
                     table=job.table, chunk_size=batch["chunk_size"] or DEFAULT_CHUNK_SIZE,
                     max_parallel=max_parallel, batch_id=batch_id, options=options,
                     task_runner=task_runner, dask_address=dask_address)
    report(finished(state, job), as_json)


def retry(
    batch_id: Annotated[str, typer.Argument(help="The batch whose failed records to retry.")],
    db: DbOption = DEFAULT_DB,
    from_file: Annotated[Path | None, typer.Option(
        "--from", help="A corrected rejects file (keeps its _row_number column).")] = None,
    max_retries: Annotated[int, typer.Option(help="Abandon records after this many (at least 1).")] = 3,
    as_json: JsonOption = False,
) -> None:
    """Re-validate and load a batch's failed records (the retry-failed flow); exits 3 when
    some are still failing."""
    from flows.retry_failed import retry_failed

    _at_least_one("--max-retries", max_retries)
    if from_file is not None and not from_file.is_file():
        fail(f"{from_file}: no such file")
    url = resolve_db(db)
    _, job = _existing_batch(url, batch_id, fresh=True)
    state = run_flow(retry_failed, batch_id=batch_id, db=db_parameter(db, url),
                     max_retries=max_retries,
                     from_file=str(from_file.resolve()) if from_file else None)
    report(finished(state, job), as_json)


def stop(
    batch_id: Annotated[str, typer.Argument(help="A running batch.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Stop a running batch after the chunks in flight; it ends `cancelled` and can be resumed.
    (A batch that is not running is cancelled with `batchyard cancel`.)"""
    from batchyard.ingest.lifecycle import request_stop

    try:
        request_stop(resolve_db(db), batch_id)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(f"stop requested for batch {batch_id}: it ends after the chunks in flight")


def cancel(
    batch_id: Annotated[str, typer.Argument(help="A failed or pending batch (not running).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Mark a batch that is not running cancelled (a failed, pending, or crashed one); it can
    still be resumed. (A running batch is stopped with `batchyard stop`.)"""
    from batchyard.ingest.lifecycle import cancel_batch

    try:
        batch = cancel_batch(resolve_db(db), batch_id)
    except BatchyardError as exc:
        fail(str(exc))
    typer.echo(f"batch {batch_id} is cancelled ({batch['success']:,} of {batch['total']:,} records "
               f"loaded); resume it with: batchyard resume {batch_id}")


def list_(
    db: DbOption = DEFAULT_DB,
    status_filter: Annotated[str | None, typer.Option("--status", help=(
        "Only this status: " + ", ".join(STATUSES) + "."))] = None,
    as_json: JsonOption = False,
) -> None:
    """Batches with their status, counts, progress and duration."""
    from batchyard.ingest.summary import list_batches, read_ledger, summary

    if status_filter is not None and status_filter not in STATUSES:
        fail(f"unknown status {status_filter!r}: use {', '.join(STATUSES)}")
    url = resolve_db(db)
    try:
        with read_ledger(url) as connection:
            batches = [summary(b) for b in list_batches(connection, status_filter)]
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


def errors(
    batch_id: Annotated[str, typer.Argument(help="The batch.")],
    db: DbOption = DEFAULT_DB,
    out: Annotated[Path | None, typer.Option(help="Write the CSV here instead of stdout.")] = None,
) -> None:
    """The failed records of a batch with their reasons, as CSV; the chunks that failed as a
    whole (their records are not in the ledger one by one) are listed on stderr."""
    from batchyard.ingest.rejects import write_failed
    from batchyard.ingest.summary import batch_summary, describe_failed_chunk

    url = resolve_db(db)
    try:
        batch = batch_summary(url, batch_id)
        if batch is None:
            fail(f"no batch {batch_id!r} in {_safe(db)}")
        if out is None:
            write_failed(url, batch_id, batch["schema"], sys.stdout)
        else:
            with out.open("w", newline="") as handle:
                count = write_failed(url, batch_id, batch["schema"], handle)
    except BatchyardError as exc:
        fail(str(exc))
    for chunk in batch["failed_chunks"]:
        typer.echo(f"failed {describe_failed_chunk(chunk)}; its records are not listed one by one: "
                   f"resume the batch (batchyard resume {batch_id}) to load them", err=True)
    if out is not None:
        typer.echo(f"{count:,} failed records of batch {batch_id} written to {out}", err=True)


def metrics(db: DbOption = DEFAULT_DB, as_json: JsonOption = False) -> None:
    """Batches by status, record success rate, durations (of batches and their attempts)."""
    from batchyard.ingest.summary import metrics as ledger_metrics
    from batchyard.ingest.summary import read_ledger

    url = resolve_db(db)
    try:
        with read_ledger(url) as connection:
            figures = ledger_metrics(connection)
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
    per_attempt = figures["average_attempt_seconds"]
    typer.echo(f"duration of finished batches (the sum of their attempts): average "
               f"{average if average is not None else '-'} s, total {figures['total_duration_seconds']} s, "
               f"in {figures['attempts']} attempts (average "
               f"{per_attempt if per_attempt is not None else '-'} s)")
