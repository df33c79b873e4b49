"""The retry policies: what is retried, how often, read from the settings when a run starts."""

from __future__ import annotations

import pytest
from prefect.states import Completed, Failed

from batchyard.errors import ConfigurationError, SourceError
from tasks.policies import BOOKKEEPING, chunk_policy, etl_load_policy, etl_transform_policy, retry_transient


@pytest.mark.parametrize("exc, retried", [
    (OSError("connection refused"), True),
    (TimeoutError("database is locked"), True),
    (ConfigurationError("bad option"), False),
    (SourceError("bad file"), False),
    (ValueError("bad value"), False),
])
def test_only_transient_faults_are_retried(exc, retried):
    assert retry_transient(None, None, Failed(data=exc)) is retried


def test_a_completed_state_is_not_retried():
    assert retry_transient(None, None, Completed(data=1)) is False


def test_chunk_policy_follows_the_settings_at_run_time(monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "4")
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[1, 30]")
    options = chunk_policy().options()
    assert (options["retries"], options["retry_delay_seconds"], options["retry_jitter_factor"]) == (4, [1, 10.0], 0.5)
    assert options["retry_condition_fn"] is retry_transient


def test_etl_attempts_and_delays_are_the_reference_ones_and_scale(monkeypatch):
    """Transform 3 attempts in all (1 s, doubling), load 5 (2 s, doubling, at most 30 s), as the
    Temporal data pipeline gives them (issue 14: one retry fewer each than before)."""
    transform, load = etl_transform_policy().options(), etl_load_policy().options()
    assert (transform["retries"], transform["retry_delay_seconds"]) == (2, [1.0, 2.0])
    assert (load["retries"], load["retry_delay_seconds"]) == (4, [2.0, 4.0, 8.0, 16.0])
    monkeypatch.setenv("BATCHYARD_ETL_RETRY_SCALE", "0.01")
    assert etl_load_policy().options()["retry_delay_seconds"] == [0.02, 0.04, 0.08, 0.16]


def test_bookkeeping_retries_whatever_failed():
    assert "retry_condition_fn" not in BOOKKEEPING.options()
