"""The local Prefect server batchyard keeps: started by a flow command or `batchyard server
start`, reused, stopped when idle or asked, a stale state file, a taken port, and two commands
starting it at once. Real processes on 127.0.0.1; every test stops what it started."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from batchyard import local_server
from batchyard.demo import expected_counts, write_users
from batchyard.processes import pid_alive
from tests.helpers import batchyard_command, cli_env, free_port

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict:
    return cli_env(tmp_path, **{"BATCHYARD_LOCAL_SERVER": "start",
                                "BATCHYARD_SERVER_PORT": str(free_port()), **extra})


def _run(env: dict, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([batchyard_command(), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def _parent(pid: int) -> int | None:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _processes_of(home: Path) -> list[int]:
    """Supervisors and Prefect servers running with this Prefect home; not the processes a
    server forks for itself (same command line and environment, its pid as their parent)."""
    found = _all_processes_of(home)
    servers = {pid for pid in found if b"server_supervisor" not in _command_line(pid)}
    return [pid for pid in found if _parent(pid) not in servers]


def _command_line(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def _all_processes_of(home: Path) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            if ((b"server_supervisor" in cmdline and str(home).encode() in cmdline)
                    or (b"server\x00start" in cmdline
                        and f"PREFECT_HOME={home}".encode() in (proc / "environ").read_bytes())):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _flow_run(api: str, flow_run_id: str) -> dict:
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id}", timeout=10) as response:
        return json.loads(response.read())


def _gone_within(home: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _processes_of(home):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def home(tmp_path):
    """The test's Prefect home; whatever server runs there is stopped at the end."""
    path = tmp_path / "prefect-home"
    yield path
    local_server.stop(local_server.Paths(path), timeout=30)
    assert _gone_within(path, 30)


def test_two_flow_commands_at_once_start_one_server_and_later_commands_reuse_it(tmp_path, home):
    env = _env(tmp_path)
    port = int(env["BATCHYARD_SERVER_PORT"])
    sources = [write_users(tmp_path / f"users{i}.csv", 300) for i in range(2)]
    commands = [subprocess.Popen(
        [batchyard_command(), "import", str(source), "--db", f"sqlite:///{tmp_path / f'{i}.db'}",
         "--chunk-size", "100", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=tmp_path) for i, source in enumerate(sources)]
    outputs = [command.communicate(timeout=300) for command in commands]
    assert [c.returncode for c in commands] == [0, 0], outputs
    state = local_server.read_state(local_server.Paths(home))
    assert state is not None and state.port == port and pid_alive(state.pid)
    supervisors = [pid for pid in _processes_of(home) if pid == state.pid]
    assert len(_processes_of(home)) == 2 and supervisors == [state.pid]  # one supervisor, one server
    started = [err for _, err in outputs if "started the local Prefect server" in err]
    assert len(started) == 1 and f"UI at http://127.0.0.1:{port}" in started[0]
    for stdout, stderr in outputs:
        summary = json.loads(stdout)
        assert {k: summary[k] for k in expected_counts(300)} == expected_counts(300)
        link = f"http://127.0.0.1:{port}/runs/flow-run/{summary['flow_run_id']}"
        assert f"': {link}\n" in stderr  # the run's page, printed as it starts
        assert "temporary server" not in stderr
        assert _flow_run(state.api_url, summary["flow_run_id"])["state_type"] == "COMPLETED"
    assert local_server.live_users(local_server.Paths(home)) == []  # both commands released it

    again = _run(env, "server", "start", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"already running: UI at http://127.0.0.1:{port} (pid {state.pid};" in again.stdout
    status = json.loads(_run(env, "server", "status", "--json", cwd=tmp_path).stdout)
    assert status["running"] and status["pid"] == state.pid and status["port"] == port

    stopped = _run(env, "server", "stop", cwd=tmp_path)
    assert stopped.stdout.strip() == f"local Prefect server on http://127.0.0.1:{port} stopped (pid {state.pid})"
    assert _gone_within(home, 30) and not local_server.Paths(home).state.exists()
    assert json.loads(_run(env, "server", "status", "--json", cwd=tmp_path).stdout)["running"] is False


def test_a_stale_state_file_and_a_taken_port_then_it_stops_when_idle(tmp_path, home):
    paths = local_server.Paths(home)
    paths.root.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    paths.state.write_text(json.dumps({"pid": dead.pid, "port": 1, "started": 0, "idle_timeout": 60}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path, BATCHYARD_SERVER_PORT=str(port), BATCHYARD_SERVER_IDLE_TIMEOUT="4")
        status = _run(env, "server", "status", cwd=tmp_path)
        assert status.stdout.strip() == (
            f"local Prefect server: not running (removed the record of pid {dead.pid}, which is gone)")
        paths.state.write_text(json.dumps({"pid": dead.pid, "port": 1, "started": 0, "idle_timeout": 60}))
        started = _run(env, "server", "start", cwd=tmp_path)
        assert started.returncode == 0, started.stderr
        state = local_server.read_state(paths)
        assert state.port != port and state.pid != dead.pid
        assert started.stderr.splitlines() == [
            f"note: removed the record of a local server that is gone (pid {dead.pid})",
            f"note: port {port} on 127.0.0.1 is in use; the local server takes port {state.port}"]
        with urllib.request.urlopen(f"{state.api_url}/health", timeout=10) as response:
            assert response.status == 200
    # nobody uses it: it stops by itself after 4 s and removes its state file
    assert _gone_within(home, 60)
    assert not paths.state.exists() and not pid_alive(state.pid)
    assert "unused for" in paths.log.read_text()


def test_a_running_command_keeps_it_up_past_the_idle_time(tmp_path, home):
    """The idle clock starts when the last command using the server ends."""
    paths = local_server.Paths(home)
    env = _env(tmp_path, BATCHYARD_SERVER_IDLE_TIMEOUT="2")
    assert _run(env, "server", "start", cwd=tmp_path).returncode == 0
    user = subprocess.Popen(["sleep", "6"])
    (paths.users / str(user.pid)).touch()  # as local_server.use() records a command
    time.sleep(4)
    state = local_server.read_state(paths)
    assert state is not None and pid_alive(state.pid)  # past its idle time, still up
    user.wait()
    assert _gone_within(home, 60)
