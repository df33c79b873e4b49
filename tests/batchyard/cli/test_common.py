"""The Prefect settings the CLI sets before Prefect is imported."""

from __future__ import annotations

import os

import pytest

from batchyard.cli.common import prefect_environment


@pytest.fixture
def environ(monkeypatch) -> dict:
    """A copy of the environment for prefect_environment to write into."""
    copy = dict(os.environ)
    monkeypatch.setattr(os, "environ", copy)
    return copy


def test_temporary_server_settings(environ):
    for name in ("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL",
                 "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE",
                 "PREFECT_SERVER_ANALYTICS_ENABLED"):
        environ.pop(name, None)
    prefect_environment()
    # Prefect casts the interval to an int; 0 would make its recorder flush in a busy loop
    assert int(float(environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"])) >= 1
    assert environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "100"
    assert environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_settings_the_user_gave_are_kept(environ):
    environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] = "3"
    prefect_environment()
    assert environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] == "3"
