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

    from batchyard.db import normalise_url

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
