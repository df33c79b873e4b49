"""Running flows from the CLI, in ephemeral mode or against a server, ending cleanly.

In ephemeral mode (no PREFECT_API_URL) Prefect 3.9.1 runs a temporary server in a subprocess,
and task-run states reach its database asynchronously: the client sends events, the server's
task-run recorder writes them. At exit Prefect stops that server at once; with a backlog (a
batch of many chunks) the write in progress is cancelled, a CancelledError traceback lands on
our stderr and the unwritten task runs are lost. So before exit we drain the client's log and
event queues, wait until the server has recorded every task run of our flow run in a final
state, and stop the server ourselves.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

# Task-run states written in batches instead of one transaction per event (Prefect's default),
# which frees the server's CPU for the import: set for the temporary server, and what the
# README recommends for a server that runs batch workloads. The flush interval must stay a
# whole number of seconds: Prefect 3.9.1 casts it to an int, and 0 makes the recorder flush in
# a busy loop that took most of a core from the import.
RECORDER_IN_BATCHES = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def _count(client, flow_run_id, state_types: tuple[str, ...] | None = None) -> int:
    body: dict[str, Any] = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}
    if state_types:
        body["task_runs"] = {"state": {"type": {"any_": list(state_types)}}}
    response = client.request("POST", "/task_runs/count", json=body)
    response.raise_for_status()
    return int(response.json())


def wait_for_task_runs_recorded(flow_run_id, timeout: float = 60.0, settle: float | None = None,
                                ) -> bool:
    """True once every task run the server has recorded for the flow run is final, `settle`
    seconds after this process sent its last event (call it once the events worker is
    drained). The server's recorder writes what it received at least once per flush interval,
    so by default `settle` is that interval (Prefect uses it as a whole number of seconds)
    plus half a second. Waiting instead for the count to stay unchanged for as long, from its
    last change, took up to a second longer at every exit (1.5-2.5 s after the drain)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    if settle is None:
        flush = get_current_settings().server.services.task_run_recorder.flush_interval
        settle = max(1, int(flush)) + 0.5
    sent_at = time.monotonic()
    deadline = sent_at + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            total = _count(client, flow_run_id)
            final = _count(client, flow_run_id, FINAL)
            if final == total and time.monotonic() - sent_at >= settle:
                return True
            time.sleep(0.1)
    return False


def _ephemeral() -> bool:
    from prefect.settings import get_current_settings

    return not get_current_settings().api.url


def shutdown(flow_run_id=None, timeout: float = 60.0) -> None:
    """Flush what this process still has to send; with a temporary server, let it catch up
    and stop it before the interpreter's exit hooks would."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)
    if not _ephemeral():
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the singleton get_client() started
    if not server.running:
        return
    if flow_run_id is not None:
        wait_for_task_runs_recorded(flow_run_id, timeout=timeout)
    server.stop()


def _without_default_heartbeats():
    """Prefect 3.9.1's heartbeat thread sleeps in whole seconds and the flow run waits for it
    to notice the end: 0.5 s on average added to every command. Its events only matter to an
    automation watching for crashed runs, which a user who sets up one enables by setting
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY; that is then kept. (The batch's own lease in the ledger
    still tells a crashed run from a live one.)"""
    from contextlib import nullcontext

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def connect_events_client() -> None:
    """Start Prefect's events worker now, before the flow run is created.

    Prefect starts it at a flow run's first task event, which is when the batch starts
    spooling its source: its start-up (two HTTP clients, each loading the CA bundle, a server
    version check and a websocket handshake, 0.15-0.3 s of CPU here) then competed with the
    spool for the two cores. Started here it runs on Prefect's event loop thread while this
    thread creates the flow run, which mostly waits for the server (bench/RESULTS.md has the
    figures). Only the events
    worker: starting the log worker as well made this thread wait for the loop thread."""
    from prefect.events.worker import EventsWorker

    with contextlib.suppress(Exception):  # Prefect starts it itself at the first event
        EventsWorker.instance()


def print_run_link(flow, flow_run, state) -> None:
    """An `on_running` hook: the run's page in the Prefect UI on stderr, as the run starts, so
    the user can watch it live; in ephemeral mode, that there is none."""
    import sys

    from prefect.utilities.urls import url_for

    link = url_for(flow_run)
    if link:
        print(f"flow run {flow_run.name!r}: {link}", file=sys.stderr, flush=True)
    else:
        print(f"flow run {flow_run.name!r} ({flow_run.id}) on a temporary server, no UI "
              "(batchyard server start keeps one running)", file=sys.stderr, flush=True)


def _serializer_without_fastapi(prefect_serializer):
    """Prefect serializes a new flow run's parameters with FastAPI's `jsonable_encoder`, and
    importing FastAPI for it took 0.2-0.5 s of every command here, on the critical path.
    pydantic's own encoder gives the same JSON for the parameters batchyard's flows take
    (strings, numbers, None, pydantic models; tests/batchyard/test_prefect_runtime.py checks
    it); anything it cannot encode goes to Prefect's."""
    from pydantic_core import to_jsonable_python

    def serialize(parameters: dict) -> dict:
        try:
            return {name: to_jsonable_python(value) for name, value in parameters.items()}
        except Exception:
            return prefect_serializer(parameters)

    return serialize


class _NotAboutTheLinkHook(logging.Filter):
    """Prefect logs running each hook twice; the link is the only thing the user needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "print_run_link" not in record.getMessage()


def run_flow_cleanly(flow, parameters: dict):
    """Run `flow` in this process, printing its UI link as it starts; return its final state."""
    state = None
    connect_events_client()
    engine_logger = logging.getLogger("prefect.engine")
    if not any(isinstance(f, _NotAboutTheLinkHook) for f in engine_logger.filters):
        engine_logger.addFilter(_NotAboutTheLinkHook())
    flow = flow.with_options(on_running=[*flow.on_running_hooks, print_run_link])
    flow.serialize_parameters = _serializer_without_fastapi(flow.serialize_parameters)
    try:
        with _without_default_heartbeats():
            state = flow(**parameters, return_state=True)
        return state
    finally:
        shutdown(state.state_details.flow_run_id if state is not None else None)


# What a `batchyard` command sets before it imports Prefect (`batchyard.cli.common`), for a
# temporary server on a loaded machine: a generous start-up time, task-run states in batches.
LOCAL_SETTINGS = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90", **RECORDER_IN_BATCHES}
COMMAND_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", **LOCAL_SETTINGS}
"""What a `batchyard` command sets in its environment unless the user set it (no network here:
telemetry off)."""


def run_locally(flow, **parameters) -> tuple[Any, dict]:
    """Run a flow from a terminal (`python flows/NAME.py`) as the CLI does: with the settings
    above (unless the environment sets them), ending cleanly.

    Returns the final state and what the run reports: its result, or the summary a run that
    fell short carries (`RunNotCompleted.summary`).

    Raises:
        SystemExit: (1) after printing the error, for a run that failed with no summary."""
    import os
    import sys

    from prefect import settings as prefect_settings
    from prefect.settings import temporary_settings

    updates = {getattr(prefect_settings, name): value for name, value in LOCAL_SETTINGS.items()
               if name not in os.environ}
    with temporary_settings(updates=updates):
        state = run_flow_cleanly(flow, parameters)
    result = state.result(raise_on_failure=False)
    result = getattr(result, "summary", result)
    if not isinstance(result, dict):
        print(f"error: {flow.name} failed: {result}", file=sys.stderr)
        raise SystemExit(1)
    return state, result
