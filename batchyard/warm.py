"""The warm process: flow commands forked from a process that has Prefect already imported.

Importing Prefect, pyarrow, SQLAlchemy and the flows takes about 1.5 s of every flow command
here, longer than the work of a 1M-row import on SQLite. Beside the local server
(batchyard/local_server.py) its supervisor keeps one process that has done those imports and
then waits on a Unix socket (`address`). A `batchyard` flow
command (batchyard/warm_client.py) sends it its arguments, working directory, environment and
its three standard streams (the file descriptors themselves, SCM_RIGHTS); this process forks a
child that takes them over and runs the command exactly as `batchyard` would, writing to the
user's terminal and files directly, and reports the child's exit status back.

Two kinds serve commands: the local server's (its supervisor starts and stops it), and, for
commands run against a configured server (`PREFECT_API_URL` in the environment), one per API URL
that the first such command leaves behind when it ends (`spawn`); that one stops by itself after
`BATCHYARD_WARM_IDLE` seconds (600) without a command, or once the code it imported changed.

Only commands whose Prefect settings this process was started with are served (the
`signature`): Prefect reads its settings at import, so a command with other `PREFECT_*`
variables runs the usual way. The same holds for code that changed since this process started
(`fingerprint`). The parent stays single-threaded (children are forked from it) and imports
nothing of batchyard's until `preload`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from batchyard.warm_protocol import (  # noqa: F401  address, listening: this module's API too
    address,
    fingerprint,
    listening,
    receive_message,
    send_message,
    signature,
)

IDLE_SECONDS = 600.0
"""How long a warm process for a configured server waits for a command before it stops."""


def idle_seconds(environ: Mapping[str, str]) -> float:
    try:
        return max(1.0, float(environ.get("BATCHYARD_WARM_IDLE", IDLE_SECONDS)))
    except ValueError:
        return IDLE_SECONDS


def _files(home: Path, api_url: str) -> tuple[Path, Path]:
    """The log and pid file of the warm process for `api_url`."""
    stem = home / "batchyard-warm" / f"warm-{address(home, api_url).rsplit('-', 1)[1]}"
    return stem.with_suffix(".log"), stem.with_suffix(".pid")


def stop_configured(home: Path) -> list[int]:
    """Stop the warm processes of configured servers this Prefect home has (between commands:
    one in a command's middle finishes it first); returns their pids. A pid file whose process
    is gone, or whose pid another program now has, is only removed."""
    from batchyard.processes import command_line

    stopped = []
    for pid_file in sorted((home / "batchyard-warm").glob("warm-*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if b"batchyard.warm" in (command_line(pid) or b""):
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
        with contextlib.suppress(OSError):
            pid_file.unlink()
    return stopped


def spawn(home: Path, api_url: str, environ: Mapping[str, str]) -> None:
    """Leave a warm process for `api_url` behind this command, in a session of its own, with
    the environment the command started with; its log is `warm-<digest>.log` under
    `$PREFECT_HOME/batchyard-warm/`. A second one for the same address exits at once (the
    socket is taken)."""
    import subprocess

    log_file, _ = _files(home, api_url)
    folder = log_file.parent
    folder.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        subprocess.Popen([sys.executable, "-m", "batchyard.warm", str(home), api_url,
                          str(idle_seconds(environ))], env=dict(environ), cwd=folder,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)


def preload(api_url: str) -> None:
    """Do the imports every flow command does, with the environment it would have."""
    from batchyard.cli.common import prefect_environment

    prefect_environment()
    os.environ["PREFECT_API_URL"] = api_url
    import batchyard.cli  # noqa: F401  the commands, typer
    import batchyard.engines  # noqa: F401  every engine and its driver
    import flows.batch_import  # noqa: F401  Prefect itself
    import flows.etl_pipeline  # noqa: F401
    import flows.retry_failed  # noqa: F401
    import flows.stream_window  # noqa: F401


class Server:
    """The parent: accepts commands, forks a child for each, reports how each ended."""

    def __init__(self, address: str, idle: float | None = None):
        self.address = address
        self.signature = signature(os.environ)
        self.fingerprint = fingerprint()
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.stopping = False
        self.idle = idle
        """Seconds without a command after which to stop (None: until told to, the local
        server's warm process, whose supervisor stops it). Code that changed stops either
        kind, so that a new one takes over (the supervisor starts it; a configured server's
        next command leaves it)."""
        self.last_active = time.monotonic()

    def listen(self) -> socket.socket:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.address)
        listener.listen(64)
        return listener

    def serve(self, listener: socket.socket) -> None:
        """Run until told to stop; then take no new command and wait for the ones running to
        end. (A forked child runs its command and ends in `take`.)"""
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.last_active = time.monotonic()  # idle from now, not from before the preload
        accepting = True
        while accepting or self.children:
            if accepting and self.stopping:
                self.selector.unregister(listener)
                listener.close()
                accepting = False
            for key, _ in self.selector.select(timeout=0.05):
                if key.data == "accept":
                    with contextlib.suppress(OSError):
                        connection, _ = listener.accept()
                        self.take(connection, listener)
                else:  # a client went away before its command ended: it was killed
                    self.client_gone(key.fileobj, key.data)
            self.reap()
            if self.children:
                self.last_active = time.monotonic()
            elif self.idle is not None and time.monotonic() - self.last_active > self.idle:
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} unused for {self.idle:g} s: stopping",
                      flush=True)
                self.stopping = True
        return None

    def take(self, connection: socket.socket, listener: socket.socket) -> None:
        connection.settimeout(5)
        try:
            request, fds = receive_message(connection, fds=3)
        except (OSError, ValueError):
            connection.close()
            return None
        refusal = self.refusal(connection, request, fds)
        if refusal and refusal.startswith("the code"):  # stale for good: make way for a new one
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {refusal}: stopping", flush=True)
            self.stopping = True
        if refusal:
            with contextlib.suppress(OSError):
                send_message(connection, {"refused": refusal})
            connection.close()
            for fd in fds:
                os.close(fd)
            return None
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                self.selector.close()
                listener.close()
                for child_connection in self.children.values():
                    child_connection.close()
                connection.close()
                status = become_command(request, fds)
            except KeyboardInterrupt:  # as an interpreter ends on one: by the signal itself
                traceback.print_exc()
                sys.stderr.flush()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            except BaseException:  # never back into this loop: the child is not a server
                traceback.print_exc()
            end_command(status)
        for fd in fds:
            os.close(fd)
        connection.settimeout(None)
        with contextlib.suppress(OSError):
            send_message(connection, {"pid": pid})
        self.children[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)
        return None

    def refusal(self, connection: socket.socket, request: dict | None, fds: list[int]) -> str | None:
        if request is None or len(fds) != 3:
            return "incomplete request"
        credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", credentials)[1] != os.getuid():
            return "another user's command"
        if request.get("fingerprint") != self.fingerprint:
            return "the code or the installed packages changed since the warm process started"
        if signature(request.get("env", {})) != self.signature:
            return "its Prefect settings differ from the warm process's"
        return None

    def client_gone(self, connection, pid: int) -> None:
        """The command's own process ended (killed: it waits for the exit status otherwise);
        end the child as abruptly, as it would have ended with it."""
        with contextlib.suppress(OSError):
            if connection.recv(1, socket.MSG_PEEK):
                return
        self.selector.unregister(connection)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.children.pop(pid, None)
            if connection is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(connection)
            with contextlib.suppress(OSError):
                send_message(connection, {"status": status, "maxrss_kib": usage.ru_maxrss,
                                          "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime})
            connection.close()


def become_command(request: dict, fds: list[int]) -> int:
    """In the forked child: take over the command's streams, place and environment, run it."""
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    sys.path[:] = request["path"]
    from batchyard.cli import main

    try:
        main()
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


def end_command(status: int) -> NoReturn:
    """End the forked child once its command returned, without the interpreter's teardown:
    what the command sends Prefect is sent before it returns (`prefect_runtime.shutdown`
    drains the log and event workers), so Prefect's exit hooks and the joins of its threads
    only wait, about 0.13 s of every command here. Python's buffers of the standard streams
    are flushed first (files a command writes it closes itself)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def run(home: Path, api_url: str, idle: float | None = None) -> int:
    """The warm process's life: preload, listen, serve until SIGTERM or the parent's death
    (with `idle`: serving commands for the configured `api_url`, until idle that long)."""
    server = Server(address(home, api_url if idle is not None else None), idle)
    # Stop between commands; a child resets these before it runs its command.
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda signum, frame: setattr(server, "stopping", True))
    started = time.monotonic()
    preload(api_url)
    import gc

    gc.freeze()  # the preloaded objects stay out of the collector's way in every child
    try:
        listener = server.listen()
    except OSError:  # another one took the address meanwhile
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} batchyard warm process {os.getpid()}: "
              "another one serves these commands", flush=True)
        return 0
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} batchyard warm process {os.getpid()}: ready after "
          f"{time.monotonic() - started:.1f} s", flush=True)
    pid_file = _files(home, api_url)[1] if idle is not None else None
    if pid_file is not None:
        pid_file.write_text(str(os.getpid()))
    parent = os.getpid()
    try:
        server.serve(listener)
    finally:
        if pid_file is not None and os.getpid() == parent:
            with contextlib.suppress(OSError):
                if pid_file.read_text() == str(parent):
                    pid_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else None))
