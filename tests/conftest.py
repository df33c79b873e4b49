"""Shared fixtures: one Prefect test harness per session, real SQLite files and PostgreSQL."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="batchyard-tests-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ["BATCHYARD_WORK_DIR"] = str(_HOME / "work")
os.environ["BATCHYARD_RETRY_DELAYS"] = "[0.1, 0.2, 0.4]"
os.environ.pop("PREFECT_API_URL", None)

# Prefect configures its log handlers on import: do it now, with the real stderr, not under a
# CliRunner's temporary stream.
import prefect  # noqa: E402, F401

POSTGRES_URL = os.environ.get("BATCHYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("BATCHYARD_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'target.db'}"


def _postgres_available() -> str | None:
    import sqlalchemy as sa

    from batchyard.engines import normalise_url

    try:
        engine = sa.create_engine(normalise_url(POSTGRES_URL))
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = _postgres_available()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required (BATCHYARD_REQUIRE_SERVICES=1): {problem}")
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL}: {problem}")
    return POSTGRES_URL


@pytest.fixture
def unique_table() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server():
    """A real `prefect server start` on 127.0.0.1 for end-to-end tests; stopped at the end."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = _HOME / "server-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=api, PREFECT_API_URL=api)
    log = (_HOME / "server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
         "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                break
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail(f"prefect server did not start: {(_HOME / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield api
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def cli_env(tmp_path: Path, api: str | None = None, **extra: str) -> dict:
    """Environment for running the real `batchyard` command in a subprocess."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "BATCHYARD_PAUSE"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(tmp_path / "work"))
    if api:
        env["PREFECT_API_URL"] = api
    env.update(extra)
    return env


def batchyard_command() -> str:
    import sys

    return str(Path(sys.executable).with_name("batchyard"))


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Query a target database the way batchyard itself does (ADBC for SQLite: one SQLite
    library per process)."""
    from batchyard.engines import session

    with session(url, write=True) as current:
        return [tuple(r) for r in current.sql(sql, params)]


def fix_rejects(rejects: str | Path, fixed: Path, fix) -> Path:
    """Copy a rejects file as a user correcting it would: `fix(record)` edits each row."""
    import csv

    with Path(rejects).open() as handle, fixed.open("w", newline="") as out:
        reader = csv.DictReader(handle)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for record in reader:
            fix(record)
            writer.writerow(record)
    return fixed


def latest_artifact(key: str) -> dict:
    """The newest artifact with this key, as the API returns it (what the UI shows)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch() -> list[dict]:
        async with get_client() as client:
            response = await client._client.post(
                "/artifacts/filter",
                json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
            response.raise_for_status()
            return response.json()

    found = asyncio.run(fetch())
    assert found, f"no artifact {key}"
    return found[0]


def refuse_ids(tmp_path: Path, url: str, first: int, last: int) -> None:
    """A trigger in an empty `users` target that refuses ids first..last, as a maintenance rule
    would: the chunk holding them fails at the database until `drop trigger maintenance`."""
    from batchyard.demo import write_users
    from flows.batch_import import batch_import

    batch_import(str(write_users(tmp_path / "one.csv", 1, bad=False)), db=url)  # the table
    rows(url, "delete from users")
    rows(url, "create trigger maintenance before insert on users "
              f"when new.id between {first} and {last} begin select raise(abort, 'maintenance'); end")
