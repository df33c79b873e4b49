"""Running flows from the CLI: heartbeats off unless the user asked for them."""

from __future__ import annotations

from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

from batchyard.prefect_runtime import run_flow_cleanly


@flow
def heartbeat_seen() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


def test_heartbeats_are_off_by_default():
    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default
    assert run_flow_cleanly(heartbeat_seen, {}).result() is None


def test_a_heartbeat_frequency_the_user_set_is_kept():
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        assert run_flow_cleanly(heartbeat_seen, {}).result() == 45
