"""The local Prefect server batchyard keeps running between commands.

Ephemeral mode starts and stops a server on every command (seconds each time, and no UI once
the command ends). Instead, a flow command with no server configured uses a long-lived
`prefect server start` on 127.0.0.1, started by `batchyard server start` or by the first flow
command that needs it (`BATCHYARD_LOCAL_SERVER`, settings.py). It runs under a small
supervisor (`batchyard.server_supervisor`) that stops it once no batchyard command has used it
for the idle time. Everything lives in `$PREFECT_HOME/batchyard-server/`: `state.json` (the
supervisor's pid and the port), `lock` (one command starts it at a time), `server.log`, and
`users/` (one file per command using it, named by its pid).

No Prefect import here: commands find or start the server before Prefect is loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from batchyard import warm
from batchyard.errors import ConfigurationError
from batchyard.processes import answers, command_line, free_port, pid_alive, port_is_free
from batchyard.settings import local_server_settings
from batchyard.temporary_server import runs_a_flow, server_configured

SUPERVISOR = "batchyard.server_supervisor"
# A supervisor this new may not have its own command line yet (between fork and exec it still
# has the command's that started it): alive is enough.
STARTING = 10.0
# Commands that use Prefect's API without running a flow: the local server when it is up.
API_COMMANDS = {"stream stop"}


@dataclass(frozen=True)
class ServerState:
    """What `state.json` records about a running local server."""

    pid: int  # the supervisor's
    port: int
    started: float  # epoch seconds
    idle_timeout: float

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Paths:
    """The files of the local server of one Prefect home."""

    def __init__(self, home: Path):
        self.home = home
        self.root = home / "batchyard-server"
        self.state = self.root / "state.json"
        self.lock = self.root / "lock"
        self.log = self.root / "server.log"
        self.users = self.root / "users"


def prefect_home(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's Prefect home, as Prefect resolves it (PREFECT_HOME, else ~/.prefect)."""
    return Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def read_state(paths: Paths) -> ServerState | None:
    """The recorded server, or None when there is no state file or it cannot be read."""
    try:
        return ServerState(**json.loads(paths.state.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def supervisor_alive(pid: int) -> bool:
    """Whether `pid` is a live batchyard server supervisor (not a reused pid)."""
    if not pid_alive(pid):
        return False
    cmdline = command_line(pid)
    return cmdline is None or SUPERVISOR.encode() in cmdline


def current(paths: Paths) -> tuple[ServerState | None, ServerState | None]:
    """(the running server, a stale record removed): a state file whose supervisor is gone
    (killed, the machine restarted, its pid reused) is deleted and returned second."""
    state = read_state(paths)
    if state is None:
        return None, None
    if supervisor_alive(state.pid) or (pid_alive(state.pid) and time.time() - state.started < STARTING):
        return state, None
    with contextlib.suppress(FileNotFoundError):
        paths.state.unlink()
    return None, state


@contextlib.contextmanager
def _locked(paths: Paths) -> Iterator[None]:
    paths.root.mkdir(parents=True, exist_ok=True)
    with paths.lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Started:
    """What `start` did: the server, whether this call started it, and what to tell the user
    about it (a taken port, a stale record)."""

    state: ServerState
    new: bool
    notes: tuple[str, ...] = ()


def start(paths: Paths, port: int | None = None, idle_timeout: float | None = None) -> Started:
    """Start the local server unless one is running (then return that one); do not wait for
    it to answer (`wait_ready`). Two commands starting it at once get the same server: the
    check and the start happen under `paths.lock`.

    Raises:
        OSError: the Prefect home is not writable or the supervisor cannot be spawned."""
    settings = local_server_settings()
    port = port or settings.port
    idle_timeout = idle_timeout or settings.idle_timeout
    with _locked(paths):
        running, stale = current(paths)
        if running is not None:
            return Started(running, False)
        notes = [f"removed the record of a local server that is gone (pid {stale.pid})"] if stale else []
        if not port_is_free(port):
            chosen = free_port()
            notes.append(f"port {port} on 127.0.0.1 is in use; the local server takes port {chosen}")
            port = chosen
        paths.users.mkdir(exist_ok=True)
        with paths.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", SUPERVISOR, str(paths.home), str(port), str(idle_timeout)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        state = ServerState(process.pid, port, time.time(), idle_timeout)
        temporary = paths.state.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state)))
        temporary.replace(paths.state)
    # The supervisor outlives this process: nobody here waits for it, so do not warn about it.
    process.returncode = 0
    return Started(state, True, tuple(notes))


def wait_ready(state: ServerState, timeout: float) -> str | None:
    """None once the server answers its health check; else why not (its supervisor exited, or
    `timeout` seconds passed first)."""
    if answers(f"{state.api_url}/health", timeout, lambda: supervisor_alive(state.pid)):
        return None
    if not supervisor_alive(state.pid):
        return "its process exited"
    return f"it did not answer within {timeout:g} s"


def stop(paths: Paths, timeout: float = 60.0) -> ServerState | None:
    """Stop the running local server and wait until it is gone; None when none was running.
    The supervisor lets the server record what the last command sent before stopping it."""
    state, _ = current(paths)
    if state is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisor_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisor_alive(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        if read_state(paths) == state:
            paths.state.unlink()
    return state


def live_users(paths: Paths) -> list[int]:
    """Pids of the batchyard commands using the server now; files of dead ones are removed."""
    pids = []
    for entry in paths.users.glob("[0-9]*"):
        if pid_alive(int(entry.name)):
            pids.append(int(entry.name))
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    return pids


def last_used(paths: Paths) -> float:
    """When a command last started or stopped using the server (epoch seconds): the users
    directory changes whenever one does."""
    try:
        return paths.users.stat().st_mtime
    except OSError:
        return 0.0


def use(paths: Paths) -> None:
    """Count this process as using the server until it exits (the idle clock waits)."""
    paths.users.mkdir(parents=True, exist_ok=True)
    entry = paths.users / str(os.getpid())
    entry.touch()
    os.utime(paths.users)  # a command that reuses the server restarts the idle clock
    atexit.register(_release, entry)


def _release(entry: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        entry.unlink()


# What this command found or started: run_flow waits for it before Prefect connects.
_pending: tuple[Paths, Started, float] | None = None


def use_early(argv: list[str], environ: os._Environ | dict = os.environ) -> Started | None:
    """For a flow command with no Prefect server configured: point Prefect at the local
    server (setting PREFECT_API_URL in `environ`, before Prefect is imported), starting it
    first when `BATCHYARD_LOCAL_SERVER` is `start`. None, and nothing changed, when the
    command runs no flow, a server is configured, the setting says otherwise, or the server
    cannot be started here (then ephemeral mode, as before)."""
    global _pending
    api_only = " ".join(a for a in argv[1:3] if not a.startswith("-")) in API_COMMANDS
    if not (runs_a_flow(argv) or api_only) or server_configured(environ, Path.cwd()):
        return None
    settings = local_server_settings()
    if settings.mode == "off":
        return None
    paths = Paths(prefect_home(environ))
    try:
        if settings.mode == "use" or api_only:
            state, _ = current(paths)
            if state is None:
                return None
            started = Started(state, False)
        else:
            started = start(paths)
        use(paths)
    except OSError as exc:
        print(f"note: no local Prefect server ({exc}); using a temporary one", file=sys.stderr)
        return None
    environ["PREFECT_API_URL"] = started.state.api_url
    _pending = (paths, started, settings.start_timeout)
    for note in started.notes:
        print(f"note: {note}", file=sys.stderr)
    return started


def hand_over() -> None:
    """Wait until the local server this command uses answers (at once when it was already
    up); say so when this command started it.

    Raises:
        ConfigurationError: it did not answer within BATCHYARD_SERVER_START_TIMEOUT."""
    global _pending
    if _pending is None:
        return
    paths, started, timeout = _pending
    _pending = None
    problem = wait_ready(started.state, timeout)
    if problem:
        raise ConfigurationError(
            f"the local Prefect server on {started.state.ui_url} did not start: {problem} "
            f"(its log: {paths.log}); set BATCHYARD_LOCAL_SERVER=off to use a temporary server")
    if started.new:
        print(f"started the local Prefect server: UI at {started.state.ui_url} (it stops after "
              f"{_duration(started.state.idle_timeout)} unused; batchyard server stop)", file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def describe(state: ServerState, paths: Paths) -> dict:
    """The running server as `batchyard server status --json` prints it."""
    return {"running": True, "url": state.ui_url, "api_url": state.api_url, "pid": state.pid,
            "port": state.port, "uptime_seconds": round(time.time() - state.started, 1),
            "users": len(live_users(paths)), "idle_timeout_seconds": state.idle_timeout,
            "idle_seconds": round(time.time() - last_used(paths), 1), "log": str(paths.log),
            "home": str(paths.home), "warm_process": warm.listening(paths.home)}

