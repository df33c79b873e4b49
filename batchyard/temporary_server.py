"""Ephemeral mode's temporary Prefect server, started the moment a flow command starts.

With no server configured, Prefect 3.9.1 starts a temporary one the first time a flow needs
the API: after the command has imported Prefect and its own modules. The two start-ups (about
2.5 s and 3.5 s here) then run one after the other. Started here instead, in a subprocess
before those imports, they overlap on two cores; once Prefect is imported the process is
handed to Prefect's own temporary-server singleton, so Prefect uses it, and stops it, as if it
had started it itself.

This module imports nothing from Prefect at import time: it runs before Prefect is loaded.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from batchyard.processes import answers, die_with_parent, free_port, stop

FLOW_COMMANDS = {"import", "resume", "retry", "demo", "etl", "stream run"}

# What Prefect sets for its own temporary server (SubprocessASGIServer._run_uvicorn_command).
SERVER_SETTINGS = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                   "PREFECT__SERVER_FINAL": "1"}

_started: subprocess.Popen | None = None
_port: int | None = None


def runs_a_flow(argv: Sequence[str]) -> bool:
    """Whether this command line runs a flow (and is not asking for help)."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if not words or "--help" in argv:
        return False
    return words[0] in FLOW_COMMANDS or " ".join(words[:2]) in FLOW_COMMANDS


def server_configured(environ: Mapping[str, str], cwd: Path) -> bool:
    """Whether Prefect would talk to a configured server rather than a temporary one: an API
    URL in the environment, the active profile, or the settings files Prefect reads in the
    working directory (or ephemeral mode is switched off). Unreadable files count as
    configured (then Prefect decides)."""
    if environ.get("PREFECT_API_URL"):
        return True
    if environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "").lower() in ("false", "0", "no"):
        return True
    try:
        home = Path(environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
        profiles_path = Path(environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml"))
        if profiles_path.exists():
            profiles = tomllib.loads(profiles_path.read_text())
            active = environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
            if profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL"):
                return True
        for name in ("prefect.toml", "pyproject.toml"):
            if (cwd / name).exists():
                data = tomllib.loads((cwd / name).read_text())
                if name == "pyproject.toml":
                    data = data.get("tool", {}).get("prefect", {})
                if data.get("api", {}).get("url") or data.get("PREFECT_API_URL"):
                    return True
        dotenv = cwd / ".env"
        if dotenv.exists() and "PREFECT_API_URL" in dotenv.read_text():
            return True
    except (OSError, ValueError):
        return True
    return False


def start_early(argv: Sequence[str] = sys.argv) -> None:
    """Start the temporary server now if this command will need one."""
    global _started, _port
    if _started is not None or not runs_a_flow(argv) or server_configured(os.environ, Path.cwd()):
        return
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        return
    _port = free_port()
    atexit.register(_stop_unused)
    _started = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent),
         "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(_port), "--log-level", "error", "--lifespan", "on"],
        env={**os.environ, **SERVER_SETTINGS},
        preexec_fn=die_with_parent,
    )


def hand_to_prefect(timeout: float = 90.0) -> None:
    """Wait until the early server answers and make it Prefect's temporary server. If Prefect
    turns out to be configured for a server after all, the early one is stopped unused; if it
    failed to start (its port taken in the meantime), Prefect starts its own as it would have."""
    global _started
    if _started is None:
        return
    process, _started = _started, None
    from prefect.server.api.server import SubprocessASGIServer, subprocess_server_logger
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        stop(process)
        return
    server = SubprocessASGIServer()
    if server.running:  # Prefect started its own before us
        stop(process)
        return
    if not answers(f"http://127.0.0.1:{_port}/api/health", timeout, lambda: process.poll() is None):
        stop(process)
        return
    server.port, server.server_process, server.running = _port, process, True
    atexit.register(server.stop)
    subprocess_server_logger.info(
        f"Started a temporary server on {server.address} (no PREFECT_API_URL is set)")


def _stop_unused() -> None:
    """The command ended before it ran a flow (a bad argument, a missing file)."""
    global _started
    if _started is not None:
        stop(_started)
        _started = None
