"""The process that keeps batchyard's local Prefect server (batchyard/local_server.py).

Run as `python -m batchyard.server_supervisor HOME PORT IDLE_SECONDS` (by `local_server.start`,
in a session of its own): it runs `prefect server start` on 127.0.0.1:PORT as its child, with
the Prefect home HOME (whose `prefect.db` is the server's database, the one ephemeral mode
uses too), task-run states recorded in batches, telemetry off and the UI pointed at its own
API. It stops the server, and ends, when no batchyard command has used it for IDLE_SECONDS,
on SIGTERM or SIGINT (`batchyard server stop`), or when the server exits by itself; then it
removes the state file if it is still its own. Once the server answers it also starts the warm
process (batchyard/warm.py) flow commands fork from, unless BATCHYARD_WARM is off, and stops it
with the server.

It imports nothing from Prefect: it only watches files and a child process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from batchyard.local_server import Paths, last_used, live_users, read_state
from batchyard.prefect_runtime import RECORDER_IN_BATCHES
from batchyard.processes import answers, die_with_parent
from batchyard.processes import stop as stop_process

# Commands drain their events before they exit; the server records what it received within
# its flush interval (1 s, RECORDER_IN_BATCHES). Stopping no sooner than this after the last
# command ended loses nothing.
SETTLE_SECONDS = 2.0


def server_environment(home: Path, port: int, environ=os.environ) -> dict:
    """The environment `prefect server start` runs in; settings the user gave are kept, except
    where the server must be this one (home, address, its UI's API)."""
    env = {k: v for k, v in environ.items() if k != "PREFECT_API_URL"}
    for name, value in {**RECORDER_IN_BATCHES, "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}.items():
        env.setdefault(name, value)
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(port),
               PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api")
    return env


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} batchyard server supervisor {os.getpid()}: {message}",
          flush=True)


def start_warm(home: Path, port: int) -> subprocess.Popen | None:
    """The warm process, with this process's environment (the command's that started the
    server), so that it serves the commands run with the same settings."""
    if os.environ.get("BATCHYARD_WARM", "on").strip().lower() in ("off", "0", "false", "no"):
        return None
    warm = subprocess.Popen([sys.executable, "-m", "batchyard.warm", str(home), f"http://127.0.0.1:{port}/api"],
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    _log(f"started the warm process (pid {warm.pid})")
    return warm


def supervise(home: Path, port: int, idle_timeout: float) -> int:
    """Run the server until it is idle, told to stop, or gone; return the exit status."""
    paths = Paths(home)
    asked: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, lambda signum, frame: asked.append(signum))
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=server_environment(home, port), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )
    _log(f"started prefect server (pid {server.pid}) on http://127.0.0.1:{port}, "
         f"stops after {idle_timeout:g} s unused")
    health = f"http://127.0.0.1:{port}/api/health"
    ready = False
    warm, warm_started = None, 0.0
    started = time.time()
    poll = min(2.0, max(0.1, idle_timeout / 10))
    status = 0
    try:
        while True:
            if server.poll() is not None:
                _log(f"prefect server exited with status {server.returncode}")
                status = 1
                break
            if not ready:  # the idle clock starts once the server answers
                ready = answers(health, 0.5)
                started = time.time()
                if ready:
                    warm, warm_started = start_warm(home, port), time.time()
                if not ready and not asked:
                    continue
            if warm is not None and warm.poll() is not None and time.time() - warm_started > 30:
                _log(f"the warm process exited ({warm.returncode}): starting a new one")
                warm, warm_started = start_warm(home, port), time.time()
            users = live_users(paths)
            idle = time.time() - max(started, last_used(paths))
            if asked:
                _log(f"asked to stop (signal {asked[0]})")
                while time.time() - last_used(paths) < SETTLE_SECONDS:
                    time.sleep(0.1)
                break
            if not users and idle >= idle_timeout:
                _log(f"unused for {idle:.0f} s: stopping")
                break
            time.sleep(poll)
    finally:
        if warm is not None and warm.poll() is None:
            stop_process(warm, timeout=10)
        if server.poll() is None:
            stop_process(server, timeout=30)
        state = read_state(paths)
        if state is not None and state.pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                paths.state.unlink()
        _log("stopped")
    return status


if __name__ == "__main__":
    sys.exit(supervise(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
