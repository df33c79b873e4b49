"""Runs that start together on a database that has no batchyard table yet: every one of them
creates what it needs (the ledger, the target, ETL and stream tables) without tripping over the
others (PostgreSQL's `CREATE TABLE` is check-then-create: two at once collide on `pg_type`).

Each test takes a new PostgreSQL database, and starts its runs at one barrier.
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from batchyard.demo import users_table
from tests.conftest import fresh_mariadb_database, fresh_postgres_database
from tests.helpers import import_without_prefect, rows

RUNS = 6


@pytest.fixture
def new_postgres(postgres_url):
    yield from fresh_postgres_database(postgres_url)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def new_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
    elif request.param == "postgresql":
        yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))
    else:
        yield from fresh_mariadb_database(request.getfixturevalue("mariadb_server"))


def together(work, n: int = RUNS) -> list:
    """Run `work(i)` in n threads released at once; return each one's result or exception."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def test_concurrent_first_imports_into_a_new_database_all_complete(tmp_path, new_database):
    sources = []
    for i in range(RUNS):  # keys of their own: overlapping loads are test_load_held's
        sources.append(tmp_path / f"part{i}.csv")
        pcsv.write_csv(users_table(40, start=40 * i, bad=False), sources[-1])
    results = together(lambda i: import_without_prefect(
        sources[i], new_database, chunk_size=10, batch_id=f"first-{i}"))
    assert [r if isinstance(r, Exception) else (r["status"], r["success"]) for r in results] == [
        ("completed", 40)] * RUNS
    assert rows(new_database, "select count(*) from batchyard_batches where status = 'completed'") \
        == [(RUNS,)]
    assert rows(new_database, "select count(*), min(id), max(id) from users") == [
        (40 * RUNS, 1, 40 * RUNS)]


def test_concurrent_first_etl_loads_create_one_table(new_postgres):
    from batchyard.etl.load import LoadJob
    from batchyard.etl.spec import DatabaseTarget
    from batchyard.etl.targets import target_for

    spec = DatabaseTarget(url=new_postgres, table="facts", primary_key=["id"])
    schema = pa.schema([("id", pa.int64()), ("value", pa.string()), ("_batch_id", pa.string())])

    def load(i: int) -> int:
        job = LoadJob(pipeline_id="p", run_id=f"r{i}", target=spec, disposition="merge",
                      schema_path="unused")
        target = target_for(spec)
        target.ensure_state()
        target.prepare(job, schema)
        target.load(job, pa.table({"id": [i], "value": [f"v{i}"], "_batch_id": [f"r{i}"]}))
        return i

    assert together(load) == list(range(RUNS))
    assert rows(new_postgres, "select table_name from information_schema.tables "
                              "where table_schema = 'public' order by 1") == [
        ("batchyard_etl_failed",), ("batchyard_etl_state",), ("facts",)]
    assert rows(new_postgres, "select id, value from facts order by id") == [
        (i, f"v{i}") for i in range(RUNS)]


def test_concurrent_first_stream_runs_create_their_tables(new_postgres):
    from batchyard.stream.sinks import SqlTableSink
    from batchyard.stream.sources import SqlTableSource

    def start(i: int) -> int:
        SqlTableSource(new_postgres, "events")
        SqlTableSink(new_postgres, "results")
        return i

    assert together(start) == list(range(RUNS))
    assert rows(new_postgres, "select count(*) from information_schema.tables "
                              "where table_schema = 'public'") == [(4,)]
