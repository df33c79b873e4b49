"""Chunk tasks on a process pool and on a Dask cluster give what the thread pool gives.

The Dask cluster is a real `distributed.LocalCluster` of two worker processes, reached by its
address as a remote one would be; the targets are real SQLite files written by several
processes at once.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.demo import expected_counts, write_users
from batchyard.errors import ConfigurationError
from flows.batch_import import batch_import
from tasks.runners import chunks_in_flight
from tests.helpers import free_port, refuse_ids, rows, run_to_end

ROWS, CHUNK = 3_000, 500


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def dask_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def thread_outcome(tmp_path_factory):
    """The reference: the same file imported by the default thread runner."""
    base = tmp_path_factory.mktemp("threads")
    source = write_users(base / "users.csv", ROWS)
    url = f"sqlite:///{base / 'threads.db'}"
    summary = batch_import(str(source), db=url, chunk_size=CHUNK)
    assert summary["status"] == "completed"
    return source, outcome(url)


def outcome(url: str) -> dict:
    """Everything a batch leaves behind but its id and times."""
    return {
        "table": rows(url, "select id, email, name, age, country, signup_date, balance, "
                           "_row_number from users order by id"),
        "batch": rows(url, "select status, total, success, failed, ignored, chunks "
                           "from batchyard_batches"),
        "chunks": rows(url, "select chunk_index, first_row, n_rows, status, success, failed, "
                            "ignored from batchyard_chunks order by chunk_index"),
        "records": rows(url, "select row_number, chunk_index, status, error "
                             "from batchyard_records order by row_number"),
    }


def counts(result: dict) -> dict:
    return {k: result["batch"][0][i] for i, k in enumerate(
        ("status", "total", "success", "failed", "ignored"))}


def test_reference_run_has_bad_rows_and_duplicates(thread_outcome):
    _, reference = thread_outcome
    want = expected_counts(ROWS)
    assert want["failed"] > 0 and want["ignored"] > 0
    assert counts(reference) == {"status": "completed", **want}
    assert len(reference["table"]) == want["success"]


@pytest.mark.slow
def test_dask_cluster_by_address_from_the_cli_gives_the_same_result(
        tmp_path, thread_outcome, dask_address):
    """Through the command, with the target as a block: the workers load the block themselves."""
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    source, reference = thread_outcome
    target = tmp_path / "dask.db"
    SqlAlchemyConnector(connection_info=ConnectionComponents(
        driver=SyncDriver.SQLITE_PYSQLITE, database=str(target))).save("runner-test", overwrite=True)
    result = invoke("import", source, "--db", "block:runner-test", "--chunk-size", CHUNK,
                    "--task-runner", "dask", "--dask-address", dask_address, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in expected_counts(ROWS)} == expected_counts(ROWS)
    assert outcome(f"sqlite:///{target}") == reference


@pytest.mark.slow
def test_process_pool_gives_the_same_result(tmp_path, thread_outcome):
    source, reference = thread_outcome
    url = f"sqlite:///{tmp_path / 'process.db'}"
    summary = batch_import(str(source), db=url, chunk_size=CHUNK, task_runner="process",
                           max_parallel=2)
    assert summary["status"] == "completed"
    assert outcome(url) == reference


@pytest.mark.slow
def test_failed_chunk_on_dask_is_recorded_and_resumed_on_dask(tmp_path, sqlite_url, dask_address,
                                                             monkeypatch):
    """A chunk that fails on a worker comes back as its error (pickled across the cluster), is
    recorded, and `batchyard resume --task-runner dask` finishes the batch."""
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    source = write_users(tmp_path / "users.csv", 400, bad=False)
    refuse_ids(tmp_path, sqlite_url, 101, 200)
    first, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100, batch_id="on-dask",
                              task_runner="dask", dask_address=dask_address)
    assert (first["status"], first["success"], first["failed"]) == ("failed", 300, 100) and state.is_failed()
    # the driver's error comes back as it was, not as the TypeError of unpickling it (issue 14)
    assert first["failed_chunks"][0]["cause"] == ("PROCESSING_ERROR: InternalError: INTERNAL: failed to "
                                                  "execute: maintenance")
    assert rows(sqlite_url, "select chunk_index, status from batchyard_chunks "
                            "where batch_id = 'on-dask' and status <> 'committed'") == [(1, "failed")]
    rows(sqlite_url, "drop trigger maintenance")
    resumed = invoke("resume", "on-dask", "--db", sqlite_url, "--task-runner", "dask",
                     "--dask-address", dask_address, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["success"] == 400
    assert rows(sqlite_url, "select count(*), count(distinct id) from users") == [(400, 400)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "{users}", "--task-runner", "fork"],
         "error: unknown task runner 'fork': use thread, process, dask"),
        (["import", "{users}", "--dask-address", "tcp://127.0.0.1:8786"],
         "error: a Dask address (tcp://127.0.0.1:8786) needs the dask task runner (--task-runner dask)"),
        (["import", "{users}", "--task-runner", "dask", "--dask-address", "tcp://127.0.0.1:{port}"],
         "error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: Connection refused"),
        (["import", "{users}", "--task-runner", "dask", "--dask-address", "tcp://nowhere"],
         "error: not a Dask scheduler address: 'tcp://nowhere'"),
        (["resume", "b1", "--task-runner", "fork"],
         "error: unknown task runner 'fork': use thread, process, dask"),
        (["resume", "b1", "--task-runner", "dask", "--dask-address", "tcp://127.0.0.1:{port}"],
         "error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: Connection refused"),
    ],
)
def test_bad_runner_options_fail_at_once_with_one_line(tmp_path, args, message):
    users = write_users(tmp_path / "users.csv", 10)
    port = free_port()
    args = [a.format(users=users, port=port) for a in args]
    result = invoke(*args, "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message.format(port=port)), lines[0]
    assert not (tmp_path / "x.db").exists()


def test_flow_refuses_an_address_it_cannot_use(tmp_path, sqlite_url):
    """Deployments reach the flow without the command's checks: the same lines, no batch."""
    source = write_users(tmp_path / "users.csv", 10)
    with pytest.raises(ConfigurationError, match="needs the dask task runner"):
        batch_import(str(source), db=sqlite_url, dask_address="tcp://127.0.0.1:8786")
    port = free_port()
    with pytest.raises(ConfigurationError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        batch_import(str(source), db=sqlite_url, task_runner="dask",
                     dask_address=f"tcp://127.0.0.1:{port}")
    assert not (tmp_path / "target.db").exists()


def test_runner_is_a_choice_in_the_deployment_form():
    properties = batch_import.parameters.model_dump()["properties"]
    assert properties["task_runner"]["enum"] == ["thread", "process", "dask"]
    assert properties["task_runner"]["default"] == "thread"
    assert "dask_address" in properties


@pytest.mark.parametrize(("runner", "max_parallel", "slots", "expected"), [
    ("thread", 10, 2, 3),   # one chunk ready beyond the work slots is enough
    ("thread", 2, 2, 2),    # a smaller --max-parallel is kept
    ("thread", 10, 8, 9),
    ("thread", 1, 4, 1),
    ("process", 10, 2, 10),  # workers of their own: --max-parallel as given
    ("dask", 10, 2, 10),
])
def test_chunks_in_flight(monkeypatch, runner, max_parallel, slots, expected):
    monkeypatch.setenv("BATCHYARD_WORK_SLOTS", str(slots))
    assert chunks_in_flight(runner, max_parallel) == expected
