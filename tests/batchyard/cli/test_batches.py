"""The `batchyard` command: exit codes, one-line errors and JSON output."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.demo import expected_counts, write_users

pytestmark = pytest.mark.usefixtures("prefect_harness")

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_import_json_output_and_status(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 300)
    result = invoke("import", source, "--db", sqlite_url, "--chunk-size", "100", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: summary[k] for k in expected_counts(300)} == expected_counts(300)
    assert summary["status"] == "completed" and summary["duration_seconds"] > 0
    status = invoke("status", summary["batch_id"], "--db", sqlite_url, "--json")
    assert status.exit_code == 0
    assert json.loads(status.stdout)["success"] == summary["success"]
    text = invoke("status", summary["batch_id"], "--db", sqlite_url)
    assert f"batch {summary['batch_id']}: completed" in text.stdout
    assert "total 300  success 279  failed 18  ignored 3  (100.0% done)" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "{tmp}/missing.csv"], "error: {tmp}/missing.csv: no such file"),
        (["import", "{users}", "--schema", "nope"],
         "error: unknown schema 'nope': use one of orders, users, module:Class or PATH.py:Class"),
        (["import", "{users}", "--schema", "no_such_module:Model"],
         "error: schema 'no_such_module:Model': cannot import module 'no_such_module': "
         "No module named 'no_such_module'"),
        (["import", "{users}", "--db", "sqlite:///{tmp}/no/such/dir/x.db"],
         "error: cannot connect to sqlite:///{tmp}/no/such/dir/x.db: unable to open database file"),
        (["import", "{users}", "--db", "postgresql://bob:secret@127.0.0.1:1/x"],
         "error: cannot connect to postgresql+psycopg://bob@127.0.0.1:1/x: connection failed:"),
        (["import", "{users}", "--table", "users; drop table x"],
         "error: invalid table name 'users; drop table x': use letters, digits and underscores"),
        (["import", "{tmp}/fake.parquet"], "error: {tmp}/fake.parquet: not a parquet file"),
        (["import", "{users}", "--format", "xml"], "error: invalid source option: format:"),
        # issue 14: a read-only command creates nothing, and says the database is not there
        (["status", "nope", "--db", "sqlite:///{tmp}/x.db"], "error: no such database: sqlite:///{tmp}/x.db"),
    ],
)
def test_fatal_problems_exit_non_zero_with_one_line(tmp_path, args, message):
    users = write_users(tmp_path / "users.csv", 10)
    (tmp_path / "fake.parquet").write_text("id,email\n1,a@b.c\n")
    args = [a.format(tmp=tmp_path, users=users) for a in args]
    result = invoke(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message.format(tmp=tmp_path)), lines[0]
    assert "secret" not in result.stderr


def test_completed_batch_id_is_refused_then_fresh(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 20, bad=False)
    assert invoke("import", source, "--db", sqlite_url, "--batch-id", "n1").exit_code == 0
    again = invoke("import", source, "--db", sqlite_url, "--batch-id", "n1")
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        "error: batch n1 already completed (20 loaded); pass --fresh to import it again")
    fresh = invoke("import", source, "--db", sqlite_url, "--batch-id", "n1", "--fresh", "--json")
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["success"] == 20


def _cli_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(tmp_path / "work"))
    return env


@pytest.mark.slow
def test_real_command_in_ephemeral_mode_ends_without_traceback(tmp_path):
    """The installed console script, no Prefect server configured: a temporary one starts and
    stops, stdout is exactly the JSON summary, and nothing on stderr looks like a crash."""
    source = write_users(tmp_path / "users.csv", 1_000)
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    command = [str(Path(sys.executable).with_name("batchyard")), "import", str(source), "--db", db,
               "--chunk-size", "250", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=_cli_env(tmp_path),
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert {k: summary[k] for k in expected_counts(1_000)} == expected_counts(1_000)
    for noise in ("Traceback", "CancelledError", "Exception ignored", "RuntimeWarning"):
        assert noise not in done.stderr, done.stderr
    # the server started with the command was the one used, and it is gone
    assert "Started a temporary server on http://127.0.0.1:" in done.stderr
    assert "Starting temporary server" not in done.stderr  # Prefect did not start a second one
    assert _servers_of(tmp_path) == []
    # every task run reached its database in a final state before it stopped: open, spool,
    # four chunks, close, report; no heartbeat events (off unless the user sets a frequency)
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as server_db:
        states = server_db.execute(
            "select state_type, count(*) from task_run where flow_run_id = ? group by 1",
            (summary["flow_run_id"],)).fetchall()
        heartbeats = server_db.execute(
            "select count(*) from events where event = 'prefect.flow-run.heartbeat'").fetchone()
    assert states == [("COMPLETED", 8)] and heartbeats == (0,)


def _servers_of(tmp_path: Path) -> list[int]:
    """Temporary Prefect servers still running with this test's PREFECT_HOME."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (b"create_app" in (proc / "cmdline").read_bytes()
                    and str(tmp_path).encode() in (proc / "environ").read_bytes()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_failing_command_stops_the_server_it_started_early(tmp_path):
    """A command that fails before its flow (here a missing file) leaves no server behind."""
    command = [str(Path(sys.executable).with_name("batchyard")), "import",
               str(tmp_path / "missing.csv"), "--db", f"sqlite:///{tmp_path / 'cli.db'}"]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=_cli_env(tmp_path), cwd=tmp_path)
    seen = False  # the server starts with the command, before the file is looked at
    while running.poll() is None:
        seen = seen or bool(_servers_of(tmp_path))
        time.sleep(0.01)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1 and seen
    assert stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing.csv" in stderr and "Traceback" not in stderr
    assert _servers_of(tmp_path) == []


SECRET = "s3cret-Pa55word"


@pytest.fixture(params=["postgresql", "mariadb"])
def secret_url(request) -> tuple[str, str]:
    """A database whose URL carries a password (PostgreSQL trusts local connections, so any
    password works there; on MariaDB a user of the test's own has it), and a URL to look with."""
    from sqlalchemy.engine import make_url

    from batchyard.engines import session

    if request.param == "postgresql":
        base = request.getfixturevalue("postgres_url")
        return make_url(base).set(password=SECRET).render_as_string(hide_password=False), base
    base = request.getfixturevalue("mariadb_url")
    with session(base, write=True) as current:
        current.sql("CREATE USER IF NOT EXISTS 'batchyard_secret'@'%%' IDENTIFIED BY %s", (SECRET,))
        current.sql(f"GRANT ALL ON `{make_url(base).database}`.* TO 'batchyard_secret'@'%'")
    url = make_url(base).set(username="batchyard_secret", password=SECRET)
    return url.render_as_string(hide_password=False), base


def test_database_password_appears_nowhere(tmp_path, secret_url, unique_table, monkeypatch):
    """Give a password and look for it everywhere a user or an operator could see it."""
    import asyncio

    from prefect.client.orchestration import get_client
    from sqlalchemy.engine import make_url

    from batchyard.engines import normalise_url, session

    for variable in ("PGPASSWORD", "MYSQL_PWD"):  # absent, and absent again after the test
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    url, look = secret_url
    secret = SECRET
    source = write_users(tmp_path / "users.csv", 50)
    result = invoke("import", source, "--db", url, "--table", unique_table, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert secret not in result.stdout + result.stderr
    monkeypatch.delenv("MYSQL_PWD", raising=False)  # where the command put it; `look` has none
    with session(look) as current:
        ledger_text = str(current.sql("select * from batchyard_batches where batch_id = %s",
                                      (summary["batch_id"],)).rows)
        ledger_text += str(current.sql("select * from batchyard_records where batch_id = %s",
                                       (summary["batch_id"],)).rows)
        current.sql(f"drop table {unique_table}")
    assert secret not in ledger_text and summary["batch_id"] in ledger_text

    async def recorded() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(summary["flow_run_id"])
            logs = await client._client.post("/logs/filter", json={
                "logs": {"flow_run_id": {"any_": [summary["flow_run_id"]]}}, "limit": 200})
            artifacts = await client._client.post("/artifacts/filter", json={
                "artifacts": {"flow_run_id": {"any_": [summary["flow_run_id"]]}}, "limit": 50})
            return json.dumps(run.parameters) + logs.text + artifacts.text

    seen = asyncio.run(recorded())
    assert make_url(url).get_backend_name() in seen and unique_table in seen
    assert secret not in seen, seen[max(0, seen.find(secret) - 300):seen.find(secret) + 50]
    unreachable = make_url(url).set(port=1)
    bad = invoke("import", source, "--db", unreachable.render_as_string(hide_password=False),
                 "--table", unique_table)
    assert bad.exit_code == 1 and secret not in bad.stderr
    shown = normalise_url(unreachable._replace(password=None).render_as_string(hide_password=False))
    assert f"cannot connect to {shown.render_as_string(hide_password=False)}" in bad.stderr
