"""Shared fixtures: a Prefect test harness for the tests that need one, real SQLite files,
PostgreSQL, MariaDB, and a real Prefect server. Helper functions are in tests/helpers.py."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.helpers import (
    HOME,
    MARIADB_URL,
    POSTGRES_URL,
    REQUIRE_SERVICES,
    free_port,
    postgres_available,
    server_available,
)

os.environ["PREFECT_HOME"] = str(HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_ENABLED"] = "false"
os.environ["BATCHYARD_WORK_DIR"] = str(HOME / "work")
os.environ["BATCHYARD_RETRY_DELAYS"] = "[0.1, 0.2, 0.4]"
# Commands the tests run use a temporary server unless a test starts the local one itself
# (tests/batchyard/test_local_server.py): nothing keeps running after the suite.
os.environ["BATCHYARD_LOCAL_SERVER"] = "off"
os.environ.pop("PREFECT_API_URL", None)

# Prefect configures its log handlers on import: do it now, with the real stderr, not under a
# CliRunner's temporary stream.
import prefect  # noqa: E402, F401


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the session, for the tests that run flows or use the API
    (tests/flows does so for all its tests; others ask for it by name)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'target.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    problem = postgres_available()
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"PostgreSQL is required (BATCHYARD_REQUIRE_SERVICES=1): {problem}")
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL}: {problem}")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    """The MariaDB server's `test` database (shared: tests that write there use their own
    table names); most tests want `mariadb_url`, a database of their own."""
    problem = server_available(MARIADB_URL)
    if problem:
        if REQUIRE_SERVICES:
            pytest.fail(f"MariaDB is required (BATCHYARD_REQUIRE_SERVICES=1): {problem}")
        pytest.skip(f"no MariaDB reachable at {MARIADB_URL}: {problem}")
    return MARIADB_URL


@pytest.fixture
def mariadb_url(mariadb_server) -> str:
    """A fresh MariaDB database for the test, dropped after it."""
    yield from fresh_mariadb_database(mariadb_server)


@pytest.fixture
def unique_table() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def prefect_server():
    """A real `prefect server start` on 127.0.0.1 for end-to-end tests; stopped at the end."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = HOME / "server-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=api, PREFECT_API_URL=api)
    log = (HOME / "server.log").open("w")
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
                pytest.fail(f"prefect server did not start: {(HOME / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield api
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()




@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def db_url(request, tmp_path: Path) -> str:
    """Each engine in turn: a fresh SQLite file, and a fresh PostgreSQL or MariaDB database
    (created for the test, dropped after it), so every table starts absent."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'target.db'}"
    elif request.param == "postgresql":
        yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))
    else:
        yield from fresh_mariadb_database(request.getfixturevalue("mariadb_server"))


def fresh_mariadb_database(base: str):
    yield from fresh_database(base, "`{}`", "")


def fresh_postgres_database(base: str):
    yield from fresh_database(base, '"{}"', " WITH (FORCE)")


def fresh_database(base: str, quoted: str, drop_options: str):
    """A new database on the server of `base` (its name as `quoted` shows it), dropped after."""
    import sqlalchemy as sa

    from batchyard.engines import normalise_url
    from batchyard.engines.base import dispose_engines

    name = f"by_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {quoted.format(name)}")
    url = normalise_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        dispose_engines()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted.format(name)}{drop_options}")
        admin.dispose()
