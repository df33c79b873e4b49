"""`batchyard stream ...`: run a stream-window job from a terminal, or ask a running one to stop."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from batchyard.cli.common import connect_prefect, fail, run_flow

stream_app = typer.Typer(no_args_is_help=True, help="Tumbling-window stream jobs (the stream-window flow).")


@stream_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Job name: keys its watermark and stop signal.")],
    source_url: Annotated[str, typer.Option(help="redis://... or a database URL.")] = "sqlite:///stream.db",
    source: Annotated[str, typer.Option(help="Redis stream key or events table.")] = "events",
    target_url: Annotated[str, typer.Option(help="redis://... or a database URL.")] = "sqlite:///stream.db",
    target: Annotated[str, typer.Option(help="Redis stream key or results table.")] = "stream_results",
    window_seconds: Annotated[int, typer.Option(help="Window size.")] = 60,
    lateness_seconds: Annotated[int, typer.Option(help="Allowed lateness.")] = 0,
    max_windows: Annotated[int, typer.Option(help="Windows per run, then it ends.")] = 1000,
    loop: Annotated[bool, typer.Option(help="Wait for windows to come due.")] = False,
    function: Annotated[str | None, typer.Option(help="module:function for each window's rows.")] = None,
    start_from: Annotated[str, typer.Option(help=(
        "Where the job's first run starts: earliest (its source's first event), latest (the "
        "window now owed), or a timestamp (ISO 8601 or epoch ms)."))] = "earliest",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Close the windows the job owes (all that are due, or with --loop, as they come due)."""
    from pydantic import ValidationError

    from batchyard.stream.job import StreamJob

    try:
        job = StreamJob(name=name, source_url=source_url, source=source, target_url=target_url,
                        target=target, window_seconds=window_seconds,
                        allowed_lateness_seconds=lateness_seconds, max_windows=max_windows,
                        loop=loop, function=function, start_from=start_from)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    from flows.stream_window import stream_window

    state = run_flow(stream_window, job=job)
    if not state.is_completed():
        fail(state.message or state.name)
    summary = state.result()
    if as_json:
        typer.echo(json.dumps(summary))
        return
    before = (f", {summary['before_start']} before the job's first window (not aggregated)"
              if summary.get("before_start") else "")
    typer.echo(f"stream {summary['job']}: {summary['windows']} windows, {summary['events_in']} events "
               f"in, {summary['events_out']} out, {summary['late']} late{before}"
               + (" (stopped)" if summary["stopped"] else ""))


@stream_app.command("stop")
def stop(
    name: Annotated[str, typer.Argument(help="The job to stop.")],
    next_run: Annotated[bool, typer.Option("--next", help=(
        "Stop the job's next run (at its start) even when no run is going now."))] = False,
) -> None:
    """Stop a running job after its current window (the run that sees the signal clears it).
    When no run of the job is going, nothing is set (exit 1), unless --next asks to stop the
    next one."""
    from batchyard.stream.job import stop_variable

    connect_prefect()
    from prefect.variables import Variable

    from tasks.stream import running_runs

    going = running_runs(name)
    if not going and not next_run:
        fail(f"no run of stream job {name} is going: nothing to stop (--next stops its next run)")
    Variable.set(stop_variable(name), "stop", overwrite=True)
    if going:
        typer.echo(f"stop requested for stream job {name}: its run ends after its current window")
    else:
        typer.echo(f"stop requested for the next run of stream job {name}: it ends at its start")


def register(app: typer.Typer) -> None:
    """Add the `stream` command group (`stream run`, `stream stop`) to `app`."""
    app.add_typer(stream_app, name="stream")
