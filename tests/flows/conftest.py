"""Every flow test runs against the session's Prefect test server."""

import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    yield
