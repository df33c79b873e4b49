"""The `batchyard` console script: a flow command runs in the warm process when one serves it,
else here as before, and then, against a configured server, leaves one for the next command
(batchyard/warm.py says why and how).

Nothing heavy is imported on the warm path: the standard library, and batchyard's modules that
import nothing else. A command the warm process runs behaves as one run here: the same streams
(it writes to them itself), working directory, environment, exit status, and Ctrl-C (SIGINT,
SIGTERM and SIGHUP are passed on to it); killing this process kills the command with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import tomllib
from pathlib import Path

from batchyard import warm_protocol as protocol

OFF = ("off", "0", "false", "no")


def settings_files(cwd: Path) -> bool:
    """Whether Prefect would read settings from files in the working directory (a `.env`,
    `prefect.toml`, or a `[tool.prefect]` table): the warm process read none of them."""
    if (cwd / ".env").exists() or (cwd / "prefect.toml").exists():
        return True
    try:
        project = cwd / "pyproject.toml"
        return project.exists() and "prefect" in tomllib.loads(project.read_text()).get("tool", {})
    except (OSError, ValueError):
        return True


def warm_target(argv: list[str], environ=os.environ) -> tuple[Path, str | None] | None:
    """The Prefect home and configured API URL (None: the local server's) of the warm process
    that could run this command, or None when none could."""
    from batchyard.local_server import prefect_home
    from batchyard.temporary_server import runs_a_flow, server_configured

    if environ.get("BATCHYARD_WARM", "on").strip().lower() in OFF or not runs_a_flow(argv):
        return None
    cwd = Path.cwd()
    if settings_files(cwd):
        return None
    api_url = environ.get("PREFECT_API_URL", "").strip() or None
    if api_url is None and (environ.get("BATCHYARD_LOCAL_SERVER", "start").strip().lower() == "off"
                            or server_configured(environ, cwd)):
        return None
    return prefect_home(environ), api_url


def warm_address(argv: list[str], environ=os.environ) -> str | None:
    """The warm process's address, when this command is one it could run."""
    target = warm_target(argv, environ)
    return None if target is None else protocol.address(*target)


def run_warm(argv: list[str]) -> int | None:
    """Run the command in the warm process and return its exit status (negative: the signal
    that ended it); None when no warm process takes it (nothing has happened then)."""
    address = warm_address(argv)
    if address is None:
        return None
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(2)
        connection.connect(address)
        umask = os.umask(0)
        os.umask(umask)
        protocol.send_message(connection, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                                       "path": sys.path, "umask": umask,
                                       "fingerprint": protocol.fingerprint()}, [0, 1, 2])
        reply, _ = protocol.receive_message(connection)
    except (OSError, ValueError):
        connection.close()
        return None
    if not reply or "pid" not in reply:
        connection.close()
        if reply and os.environ.get("BATCHYARD_WARM_DEBUG"):
            print(f"note: not run in the warm process: {reply.get('refused')}", file=sys.stderr)
        return None
    return wait_for(connection, reply["pid"])


def wait_for(connection: socket.socket, pid: int) -> int:
    """Pass signals on to the command until the warm process reports how it ended."""

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, forward)
    connection.settimeout(None)
    while True:
        try:
            ended, _ = protocol.receive_message(connection)
            break
        except InterruptedError:
            continue
        except (OSError, ValueError):
            ended = None
            break
    connection.close()
    if not ended or "status" not in ended:
        print("error: the warm process ended before the command did; its outcome is unknown "
              "(batchyard status shows the batch)", file=sys.stderr)
        return 1
    report = os.environ.get("BATCHYARD_WARM_REPORT")
    if report:  # the benchmark's: the command's own resource use, not this process's
        Path(report).write_text(json.dumps(ended))
    return os.waitstatus_to_exitcode(ended["status"])


def main() -> None:
    environ = dict(os.environ)  # as it was: running the command here adds Prefect's defaults
    status = run_warm(sys.argv)
    if status is None:
        from batchyard.cli import main as run_here

        try:
            run_here()
        finally:
            leave_warm_process(sys.argv, environ)
        return
    if status < 0:  # ended by a signal: end the same way
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


def leave_warm_process(argv: list[str], environ: dict[str, str]) -> None:
    """After a flow command against a configured server that no warm process served, start
    one for the next (the local server's supervisor starts its own)."""
    with contextlib.suppress(Exception):  # the command's outcome stands whatever happens here
        target = warm_target(argv, environ)
        if target is not None and target[1] is not None and not protocol.listening(*target):
            from batchyard import warm

            warm.spawn(target[0], target[1], environ)
