"""Running flows from the CLI: heartbeats off unless the user asked for them."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

from batchyard.prefect_runtime import run_flow_cleanly

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow
def heartbeat_seen() -> int | None:
    return get_current_settings().flows.heartbeat_frequency


def test_heartbeats_are_off_by_default():
    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default
    assert run_flow_cleanly(heartbeat_seen, {}).result() is None


def test_a_heartbeat_frequency_the_user_set_is_kept():
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}):
        assert run_flow_cleanly(heartbeat_seen, {}).result() == 45


@flow
def events_worker_live() -> bool:
    """Whether an events worker is already running when the flow's body starts."""
    from prefect.events.worker import EventsWorker

    return any(not worker._stopped for worker in EventsWorker._instances.values())


def test_the_events_client_is_started_before_the_flow_run_begins():
    """Without heartbeats (the CLI's default), Prefect would start it at the first task event,
    inside the batch's work."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        assert events_worker_live() is False  # what Prefect alone does
    EventsWorker.drain_all()
    assert run_flow_cleanly(events_worker_live, {}).result() is True
