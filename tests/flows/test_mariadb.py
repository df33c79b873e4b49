"""The flows end to end into the real MariaDB (a database of their own per test): bad rows,
re-import, records the server refuses, connections killed mid-batch, concurrent imports,
kill -9 and resume, ETL from and to MariaDB with each disposition, a stream window into a
MariaDB table, and a saved SqlAlchemyConnector block. (The retry of failed records runs on
MariaDB in test_retry_failed.py.)"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import textwrap
import threading
import uuid

import pytest
import sqlalchemy as sa

from batchyard.demo import expected_counts, write_users
from batchyard.engines import normalise_url
from batchyard.stream.job import StreamJob
from flows.batch_import import batch_import
from tests.flows.test_etl_pipeline import counts, make_events
from tests.flows.test_etl_pipeline import run as run_pipeline
from tests.flows.test_lifecycle import assert_complete_and_exact, run_cli, start_paused
from tests.flows.test_stream_window import MIN, insert_events, scheduled_at
from tests.flows.test_stream_window import run as run_stream
from tests.flows.test_transient_faults import import_through_an_outage, task_run_counts
from tests.helpers import rows

REASONS = {
    "age: Input should be less than or equal to 150": 30,
    "country: String should match pattern '^[A-Z]{2}$'": 30,
    "duplicate key in this batch": 30,
    "email: String should match pattern '^[a-z0-9._%+-]+@[a-z0-9-]+(\\.[a-z0-9-]+)*\\.[a-z]{2,}$'": 30,
    "id: Input should be a valid integer, unable to parse string as an integer": 30,
    "name: Field required": 30,
    "signup_date: Input should be a valid date or datetime, day value is outside expected range": 30,
}


def test_bad_rows_with_their_reasons_then_a_reimport_without_duplicates(tmp_path, mariadb_url):
    source = write_users(tmp_path / "users.csv", 3_000)
    want = expected_counts(3_000)
    first = batch_import(str(source), db=mariadb_url, chunk_size=1_000, max_parallel=3)
    assert {k: first[k] for k in want} == want and first["status"] == "completed"
    assert dict(rows(mariadb_url, "select reason, count(*) from batchyard_records group by 1")) == REASONS
    assert rows(mariadb_url, "select `row_number`, status, error from batchyard_records "
                             "where `row_number` in (20, 84) order by 1") == [
        (20, "failed", "age: Input should be less than or equal to 150 (got '200')"),
        (84, "ignored", "duplicate key id=83: already loaded from row 83 of this batch")]
    second = batch_import(str(source), db=mariadb_url, chunk_size=700)
    assert {k: second[k] for k in want} == want
    assert rows(mariadb_url, "select count(*), count(distinct id), count(distinct _batch_id) from users") == [
        (want["success"], want["success"], 1)]
    with source.open() as handle:
        record = next(csv.DictReader(handle))
    assert rows(mariadb_url, "select email, cast(signup_date as char), balance, _batch_id from users "
                             "where id = 1") == [
        (record["email"], record["signup_date"], float(record["balance"]), second["batch_id"])]


def test_a_value_the_server_refuses_fails_that_record_only(tmp_path, mariadb_url, monkeypatch):
    (tmp_path / "measures.py").write_text(textwrap.dedent('''
        from pydantic import BaseModel

        class Measure(BaseModel):
            id: int
            value: float
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("measures", None)
    path = tmp_path / "measures.csv"
    path.write_text("id,value\n1,2.5\n2,inf\n3,-1\n4,nan\n")
    summary = batch_import(str(path), schema_name="measures:Measure", db=mariadb_url, table="measures")
    assert (summary["status"], summary["success"], summary["failed"]) == ("completed", 2, 2)
    assert rows(mariadb_url, "select id, value from measures order by id") == [(1, 2.5), (3, -1.0)]
    assert rows(mariadb_url, "select `row_number`, error_code, error from batchyard_records order by 1") == [
        (2, "VALIDATION_ERROR", f"refused by the database: Incorrect double value: 'inf' for column "
                                f"`{normalise_url(mariadb_url).database}`.`measures`.`value`"),
        (4, "VALIDATION_ERROR", f"refused by the database: Incorrect double value: 'nan' for column "
                                f"`{normalise_url(mariadb_url).database}`.`measures`.`value`")]
    rejects = list(csv.DictReader(open(summary["rejects_file"])))
    assert [(r["id"], r["value"], r["_row_number"]) for r in rejects] == [("2", "inf", "2"), ("4", "nan", "4")]


@pytest.fixture
def flaky_url(mariadb_url):
    """The test's database through a user of its own, whose connections can be locked out."""
    database = normalise_url(mariadb_url).database
    admin = sa.create_engine(normalise_url(mariadb_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql("CREATE USER IF NOT EXISTS 'batchyard_flaky'@'%%'")
        connection.exec_driver_sql("ALTER USER 'batchyard_flaky'@'%%' ACCOUNT UNLOCK")
        connection.exec_driver_sql(f"GRANT ALL ON `{database}`.* TO 'batchyard_flaky'@'%%'")
    yield normalise_url(mariadb_url).set(username="batchyard_flaky").render_as_string(False), admin
    with admin.connect() as connection:
        connection.exec_driver_sql("ALTER USER 'batchyard_flaky'@'%%' ACCOUNT UNLOCK")
    admin.dispose()


def test_connections_killed_and_refused_mid_batch(tmp_path, flaky_url, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "6")
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[0.5, 0.5, 1, 1, 1, 1]")
    url, admin = flaky_url
    killed = []

    def committed() -> int:
        with admin.connect() as connection:
            return sa.inspect(connection).has_table("batchyard_chunks") and connection.exec_driver_sql(
                "select count(*) from batchyard_chunks where status = 'committed'").scalar()

    def cut() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql("ALTER USER 'batchyard_flaky'@'%%' ACCOUNT LOCK")
            for (pid,) in connection.exec_driver_sql(
                    "select id from information_schema.processlist where user = 'batchyard_flaky'"):
                connection.exec_driver_sql(f"KILL CONNECTION {int(pid)}")
                killed.append(pid)

    def restore() -> None:
        with admin.connect() as connection:
            connection.exec_driver_sql("ALTER USER 'batchyard_flaky'@'%%' ACCOUNT UNLOCK")

    summary = import_through_an_outage(write_users(tmp_path / "users.csv", 2_000), url, committed, cut, restore)
    want = expected_counts(2_000)
    assert {k: summary[k] for k in want} == want and summary["status"] == "completed"
    assert killed
    assert rows(url, "select count(*), count(distinct id) from users") == [(want["success"], want["success"])]
    assert max(task_run_counts(summary["flow_run_id"])) > 1  # some chunk was retried


def test_concurrent_imports_into_one_table(tmp_path, mariadb_url):
    first_file = write_users(tmp_path / "a.csv", 2_000, seed=1)
    second_file = write_users(tmp_path / "b.csv", 2_000, seed=2)
    outcomes: dict[str, dict] = {}

    def run(name, path):
        outcomes[name] = batch_import(str(path), db=mariadb_url, chunk_size=250, max_parallel=3,
                                      batch_id=f"together-{name}")

    threads = [threading.Thread(target=run, args=(n, p)) for n, p in (("a", first_file), ("b", second_file))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    want = expected_counts(2_000)
    for name in ("a", "b"):
        assert {k: outcomes[name][k] for k in want} == want and outcomes[name]["status"] == "completed"
    loaded = rows(mariadb_url, "select _batch_id, count(*) from users group by 1 order by 1")
    assert sum(n for _, n in loaded) == rows(mariadb_url, "select count(distinct id) from users")[0][0]
    assert {b for b, _ in loaded} <= {"together-a", "together-b"}
    assert rows(mariadb_url, "select count(*) from batchyard_chunks where status <> 'committed'") == [(0,)]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["chunk-loaded:3", "chunk-committed:2"], ids=["mid-chunk", "between-chunks"])
def test_kill_9_then_resume(tmp_path, prefect_server, mariadb_url, point):
    source = write_users(tmp_path / "users.csv", 1_000)
    process = start_paused(tmp_path, prefect_server, source, mariadb_url, "crash-1", point)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert rows(mariadb_url, "select status from batchyard_batches") == [("running",)]
    resumed = run_cli(tmp_path, prefect_server, "resume", "crash-1", "--db", mariadb_url, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    assert_complete_and_exact(mariadb_url, "crash-1", 1_000)


def test_etl_from_and_to_mariadb_with_each_disposition(mariadb_url, monkeypatch):
    make_events(mariadb_url, range(1, 11), table="src")
    source = {"type": "database", "id": "maria", "url": mariadb_url, "table": "src",
              "cursor_column": "updated_at"}
    target = {"type": "database", "url": mariadb_url, "table": "dst", "primary_key": ["id"]}
    merge = dict(pipeline_id="m-merge", batch_size=4, write_disposition="merge", sources=[source], target=target)
    assert counts(run_pipeline(**merge)) == (10, 10, 0)
    rows(mariadb_url, "UPDATE src SET kind = 'changed', updated_at = '2026-02-01T00:00:00' WHERE id IN (3, 8)")
    make_events(mariadb_url, range(11, 13), table="src", stamp="2026-02-02")
    assert counts(run_pipeline(**merge)) == (4, 4, 0)  # the cursor: only what changed
    assert rows(mariadb_url, "SELECT count(*), count(DISTINCT id) FROM dst") == [(12, 12)]
    assert rows(mariadb_url, "SELECT id, kind FROM dst WHERE kind = 'changed' OR id > 10 ORDER BY id") == [
        (3, "changed"), (8, "changed"), (11, "k2"), (12, "k0")]

    appended = {"type": "database", "url": mariadb_url, "table": "log"}
    append = dict(pipeline_id="m-append", batch_size=5, write_disposition="append",
                  sources=[{**source, "cursor_column": None}], target=appended)
    assert counts(run_pipeline(**append)) == (12, 12, 0)
    assert counts(run_pipeline(**append)) == (12, 12, 0)
    assert rows(mariadb_url, "SELECT count(*), count(DISTINCT id) FROM log") == [(24, 12)]

    replace = dict(pipeline_id="m-replace", batch_size=5, write_disposition="replace",
                   sources=[{**source, "cursor_column": None}], target={**target, "table": "snapshot"})
    first = run_pipeline(**replace)
    assert counts(first) == (12, 12, 0) and first["replaced"] is True
    rows(mariadb_url, "INSERT INTO src VALUES (13, 'k1', 1, '2026-03-01T00:00:00'), (14, 'k2', 2, 'x')")
    rows(mariadb_url, "CREATE TABLE twice AS SELECT * FROM src UNION ALL SELECT * FROM src WHERE id = 5")
    broken = run_pipeline(**{**replace, "sources": [{**source, "table": "twice", "cursor_column": None}]})
    assert broken["replaced"] is False and "refused the batch" in broken["failed_batches"][0]
    assert rows(mariadb_url, "SELECT count(*), max(id) FROM snapshot") == [(12, 12)]  # the old data stays
    assert counts(run_pipeline(**replace)) == (14, 14, 0)
    assert rows(mariadb_url, "SELECT count(*), max(id) FROM snapshot") == [(14, 14)]
    tables = {r[0] for r in rows(mariadb_url, "SELECT table_name FROM information_schema.tables "
                                              "WHERE table_schema = DATABASE()")}
    assert tables == {"src", "twice", "dst", "log", "snapshot", "batchyard_etl_state", "batchyard_etl_failed"}


def test_stream_window_into_a_mariadb_table(tmp_path, mariadb_url, monkeypatch):
    events = f"sqlite:///{tmp_path / 'events.db'}"
    insert_events(events, [("a", 1, 9 * MIN), ("a", 2, 9 * MIN + 1), ("b", 4, 10 * MIN + 5),
                           ("old", 1, 2 * MIN), ("c", 8, 12 * MIN)])
    job = StreamJob(name=f"m-{uuid.uuid4().hex[:6]}", source_url=events, target_url=mariadb_url,
                    target="clicks", max_windows=5, start_from="latest")
    scheduled_at(monkeypatch, 10 * MIN + 5_000)
    summary, _ = run_stream(job)
    assert (summary["windows"], summary["events_in"], summary["events_out"], summary["late"],
            summary["before_start"]) == (5, 4, 3, 0, 1)  # the 02:00 event precedes the first window
    summary, _ = run_stream(job)  # from the watermark on: no window counted twice
    assert (summary["windows"], summary["events_in"], summary["watermark"]) == (5, 0, 19 * MIN)
    assert rows(mariadb_url, "SELECT window_start, `key`, `count`, `sum` FROM clicks ORDER BY 1, 2") == [
        (9 * MIN, "a", 2, 3.0), (10 * MIN, "b", 1, 4.0), (12 * MIN, "c", 1, 8.0)]
    assert rows(mariadb_url, "SELECT watermark, windows FROM batchyard_stream_state") == [(19 * MIN, 10)]


def test_a_saved_connector_block_with_pymysql(tmp_path, mariadb_url):
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    url = normalise_url(mariadb_url)
    SqlAlchemyConnector(connection_info=ConnectionComponents(
        driver=SyncDriver.MYSQL_PYMYSQL, username=url.username, host=url.host, port=url.port,
        database=url.database)).save("batchyard-test-mariadb", overwrite=True)
    summary = batch_import(str(write_users(tmp_path / "users.csv", 30, bad=False)),
                           db="block:batchyard-test-mariadb")
    assert summary["success"] == 30
    assert rows(mariadb_url, "select count(*) from users") == [(30,)]
