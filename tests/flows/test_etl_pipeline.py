"""The etl-pipeline flow end to end: real SQLite, PostgreSQL and DuckDB, files, and a real HTTP
server on 127.0.0.1 that paginates, answers 503 and 429 with Retry-After, and wants a token."""

from __future__ import annotations

import uuid

import duckdb
import pyarrow.parquet as pq
import pytest

from batchyard.engines import session
from batchyard.errors import RunNotCompleted
from batchyard.etl.spec import PipelineSpec
from flows.etl_pipeline import etl_pipeline
from tests.batchyard.etl.api_server import TOKEN, ApiServer


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setenv("BATCHYARD_ETL_RETRY_SCALE", "0.01")
    monkeypatch.setenv("API_TOKEN", TOKEN)


def rows(url: str, sql: str) -> list[tuple]:
    with session(url) as current:
        return [tuple(r) for r in current.sql(sql)]


def duck(path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path)) as connection:
        return connection.execute(sql).fetchall()


def run(**spec) -> dict:
    """The run's counts; a run with failed batches ends Failed (issue 14) and carries them."""
    parsed = PipelineSpec.model_validate(spec)
    state = etl_pipeline(**{name: getattr(parsed, name) for name in PipelineSpec.model_fields},
                         return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        assert isinstance(result, RunNotCompleted) and state.is_failed(), result
        return result.summary
    assert state.is_completed() and not result["failed_records"]
    return result


def make_events(url: str, ids: range, table: str = "events", stamp: str = "2026-01-01") -> None:
    with session(url, write=True) as current:
        current.sql(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, kind TEXT, "
                    "amount DOUBLE PRECISION, updated_at TEXT)")
        for i in ids:
            current.sql(f"INSERT INTO {table} VALUES ({i}, 'k{i % 3}', {i * 2.5}, '{stamp}T00:{i % 60:02d}:00')")


def artifacts(keys: list[str]) -> list[dict]:
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            response = await client._client.post("/artifacts/filter",
                                                 json={"artifacts": {"key": {"any_": keys}}, "limit": 20})
            return response.json()

    return asyncio.run(fetch())


def counts(summary: dict) -> tuple:
    return (summary["total_records"], summary["successful_records"], summary["failed_records"])


def test_three_sources_in_parallel_into_sqlite(tmp_path):
    source_db = f"sqlite:///{tmp_path / 'source.db'}"
    make_events(source_db, range(1, 24))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("id,kind,amount\n101, csv ,1.5\n102,csv,2.5\n")
    (tmp_path / "in" / "b.csv").write_text("id,kind,amount\n103,csv,3.5\n")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with ApiServer(items=25) as api:
        api.fail("/pages?page=2&limit=10", 503)
        api.fail("/pages?page=3&limit=10", 429)
        summary = run(
            pipeline_id="three", batch_size=10, version="2.1",
            sources=[
                {"type": "database", "id": "events", "url": source_db, "table": "events"},
                {"type": "api", "id": "items", "url": api.url + "/pages", "records_path": "data",
                 "auth_env": "API_TOKEN", "backoff": 0.05,
                 "pagination": {"style": "page", "page_size": 10}},
                {"type": "file", "id": "csv", "path": str(tmp_path / "in" / "*.csv")},
            ],
            target={"type": "database", "url": target, "table": "facts"},
        )
        assert api.hits["/pages?page=2&limit=10"] == 2 and api.hits["/pages?page=3&limit=10"] == 2
    assert counts(summary) == (51, 51, 0)
    assert summary["sources"] == {"events": {"extracted": 23, "loaded": 23, "failed": 0},
                                  "items": {"extracted": 25, "loaded": 25, "failed": 0},
                                  "csv": {"extracted": 3, "loaded": 3, "failed": 0}}
    assert rows(target, "SELECT _source_id, count(*), min(id), max(id) FROM facts GROUP BY 1 ORDER BY 1") == [
        ("csv", 3, 101, 103), ("events", 23, 1, 23), ("items", 25, 1, 25)]
    assert rows(target, "SELECT id, kind, amount, name, _pipeline_version, _row_number FROM facts "
                        "WHERE id IN (101, 7) AND _source_id <> 'items' ORDER BY _source_id") == [
        (101, "csv", 1.5, None, "2.1", 1), (7, "k1", 17.5, None, "2.1", 7)]
    assert rows(target, "SELECT name, price, tags FROM facts WHERE _source_id = 'items' AND id = 4") == [
        ("item 4", 6.0, '{"even": true}')]
    assert rows(target, "SELECT count(*) FROM facts WHERE _processed_at IS NULL") == [(0,)]


def test_incremental_database_source_into_duckdb_extracts_only_new_rows(tmp_path):
    source_db = f"sqlite:///{tmp_path / 'source.db'}"
    make_events(source_db, range(1, 13), stamp="2026-01-01")
    warehouse = tmp_path / "wh.duckdb"
    spec = dict(pipeline_id="incr", batch_size=5,
                sources=[{"type": "database", "id": "events", "url": source_db, "table": "events",
                          "cursor_column": "updated_at"}],
                target={"type": "warehouse", "path": str(warehouse), "table": "events"})
    assert counts(run(**spec)) == (12, 12, 0)
    assert counts(run(**spec)) == (0, 0, 0)
    make_events(source_db, range(13, 17), stamp="2026-01-02")
    second = run(**spec)
    assert counts(second) == (4, 4, 0)
    assert duck(warehouse, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events") == [(16, 16, 1, 16)]
    assert duck(warehouse, "SELECT id, kind, amount, updated_at FROM events WHERE id = 14") == [
        (14, "k2", 35.0, "2026-01-02T00:14:00")]
    assert duck(warehouse, "SELECT source_id, cursor_column, cursor_value FROM batchyard_etl_state") == [
        ("events", "updated_at", "2026-01-02T00:16:00")]


def test_merge_updates_rows_in_postgres(tmp_path, postgres_url):
    source_table, target_table = f"src_{uuid.uuid4().hex[:8]}", f"dst_{uuid.uuid4().hex[:8]}"
    make_events(postgres_url, range(1, 11), table=source_table)
    spec = dict(pipeline_id=f"merge-{source_table}", batch_size=4, write_disposition="merge",
                sources=[{"type": "database", "id": "pg", "url": postgres_url, "table": source_table,
                          "cursor_column": "updated_at"}],
                target={"type": "database", "url": postgres_url, "table": target_table, "primary_key": ["id"]})
    try:
        assert counts(run(**spec)) == (10, 10, 0)
        with session(postgres_url, write=True) as current:
            current.sql(f"UPDATE {source_table} SET kind = 'changed', updated_at = '2026-02-01T00:00:00' "
                        "WHERE id IN (3, 8)")
        make_events(postgres_url, range(11, 13), table=source_table, stamp="2026-02-02")
        assert counts(run(**spec)) == (4, 4, 0)
        assert rows(postgres_url, f"SELECT count(*), count(DISTINCT id) FROM {target_table}") == [(12, 12)]
        assert rows(postgres_url, f"SELECT id, kind FROM {target_table} WHERE kind = 'changed' OR id > 10 "
                                  "ORDER BY id") == [(3, "changed"), (8, "changed"), (11, "k2"), (12, "k0")]
    finally:
        with session(postgres_url, write=True) as current:
            current.sql(f"DROP TABLE IF EXISTS {source_table}")
            current.sql(f"DROP TABLE IF EXISTS {target_table}")


def test_merge_into_duckdb_keeps_the_last_record_of_a_key(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(f'{{"id": {i}, "v": "a{i}"}}\n' for i in range(1, 6)))
    (tmp_path / "b.jsonl").write_text('{"id": 2, "v": "b2"}\n{"id": 9, "v": "b9"}\n{"id": 2, "v": "b2-last"}\n')
    warehouse = tmp_path / "wh.duckdb"
    target = {"type": "warehouse", "path": str(warehouse), "table": "things", "primary_key": ["id"]}
    run(pipeline_id="m", sources=[{"type": "file", "id": "a", "path": str(tmp_path / "a.jsonl")}],
        target=target, write_disposition="merge")
    summary = run(pipeline_id="m", sources=[{"type": "file", "id": "b", "path": str(tmp_path / "b.jsonl")}],
                  target=target, write_disposition="merge")
    assert counts(summary) == (3, 3, 0)  # two records of key 2 in one batch: the last one wins
    assert duck(warehouse, "SELECT id, v, _source_id FROM things ORDER BY id") == [
        (1, "a1", "a"), (2, "b2-last", "b"), (3, "a3", "a"), (4, "a4", "a"), (5, "a5", "a"), (9, "b9", "b")]


@pytest.mark.parametrize("kind", ["database", "warehouse"])
def test_replace_leaves_the_old_data_intact_when_a_load_fails(tmp_path, kind):
    if kind == "database":
        target = {"type": "database", "url": f"sqlite:///{tmp_path / 't.db'}", "table": "items", "primary_key": ["id"]}
        read = lambda sql: rows(target["url"], sql)  # noqa: E731
    else:
        target = {"type": "warehouse", "path": str(tmp_path / "t.duckdb"), "table": "items", "primary_key": ["id"]}
        read = lambda sql: duck(target["path"], sql)  # noqa: E731
    (tmp_path / "old.csv").write_text("id,v\n" + "".join(f"{i},old{i}\n" for i in range(1, 8)))
    first = run(pipeline_id="rep", sources=[{"type": "file", "id": "f", "path": str(tmp_path / "old.csv")}],
                target=target, write_disposition="replace", batch_size=5)
    assert counts(first) == (7, 7, 0) and first["replaced"] is True
    new = [f"{i},new{i}\n" for i in range(1, 30)] + ["5,duplicate key\n"]  # 3 batches of 10; the key 5 twice
    (tmp_path / "new.csv").write_text("id,v\n" + "".join(new))
    second = run(pipeline_id="rep", sources=[{"type": "file", "id": "f", "path": str(tmp_path / "new.csv")}],
                 target=target, write_disposition="replace", batch_size=10)
    assert counts(second) == (30, 0, 30) and second["replaced"] is False
    assert len(second["failed_batches"]) == 1 and "refused the batch" in second["failed_batches"][0]
    assert read("SELECT count(*), min(v), max(v) FROM items") == [(7, "old1", "old7")]
    assert read("SELECT source_id, n_rows FROM batchyard_etl_failed") == [("f", 10)]
    names = [r[0] for r in read("SELECT table_name FROM information_schema.tables")] if kind == "warehouse" else \
        [r[0] for r in read("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert sorted(names) == ["batchyard_etl_failed", "batchyard_etl_state", "items"]


def test_files_target_partitioned_parquet_and_csv(tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": {i}, "country": "{"DE" if i % 2 else "FR"}"}}\n'
                                               for i in range(1, 8)))
    out = tmp_path / "out"
    summary = run(pipeline_id="files", batch_size=3,
                  sources=[{"type": "file", "id": "j", "path": str(tmp_path / "in.jsonl")}],
                  target={"type": "file", "path": str(out), "format": "parquet", "partition_by": "country"})
    assert counts(summary) == (7, 7, 0)
    assert sorted(p.name for p in out.iterdir()) == ["country=DE", "country=FR"]
    de = pq.read_table(out / "country=DE")
    assert sorted(de["id"].to_pylist()) == [1, 3, 5, 7]
    assert sorted(pq.read_table(out / "country=FR")["id"].to_pylist()) == [2, 4, 6]
    csv_out = tmp_path / "csv"
    run(pipeline_id="files-csv", sources=[{"type": "file", "id": "j", "path": str(tmp_path / "in.jsonl")}],
        target={"type": "file", "path": str(csv_out), "format": "csv"}, write_disposition="replace")
    (written,) = list(csv_out.iterdir())
    lines = written.read_text().splitlines()
    assert len(lines) == 8 and lines[0].startswith('"id","country","_source_id"') and lines[1].startswith('1,"DE","j"')


def test_a_failing_source_fails_the_whole_run_and_names_it(tmp_path):
    target = f"sqlite:///{tmp_path / 'target.db'}"
    (tmp_path / "ok.csv").write_text("id\n1\n2\n")
    with ApiServer() as api:
        state = etl_pipeline(
            pipeline_id="broken",
            sources=PipelineSpec.model_validate({"pipeline_id": "x", "target": {"type": "database", "table": "t"}, "sources": [
                {"type": "file", "id": "ok", "path": str(tmp_path / "ok.csv")},
                {"type": "api", "id": "orders-api", "url": api.url + "/broken", "auth_env": "API_TOKEN",
                 "max_retries": 1, "backoff": 0}]}).sources,
            target={"type": "database", "url": target, "table": "t"}, return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert message == (f"extract failed, the run stops: source orders-api: HTTP 500 from {api.url}/broken "
                       "after 1 retries")
    assert TOKEN not in message and "s3cret" not in (state.message or "")
    assert rows(target, "SELECT name FROM sqlite_master WHERE name = 't'") == []


def test_sources_and_targets_from_saved_blocks_never_show_the_secret(tmp_path, caplog):
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    from blocks.etl import DuckDbWarehouse, HttpApiSource

    source_db = tmp_path / "source.db"
    make_events(f"sqlite:///{source_db}", range(1, 6))
    SqlAlchemyConnector(connection_info=ConnectionComponents(
        driver=SyncDriver.SQLITE_PYSQLITE, database=str(source_db))).save("etl-test-source-db", overwrite=True)
    DuckDbWarehouse(path=str(tmp_path / "wh.duckdb")).save("etl-test-warehouse", overwrite=True)
    with ApiServer(items=12) as api:
        HttpApiSource(url=api.url + "/offset", auth_value=TOKEN).save("etl-test-api", overwrite=True)
        assert "s3cret" not in repr(HttpApiSource.load("etl-test-api"))
        summary = run(pipeline_id="blocks", batch_size=5, sources=[
            {"type": "database", "id": "db", "url": "block:etl-test-source-db", "table": "events"},
            {"type": "api", "id": "api", "block": "etl-test-api", "pagination": {"style": "offset", "page_size": 5}},
        ], target={"type": "warehouse", "path": "block:etl-test-warehouse", "table": "mixed"})
    assert counts(summary) == (17, 17, 0)
    assert duck(tmp_path / "wh.duckdb", "SELECT _source_id, count(*) FROM mixed GROUP BY 1 ORDER BY 1") == [
        ("api", 12), ("db", 5)]
    assert "s3cret" not in caplog.text and "s3cret" not in str(summary)

    shown = [str(a["data"]) + str(a["description"])
             for a in artifacts([f"etl-blocks-{p}" for p in ("extract", "transform", "load", "counts")])]
    assert len(shown) == 4 and not any("s3cret" in text for text in shown)
    assert any("17 records, 17 loaded, 0 failed" in text for text in shown)


def test_deployment_parameters_in_prefect_yaml_are_valid():
    from pathlib import Path

    import yaml

    (deployment,) = [d for d in yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())["deployments"]
                     if d["name"] == "etl-pipeline"]
    parameters = etl_pipeline.validate_parameters(deployment["parameters"])
    assert (parameters["pipeline_id"], parameters["sources"][0].cursor_column, parameters["target"].type) == (
        "nightly-orders", "updated_at", "warehouse")
    assert deployment["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": False}]


@pytest.mark.slow
def test_blocks_register_with_the_prefect_cli(prefect_server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import cli_env

    prefect = str(Path(sys.executable).with_name("prefect"))
    env = cli_env(tmp_path, prefect_server)
    root = Path(__file__).parents[2]
    done = subprocess.run([prefect, "block", "register", "-m", "blocks.etl"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = subprocess.run([prefect, "block", "type", "ls"], cwd=root, env=env, capture_output=True,
                            text=True, timeout=180)
    assert "batchyard-http-api-source" in listed.stdout and "batchyard-duckdb-warehouse" in listed.stdout


_MEASURE = """
import json, sys
from batchyard.etl.spec import load_spec, PipelineSpec
from flows.etl_pipeline import etl_pipeline
spec = load_spec(sys.argv[1])
result = etl_pipeline(**{n: getattr(spec, n) for n in PipelineSpec.model_fields})
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"rss_mb": int(status["VmHWM"].split()[0]) / 1024, "loaded": result["successful_records"]}))
"""


TARGET = lambda tmp_path, n: {"type": "file", "path": str(tmp_path / f"out-{n}")}  # noqa: E731


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_records(tmp_path, prefect_server):
    """Five times the records (of 1 kB each), about the same peak RSS. The peak is the child's
    VmHWM: getrusage's ru_maxrss survives execve, so it would count this test process's own
    memory at fork time. A real server, not an ephemeral one inside the measured process, keeps
    the run's records; allocator settings that hand freed memory back keep the measure steady."""
    import json
    import subprocess
    import sys

    import pyarrow as pa

    from tests.helpers import cli_env

    peaks = {}
    for n in (50_000, 250_000):
        data = tmp_path / f"in-{n}.parquet"
        pq.write_table(pa.table({"id": pa.array(range(n)), "text": pa.array([f"{i:09d}" * 100 for i in range(n)])}),
                       data, row_group_size=5_000)
        spec = tmp_path / f"p-{n}.json"
        spec.write_text(json.dumps({"pipeline_id": f"mem-{n}", "batch_size": 5_000, "max_parallel": 2,
                                    "sources": [{"type": "file", "id": "f", "path": str(data)}],
                                    "target": {"type": "file", "path": str(tmp_path / f"out-{n}")}}))
        env = cli_env(tmp_path, prefect_server, MALLOC_ARENA_MAX="2", ARROW_DEFAULT_MEMORY_POOL="system")
        done = subprocess.run([sys.executable, "-c", _MEASURE, str(spec)], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        assert measured["loaded"] == n
        peaks[n] = measured["rss_mb"]
    # 200,000 more records of 1 kB are 200 MB more data; collected, they would show many times over.
    assert peaks[250_000] < peaks[50_000] + 50, peaks


def test_a_failed_batch_is_recorded_and_the_next_run_loads_it_again(tmp_path):
    source_db = f"sqlite:///{tmp_path / 'source.db'}"
    make_events(source_db, range(1, 11))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    with session(target, write=True) as current:  # the owner's table refuses amounts of 16 or more
        current.sql("CREATE TABLE events (id INTEGER PRIMARY KEY, amount REAL CHECK (amount < 16))")
    spec = dict(pipeline_id="again", batch_size=5, write_disposition="merge",
                sources=[{"type": "database", "id": "db", "url": source_db, "table": "events",
                          "cursor_column": "updated_at"}],
                target={"type": "database", "url": target, "table": "events", "primary_key": ["id"]})
    first = run(**spec)
    assert counts(first) == (10, 5, 5)
    assert first["failed_batches"][0].startswith("db#1: load: LoadValidationError: ")
    assert "CHECK constraint failed" in first["failed_batches"][0]
    assert rows(target, "SELECT source_id, batch_index, n_rows FROM batchyard_etl_failed") == [("db", 1, 5)]
    assert rows(target, "SELECT count(*) FROM batchyard_etl_state") == [(0,)]  # the cursor did not move
    with session(source_db, write=True) as current:
        current.sql("UPDATE events SET amount = amount / 10 WHERE id > 5")
    assert counts(run(**spec)) == (10, 10, 0)
    assert rows(target, "SELECT id, amount FROM events WHERE id >= 5 ORDER BY id") == [
        (5, 12.5), (6, 1.5), (7, 1.75), (8, 2.0), (9, 2.25), (10, 2.5)]
    assert counts(run(**spec)) == (0, 0, 0)


def test_api_into_postgres_append_then_replace(postgres_url):
    table = f"api_{uuid.uuid4().hex[:8]}"
    target = {"type": "database", "url": postgres_url, "table": table}
    try:
        with ApiServer(items=23) as api:
            source = {"type": "api", "id": "link", "url": api.url + "/link?limit=10", "auth_env": "API_TOKEN",
                      "pagination": {"style": "link"}}
            assert counts(run(pipeline_id=table, batch_size=6, sources=[source], target=target)) == (23, 23, 0)
            assert counts(run(pipeline_id=table, batch_size=6, sources=[source], target=target)) == (23, 23, 0)
            assert rows(postgres_url, f"SELECT count(*), count(DISTINCT id) FROM {table}") == [(46, 23)]
            replaced = run(pipeline_id=table, batch_size=6, sources=[source], target=target,
                           write_disposition="replace")
        assert counts(replaced) == (23, 23, 0) and replaced["replaced"] is True
        assert rows(postgres_url, f"SELECT count(*), count(DISTINCT id), min(name), max(price) FROM {table}") == [
            (23, 23, "item 1", 34.5)]
        assert rows(postgres_url, f"SELECT tags, _source_id, _pipeline_version, _row_number FROM {table} "
                                  "WHERE id = 2") == [('{"even": true}', "link", "1.0", 2)]
        assert rows(postgres_url, f"SELECT count(*) FROM {table} WHERE _processed_at > now() - interval '1 hour'") == [
            (23,)]
    finally:
        with session(postgres_url, write=True) as current:
            current.sql(f"DROP TABLE IF EXISTS {table}")
