"""The `server` command group: `server start`, `server stop` and `server status`, the local
Prefect server batchyard keeps for flow commands (batchyard/local_server.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from batchyard import local_server, warm
from batchyard.cli.common import JsonOption, fail
from batchyard.errors import BatchyardError
from batchyard.settings import local_server_settings

server_app = typer.Typer(no_args_is_help=True, help=(
    "The local Prefect server flow commands use when no PREFECT_API_URL is set."))


def register(app: typer.Typer) -> None:
    """Add the `server` command group to `app`."""
    app.add_typer(server_app, name="server")


def _paths() -> local_server.Paths:
    return local_server.Paths(local_server.prefect_home())


@server_app.command("start")
def start(
    port: Annotated[int | None, typer.Option(
        help="Port on 127.0.0.1 (default BATCHYARD_SERVER_PORT, 4200).")] = None,
    idle_timeout: Annotated[float | None, typer.Option(
        help="Seconds unused before it stops (default BATCHYARD_SERVER_IDLE_TIMEOUT, 3600).")] = None,
) -> None:
    """Start the local Prefect server in the background (or say where it already runs)."""
    paths = _paths()
    try:
        settings = local_server_settings()
        started = local_server.start(paths, port, idle_timeout)
    except (BatchyardError, OSError) as exc:
        fail(f"cannot start the local Prefect server in {paths.root}: {exc}")
    for note in started.notes:
        typer.echo(f"note: {note}", err=True)
    state = started.state
    problem = local_server.wait_ready(state, settings.start_timeout)
    if problem:
        fail(f"the local Prefect server on {state.ui_url} did not start: {problem}; see {paths.log}")
    local_server.use(paths)  # asking for it counts as using it: the idle clock restarts
    word = "started" if started.new else "already running"
    typer.echo(f"local Prefect server {word}: UI at {state.ui_url} (pid {state.pid}; stops after "
               f"{state.idle_timeout:g} s unused; log {paths.log})")


@server_app.command("stop")
def stop() -> None:
    """Stop the local Prefect server (after it has recorded what the last command sent), and the
    warm processes commands against a configured server left."""
    paths = _paths()
    state = local_server.stop(paths)
    typer.echo("local Prefect server: not running" if state is None
               else f"local Prefect server on {state.ui_url} stopped (pid {state.pid})")
    for pid in warm.stop_configured(paths.home):
        typer.echo(f"warm process for a configured PREFECT_API_URL stopped (pid {pid})")


@server_app.command("status")
def status(as_json: JsonOption = False) -> None:
    """Whether the local Prefect server runs, where, and for how long it has been unused."""
    paths = _paths()
    state, stale = local_server.current(paths)
    if state is None:
        found = {"running": False, "home": str(paths.home)}
        if stale is not None:
            found["removed_stale_pid"] = stale.pid
        if as_json:
            typer.echo(json.dumps(found))
        else:
            typer.echo("local Prefect server: not running"
                       + (f" (removed the record of pid {stale.pid}, which is gone)" if stale else ""))
        return
    found = local_server.describe(state, paths)
    if as_json:
        typer.echo(json.dumps(found))
        return
    typer.echo(f"local Prefect server: running, UI at {found['url']} (pid {found['pid']}, up "
               f"{found['uptime_seconds']:.0f} s, {found['users']} commands using it, unused for "
               f"{found['idle_seconds']:.0f} s of {found['idle_timeout_seconds']:g} s; warm process "
               f"{'ready' if found['warm_process'] else 'not running'})")
