"""prefect.yaml and deployments/: every entrypoint imports, every deployment's parameters validate."""

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in CONFIG["deployments"]}

# Values for required parameters a deployment leaves to each run.
RUN_TIME = {"source": "users.csv", "batch_id": "b-1"}


def test_every_flow_is_deployed_with_the_expected_settings():
    assert sorted(DEPLOYMENTS) == ["batch-import", "batch-import-high", "batch-import-low",
                                   "etl-pipeline", "retry-failed", "stream-window"]
    assert {d["work_pool"]["name"] for d in DEPLOYMENTS.values()} == {"batchyard"}
    assert [DEPLOYMENTS[n]["work_pool"]["work_queue_name"] for n in
            ("batch-import-high", "batch-import", "batch-import-low")] == ["high", "default", "low"]
    stream = DEPLOYMENTS["stream-window"]
    assert stream["schedules"] == [{"interval": 60}]
    assert stream["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert DEPLOYMENTS["etl-pipeline"]["schedules"] == [  # ships paused (issue 14): orders-db is the user's
        {"cron": "0 2 * * *", "timezone": "UTC", "active": False}]
    assert DEPLOYMENTS["batch-import"]["schedules"] == []
    assert CONFIG["pull"] == [{"prefect.deployments.steps.set_working_directory": {
        "directory": "{{ $BATCHYARD_HOME }}"}}]


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoint_imports_and_parameters_validate(name, monkeypatch):
    deployment = DEPLOYMENTS[name]
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(deployment["entrypoint"])
    assert flow.name == deployment["entrypoint"].rsplit(":", 1)[1].replace("_", "-")
    parameters = dict(deployment.get("parameters") or {})
    assert set(parameters) <= set(flow.parameters.properties)
    for required in flow.parameters.required or []:
        if required not in parameters:  # setdefault would look RUN_TIME up even when given
            parameters[required] = RUN_TIME[required]
    validated = flow.validate_parameters(parameters)
    assert set(parameters) <= set(validated) == set(flow.parameters.properties)


def test_stream_window_parameters_become_a_stream_job():
    from batchyard.stream.job import StreamJob

    flow = load_flow_from_entrypoint(str(ROOT / DEPLOYMENTS["stream-window"]["entrypoint"]))
    job = flow.validate_parameters(DEPLOYMENTS["stream-window"]["parameters"])["job"]
    assert job == StreamJob(name="events", window_seconds=60, max_windows=1000)


def test_bad_parameters_fail_validation():
    from prefect.exceptions import ParameterTypeError

    flow = load_flow_from_entrypoint(str(ROOT / DEPLOYMENTS["stream-window"]["entrypoint"]))
    with pytest.raises(ParameterTypeError, match="window_seconds"):
        flow.validate_parameters({"job": {"window_seconds": -5}})


def test_serve_declares_the_stream_schedule_and_concurrency():
    from deployments.serve import deployments

    served = {d.name: d for d in deployments()}
    assert sorted(served) == ["batch-import", "etl-pipeline", "retry-failed", "stream-window"]
    stream = served["stream-window"]
    assert stream.schedules[0].schedule.interval.total_seconds() == 60
    assert stream.concurrency_limit == 1
    assert stream.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    (nightly,) = served["etl-pipeline"].schedules
    assert (nightly.schedule.cron, nightly.active) == ("0 2 * * *", False)
