"""The Prefect settings the CLI sets before Prefect is imported."""

from __future__ import annotations

import os

import pytest

from batchyard.cli import _prefect_environment


def test_temporary_server_settings(monkeypatch):
    for name in ("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL",
                 "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE",
                 "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    _prefect_environment()
    # Prefect casts the interval to an int; 0 would make its recorder flush in a busy loop
    assert int(float(os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"])) >= 1
    assert os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"] == "100"
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_settings_the_user_gave_are_kept(monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL", "3")
    _prefect_environment()
    assert os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL"] == "3"


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch):
    """_prefect_environment writes os.environ; monkeypatch undoes what the tests set, and
    this undoes what the function set on top of it."""
    before = dict(os.environ)
    yield
    for name in set(os.environ) - set(before):
        del os.environ[name]
    os.environ.update(before)
