"""ETL edges (issue 14): no target changes a value silently, the reference's retry numbers, and
per-source transforms whose steps are checked against the sources before anything is extracted."""

from __future__ import annotations

import asyncio
import json

import duckdb
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.engines import session
from batchyard.etl.spec import PipelineSpec
from flows.etl_pipeline import etl_pipeline
from tests.helpers import rows

CALLS: list[int] = []


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setenv("BATCHYARD_ETL_RETRY_SCALE", "0.01")


def run(**spec):
    """The final state and the counts it reports."""
    parsed = PipelineSpec.model_validate(spec)
    state = etl_pipeline(**{n: getattr(parsed, n) for n in PipelineSpec.model_fields}, return_state=True)
    result = state.result(raise_on_failure=False)
    return state, getattr(result, "summary", result)


def task_runs(state) -> dict[str, int]:
    """Each task run of the flow run and how often it ran, as the Prefect API recorded them."""
    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            response = await client._client.post("/task_runs/filter", json={
                "flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}, "limit": 200})
            return {t["name"]: t["run_count"] for t in response.json()}

    return asyncio.run(fetch())


def _read(kind: str, target: dict) -> list[tuple]:
    if kind == "warehouse":
        with duckdb.connect(target["path"]) as connection:
            return connection.execute("SELECT id, amount FROM things ORDER BY id").fetchall()
    if kind == "file":
        table = ds.dataset(target["path"], format="parquet").to_table().sort_by("id")
        return list(zip(table["id"].to_pylist(), table["amount"].to_pylist(), strict=True))
    return rows(target["url"], "SELECT id, amount FROM things ORDER BY id")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "warehouse", "file"])
def test_a_value_that_does_not_fit_the_existing_column_is_refused_not_rounded(tmp_path, kind, request):
    if kind == "postgresql":
        import uuid

        url, table = request.getfixturevalue("postgres_url"), f"things_{uuid.uuid4().hex[:8]}"
    target = {"sqlite": {"type": "database", "url": f"sqlite:///{tmp_path / 't.db'}", "table": "things"},
              "warehouse": {"type": "warehouse", "path": str(tmp_path / "w.duckdb"), "table": "things"},
              "file": {"type": "file", "path": str(tmp_path / "out")}}.get(kind)
    if kind == "postgresql":
        target = {"type": "database", "url": url, "table": table}
    (tmp_path / "a.jsonl").write_text('{"id": 1, "amount": 2}\n')
    (tmp_path / "b.jsonl").write_text('{"id": 2, "amount": 1.5}\n')
    (tmp_path / "c.jsonl").write_text('{"id": 3, "amount": 4.0}\n')
    try:
        for name in "abc":
            state, summary = run(pipeline_id=f"fit-{kind}", sources=[{"type": "file", "id": name,
                                                                      "path": str(tmp_path / f"{name}.jsonl")}],
                                 target=target)
            if name == "b":
                assert state.is_failed() and summary["failed_records"] == 1
                (failure,) = summary["failed_batches"]
                assert failure.startswith("b#0: load: LoadValidationError: ")
                assert failure.endswith(": column amount holds whole numbers; the value 1.5 (record 1 of "
                                        "source b) does not fit it: the batch is refused, not rounded")
            else:
                assert state.is_completed() and summary["successful_records"] == 1
        if kind == "postgresql":
            found = rows(url, f"SELECT id, amount FROM {table} ORDER BY id")
        else:
            found = _read(kind, target)
        assert found == [(1, 2), (3, 4)]  # 1.5 is nowhere, 4.0 (a whole number) is 4
    finally:
        if kind == "postgresql":
            rows(url, f"DROP TABLE IF EXISTS {table}")


def always_broken(table):
    CALLS.append(1)
    raise OSError("the lookup service is away")


def test_a_transform_is_tried_3_times_then_fails_the_run_before_anything_loads(tmp_path):
    CALLS.clear()
    (tmp_path / "in.csv").write_text("id\n1\n2\n")
    target = f"sqlite:///{tmp_path / 't.db'}"
    state, error = run(pipeline_id="tx", sources=[{"type": "file", "id": "f", "path": str(tmp_path / "in.csv")}],
                       target={"type": "database", "url": target, "table": "t"},
                       transform={"function": f"{__name__}:always_broken"})
    assert state.is_failed() and len(CALLS) == 3
    assert str(error) == ("transform failed, the run stops before loading: f#0: OSError: the lookup service "
                          "is away")
    assert task_runs(state)["transform-f-0"] == 3
    assert "load-f-0" not in task_runs(state)
    with session(target) as current:
        assert current.describe("t") is None


def test_a_load_is_tried_5_times_in_all(tmp_path):
    (tmp_path / "in.csv").write_text("id,country\n1,DE\n2,FR\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "country=DE").write_text("a file where the partition's directory would go")
    state, summary = run(pipeline_id="ld", sources=[{"type": "file", "id": "f", "path": str(tmp_path / "in.csv")}],
                         target={"type": "file", "path": str(out), "partition_by": "country"})
    assert state.is_failed() and summary["failed_records"] == 2
    assert task_runs(state)["load-f-0"] == 5


def test_each_source_has_its_own_transform_steps(tmp_path):
    (tmp_path / "a.csv").write_text("OrderID,amount,internal\n1,2.5,x\n")
    (tmp_path / "b.csv").write_text("order_id,amount\n2,3.5\n")
    target = f"sqlite:///{tmp_path / 't.db'}"
    state, summary = run(pipeline_id="own", target={"type": "database", "url": target, "table": "orders"},
                         sources=[{"type": "file", "id": "a", "path": str(tmp_path / "a.csv"),
                                   "transform": {"rename": {"OrderID": "order_id"}, "drop": ["internal"]}},
                                  {"type": "file", "id": "b", "path": str(tmp_path / "b.csv")}],
                         transform={"rename": {"amount": "total"}})
    assert state.is_completed() and summary["successful_records"] == 2
    assert rows(target, "SELECT order_id, total, _source_id FROM orders ORDER BY order_id") == [
        (1, 2.5, "a"), (2, 3.5, "b")]
    with session(target) as current:
        assert "internal" not in current.describe("orders")[0]


@pytest.mark.parametrize(("sources", "transform", "message"), [
    ([{"type": "file", "id": "b", "path": "{b}"}], {"rename": {"OrderID": "order_id"}},
     "the pipeline's transform renames column(s) OrderID, which source b does not produce (columns: "
     "order_id, amount, _source_id); give that source its own transform (sources[].transform)"),
    ([{"type": "file", "id": "b", "path": "{b}", "transform": {"drop": ["secret"]}}], {},
     "source b: its transform names column(s) secret it does not produce (columns: order_id, amount, _source_id)"),
    ([{"type": "database", "id": "db", "url": "{db}", "table": "events"}], {"rename": {"kind": "type"}},
     "the pipeline's transform renames column(s) kind, which source db does not produce (columns: id, "
     "amount, _source_id); give that source its own transform (sources[].transform)"),
    ([{"type": "file", "id": "b", "path": "{b}"}], {"drop": ["nowhere"]},
     "the pipeline's transform drops column(s) nowhere, which no source produces"),
])
def test_steps_naming_columns_a_source_lacks_are_refused_before_anything_is_extracted(
        tmp_path, sources, transform, message):
    (tmp_path / "b.csv").write_text("order_id,amount\n2,3.5\n")
    db = f"sqlite:///{tmp_path / 'source.db'}"
    with session(db, write=True) as current:
        current.sql("CREATE TABLE events (id INTEGER, amount REAL)")
    values = {"b": str(tmp_path / "b.csv"), "db": db}
    spec = {"pipeline_id": "refused", "target": {"type": "database", "url": f"sqlite:///{tmp_path / 't.db'}",
                                                 "table": "t"},
            "sources": [{k: v.format(**values) if isinstance(v, str) else v for k, v in s.items()} for s in sources],
            "transform": transform}
    state, error = run(**spec)
    assert state.is_failed() and str(error) == message
    assert not any(name.startswith("extract-") for name in task_runs(state))
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["etl", str(tmp_path / "spec.json")], catch_exceptions=False)
    link, error_line = result.stderr.splitlines()
    assert link.startswith("flow run '") and "/runs/flow-run/" in link
    assert (result.exit_code, error_line) == (1, f"error: {message}")
