"""The warm process (batchyard/warm.py): flow commands forked from a process with Prefect
imported behave as commands run the usual way: the caller's working directory, environment,
streams and exit status; killed with the caller; refused, and then run the usual way, when
their Prefect settings or the code differ. A real local server and warm process per test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from batchyard import local_server, warm
from batchyard.demo import write_users
from batchyard.processes import pid_alive
from tests.helpers import batchyard_command, cli_env, free_port, rows

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path):
    """A local server with its warm process ready; the environment of commands it serves."""
    env = cli_env(tmp_path, BATCHYARD_LOCAL_SERVER="start", BATCHYARD_SERVER_PORT=str(free_port()))
    home = Path(env["PREFECT_HOME"])
    subprocess.run([batchyard_command(), "server", "start"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=180)
    deadline = time.monotonic() + 120
    while not warm.listening(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert warm.listening(home), (home / "batchyard-server" / "server.log").read_text()
    yield env
    local_server.stop(local_server.Paths(home), timeout=30)


def _run(env: dict, cwd: Path, *args: str, **extra: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    """The command's result, and what the warm process reported of it (None: it ran here)."""
    report = cwd / f"warm-{time.monotonic_ns()}.json"
    done = subprocess.run([batchyard_command(), *args], capture_output=True, text=True, cwd=cwd,
                          env={**env, "BATCHYARD_WARM_REPORT": str(report), **extra}, timeout=300)
    return done, json.loads(report.read_text()) if report.exists() else None


def _summary(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_flow_command_runs_warm_with_the_callers_directory_environment_and_streams(tmp_path, served):
    write_users(tmp_path / "users.csv", 250, bad=False)
    (tmp_path / "sub").mkdir()
    done, report = _run(served, tmp_path, "import", "users.csv", "--db", "sqlite:///sub/warm.db",
                        "--chunk-size", "100", "--json", BATCHYARD_WORK_DIR=str(tmp_path / "spool-here"))
    assert done.returncode == 0, done.stderr
    assert report is not None and report["status"] == 0 and report["maxrss_kib"] > 50_000
    summary = _summary(done)
    assert (summary["total"], summary["success"], summary["failed"], summary["run_state"]) == (
        250, 250, 0, "COMPLETED")
    assert summary["source"] == str(tmp_path / "users.csv")
    assert rows(f"sqlite:///{tmp_path / 'sub' / 'warm.db'}", "SELECT count(*) FROM users") == [(250,)]
    assert (tmp_path / "spool-here").is_dir()  # the caller's BATCHYARD_WORK_DIR, not the warm process's
    assert "/runs/flow-run/" in done.stderr.splitlines()[0]

    cold, report = _run(served, tmp_path, "import", "users.csv", "--db", "sqlite:///sub/cold.db",
                        "--chunk-size", "100", "--json", BATCHYARD_WARM="off")
    assert report is None and cold.returncode == 0
    assert {k: _summary(cold)[k] for k in ("total", "success", "failed", "ignored", "status")} == {
        k: summary[k] for k in ("total", "success", "failed", "ignored", "status")}


def test_two_commands_at_once_each_get_their_own_child(tmp_path, served):
    for i in range(2):
        write_users(tmp_path / f"u{i}.csv", 120 + i, bad=False)
    commands = [subprocess.Popen(
        [batchyard_command(), "import", f"u{i}.csv", "--db", f"sqlite:///t{i}.db", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**served, "BATCHYARD_WARM_REPORT": str(tmp_path / f"r{i}.json")}) for i in range(2)]
    outputs = [command.communicate(timeout=300) for command in commands]
    assert [command.returncode for command in commands] == [0, 0], outputs
    assert [json.loads(out.strip().splitlines()[-1])["success"] for out, _ in outputs] == [120, 121]
    assert all((tmp_path / f"r{i}.json").exists() for i in range(2))


def test_an_error_is_the_same_one_line_and_exit_status_as_run_the_usual_way(tmp_path, served):
    done, report = _run(served, tmp_path, "import", "missing.csv", "--db", "sqlite:///t.db")
    cold, cold_report = _run(served, tmp_path, "import", "missing.csv", "--db", "sqlite:///t.db",
                             BATCHYARD_WARM="off")
    assert report is not None and cold_report is None
    assert done.returncode == cold.returncode == 1
    assert done.stderr.splitlines()[-1] == cold.stderr.splitlines()[-1]
    assert done.stderr.splitlines()[-1].startswith("error: ") and "missing.csv" in done.stderr


def test_other_prefect_settings_run_the_usual_way_and_say_why(tmp_path, served):
    write_users(tmp_path / "users.csv", 30, bad=False)
    done, report = _run(served, tmp_path, "import", "users.csv", "--db", "sqlite:///t.db", "--json",
                        PREFECT_LOGGING_LEVEL="WARNING", BATCHYARD_WARM_DEBUG="1")
    assert report is None and done.returncode == 0
    assert "not run in the warm process: its Prefect settings differ" in done.stderr
    assert _summary(done)["success"] == 30
    assert "Beginning flow run" not in done.stderr  # the caller's logging level held


def test_killing_the_command_kills_the_child_doing_its_work(tmp_path, served):
    write_users(tmp_path / "users.csv", 300, bad=False)
    marker = tmp_path / "paused"
    command = subprocess.Popen(
        [batchyard_command(), "import", "users.csv", "--db", "sqlite:///t.db", "--chunk-size", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        env={**served, "BATCHYARD_PAUSE_AT": "chunk-committed:1", "BATCHYARD_PAUSE_FILE": str(marker)})
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the marker is created, then written
    child = int(marker.read_text().split()[1])
    assert child != command.pid and pid_alive(child)
    command.send_signal(signal.SIGKILL)
    command.wait(timeout=10)
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)
    resumed, _ = _run(served, tmp_path, "import", "users.csv", "--db", "sqlite:///t.db", "--json")
    assert resumed.returncode == 0 and _summary(resumed)["success"] == 300
    assert rows(f"sqlite:///{tmp_path / 't.db'}", "SELECT count(*) FROM users") == [(300,)]


@pytest.mark.parametrize(("change", "reason"), [
    ({"fingerprint": ["another python", 0, 0]}, "the code or the installed packages changed"),
    ({"env": {"PREFECT_LOGGING_LEVEL": "ERROR"}}, "its Prefect settings differ"),
])
def test_a_request_from_other_code_or_settings_is_refused(tmp_path, change, reason):
    server = warm.Server(warm.address(tmp_path))
    request = {"env": dict(os.environ), "fingerprint": warm.fingerprint(), **change}
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    with ours, theirs:
        assert server.refusal(ours, {**request, "fingerprint": warm.fingerprint(), "env": dict(os.environ)},
                              [0, 1, 2]) is None
        assert reason in server.refusal(ours, request, [0, 1, 2])
        assert server.refusal(ours, request, [0, 1]) == "incomplete request"


def _wait(predicate, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def _flow_run_state(api: str, stderr: str) -> str:
    import re
    import urllib.request

    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", stderr).group(1)
    with urllib.request.urlopen(f"{api}/flow_runs/{run_id}", timeout=10) as response:
        return json.loads(response.read())["state"]["type"]


def test_against_a_configured_server_a_command_leaves_a_warm_process_for_the_next(tmp_path,
                                                                                  prefect_server):
    env = cli_env(tmp_path, prefect_server, BATCHYARD_WARM="on", BATCHYARD_WARM_IDLE="300")
    home = Path(env["PREFECT_HOME"])
    write_users(tmp_path / "users.csv", 200, bad=False)
    first, report = _run(env, tmp_path, "import", "users.csv", "--db", "sqlite:///a.db", "--json")
    assert first.returncode == 0 and report is None, first.stderr  # nothing served it: ran here
    assert _wait(lambda: warm.listening(home, prefect_server)), list((home / "batchyard-warm").iterdir())
    assert not warm.listening(home)  # not the local server's

    second, report = _run(env, tmp_path, "import", "users.csv", "--db", "sqlite:///b.db", "--json")
    assert second.returncode == 0 and report is not None and report["status"] == 0, second.stderr
    summary = _summary(second)
    assert (summary["total"], summary["success"], summary["run_state"]) == (200, 200, "COMPLETED")
    assert _flow_run_state(prefect_server, second.stderr) == "COMPLETED"  # on the configured server
    assert rows(f"sqlite:///{tmp_path / 'b.db'}", "SELECT count(*) FROM users") == [(200,)]

    stopped = subprocess.run([batchyard_command(), "server", "stop"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert "warm process for a configured PREFECT_API_URL stopped" in stopped.stdout, stopped
    assert _wait(lambda: not warm.listening(home, prefect_server), 30)
    third, report = _run(env, tmp_path, "import", "users.csv", "--db", "sqlite:///c.db", "--json",
                         BATCHYARD_WARM_IDLE="3")
    assert third.returncode == 0 and report is None
    # the one it left stops by itself once unused for BATCHYARD_WARM_IDLE seconds
    assert _wait(lambda: warm.listening(home, prefect_server), 120)
    assert _wait(lambda: not warm.listening(home, prefect_server), 60)
    assert _wait(lambda: not list((home / "batchyard-warm").glob("*.pid")), 10)  # removed as it ends
    assert "unused for 3 s: stopping" in "".join(p.read_text() for p in (home / "batchyard-warm").glob("*.log"))


def test_after_a_code_change_the_supervisor_starts_a_warm_process_with_the_new_code(tmp_path, served):
    import batchyard

    write_users(tmp_path / "users.csv", 20, bad=False)
    args = ("import", "users.csv", "--db", "sqlite:///t.db", "--json")
    done, report = _run(served, tmp_path, *args)
    assert done.returncode == 0 and report is not None
    source = Path(batchyard.__file__)
    later = time.time() + 2
    os.utime(source, (later, later))  # as an edit or an upgrade would
    stale, report = _run(served, tmp_path, *args, BATCHYARD_WARM_DEBUG="1")
    assert stale.returncode == 0 and report is None
    assert "the code or the installed packages changed" in stale.stderr
    deadline, report = time.monotonic() + 120, None
    while report is None and time.monotonic() < deadline:
        time.sleep(0.5)
        again, report = _run(served, tmp_path, *args)
        assert again.returncode == 0 and _summary(again)["status"] == "completed"
    assert report is not None and report["status"] == 0  # served warm again, by a new process
    log = (Path(served["PREFECT_HOME"]) / "batchyard-server" / "server.log").read_text()
    assert "the warm process exited (0): starting a new one" in log


def test_stop_leaves_alone_a_process_that_took_a_stale_pid_files_pid(tmp_path):
    other = subprocess.Popen(["sleep", "30"])
    try:
        folder = tmp_path / "batchyard-warm"
        folder.mkdir()
        (folder / "warm-0123.pid").write_text(str(other.pid))  # its warm process died unseen
        assert warm.stop_configured(tmp_path) == []
        assert other.poll() is None and not list(folder.glob("*.pid"))
    finally:
        other.kill()
        other.wait()
