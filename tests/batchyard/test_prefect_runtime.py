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


MANY_TASKS = """
import json, sys
from prefect import flow, task
from batchyard.prefect_runtime import run_flow_cleanly

@task
def noop(i: int) -> int:
    return i

@flow
def many(n: int) -> int:
    return sum(f.result() for f in [noop.submit(i) for i in range(n)])

state = run_flow_cleanly(many, {"n": int(sys.argv[1])})
print(json.dumps({"id": str(state.state_details.flow_run_id), "result": state.result()}))
"""


@pytest.mark.slow
def test_every_task_run_is_recorded_before_an_ephemeral_command_exits(tmp_path):
    """Prefect 3.9.1 stops its temporary server at exit while the server is still recording:
    with its default recorder settings 14 of 300 task runs reached the database here when
    nothing waited. shutdown() waits until every one is recorded in a final state."""
    import json
    import sqlite3
    import subprocess
    import sys

    from tests.helpers import cli_env

    env = cli_env(tmp_path, PREFECT_LOGGING_LEVEL="WARNING")
    done = subprocess.run([sys.executable, "-c", MANY_TASKS, "200"], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["result"] == sum(range(200))
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as server_db:
        states = server_db.execute(
            "select state_type, count(*) from task_run where flow_run_id = ? group by 1",
            (seen["id"],)).fetchall()
    assert states == [("COMPLETED", 200)]
    assert "Traceback" not in done.stderr


def test_parameters_are_serialized_as_prefect_would_without_fastapi():
    """The flow-run parameters of an import, a stream run and an ETL run, encoded as Prefect's
    own serializer (FastAPI's jsonable_encoder) encodes them."""
    from batchyard.prefect_runtime import _serializer_without_fastapi
    from batchyard.readers import SourceOptions
    from batchyard.stream.job import StreamJob
    from flows.batch_import import batch_import

    parameters = {"source": "/data/users.csv", "schema_name": "users", "db": "sqlite:///x.db",
                  "table": None, "chunk_size": 100_000, "max_parallel": 10, "fresh": False,
                  "options": SourceOptions(delimiter=";", encoding="latin-1"),
                  "job": StreamJob(name="clicks"), "rejects_file": None}
    from batchyard.etl.spec import PipelineSpec

    spec = PipelineSpec.model_validate({
        "pipeline_id": "p1", "batch_size": 2,
        "sources": [{"type": "file", "id": "people", "path": "/data/in.csv"}],
        "target": {"type": "warehouse", "path": "/data/wh.duckdb", "table": "people"}})
    parameters.update({name: getattr(spec, name) for name in PipelineSpec.model_fields})
    ours = _serializer_without_fastapi(batch_import.serialize_parameters)(parameters)
    assert ours == batch_import.serialize_parameters(parameters)
    assert ours["options"]["delimiter"] == ";" and ours["chunk_size"] == 100_000
