"""The batch-import flow end to end against real SQLite files and the real PostgreSQL."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchyard.demo import expected_counts, users_table, write_users
from batchyard.engines import session
from batchyard.ingest.spool import spool_dir
from batchyard.readers import SourceOptions
from flows.batch_import import batch_import
from tests.helpers import fix_rejects, latest_artifact, rows, run_to_end


def test_clean_file_loads_every_record(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 2_500, bad=False)
    summary = batch_import(str(source), db=sqlite_url, chunk_size=1_000, max_parallel=3)
    assert {k: summary[k] for k in ("status", "total", "success", "failed", "ignored")} == {
        "status": "completed", "total": 2_500, "success": 2_500, "failed": 0, "ignored": 0}
    assert rows(sqlite_url, "select count(*), count(distinct id), min(id), max(id) from users") == [
        (2_500, 2_500, 1, 2_500)]
    with source.open() as handle:
        expected = next(csv.DictReader(handle))
    first = rows(sqlite_url, "select id, email, name, age, country, signup_date, balance, "
                             "_batch_id, _row_number from users where id = 1")[0]
    assert first == (1, expected["email"], expected["name"], int(expected["age"]),
                     expected["country"], expected["signup_date"], float(expected["balance"]),
                     summary["batch_id"], 1)
    assert rows(sqlite_url, "select status, chunks, total from batchyard_batches") == [
        ("completed", 3, 2_500)]
    assert summary["rejects_file"] is None
    assert not spool_dir(summary["batch_id"]).exists()  # its chunk files are gone


def test_bad_rows_are_kept_with_reasons_and_counts_add_up(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 1_000)
    summary = batch_import(str(source), db=sqlite_url, chunk_size=300)
    want = expected_counts(1_000)
    assert {k: summary[k] for k in want} == want == {
        "total": 1_000, "failed": 60, "ignored": 10, "success": 930}
    assert summary["success"] + summary["failed"] + summary["ignored"] == summary["total"]
    assert rows(sqlite_url, "select count(*) from users") == [(930,)]
    reasons = dict(rows(sqlite_url, "select reason, count(*) from batchyard_records group by 1"))
    assert reasons == {
        "age: Input should be less than or equal to 150": 10,
        "country: String should match pattern '^[A-Z]{2}$'": 10,
        "duplicate key in this batch": 10,
        "email: String should match pattern '^[a-z0-9._%+-]+@[a-z0-9-]+(\\.[a-z0-9-]+)*\\.[a-z]{2,}$'": 10,
        "id: Input should be a valid integer, unable to parse string as an integer": 10,
        "name: Field required": 10,
        "signup_date: Input should be a valid date or datetime, day value is outside expected range": 10,
    }
    assert rows(sqlite_url, "select row_number, status, error from batchyard_records "
                            "where row_number in (20, 84) order by 1") == [
        (20, "failed", "age: Input should be less than or equal to 150 (got '200')"),
        (84, "ignored", "duplicate key id=83: already loaded from row 83 of this batch"),
    ]
    rejects = list(csv.DictReader(Path(summary["rejects_file"]).open()))
    assert len(rejects) == 60
    assert rejects[0]["_row_number"] == "8" and rejects[0]["email"] == "not-an-email"
    assert rejects[0]["_error"].startswith("email: String should match pattern")


def test_rejects_file_can_be_fixed_and_imported_again(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 200)
    first = batch_import(str(source), db=sqlite_url, chunk_size=100)
    fixed = fix_rejects(first["rejects_file"], tmp_path / "fixed.csv", lambda record: record.update(
        email=f"fixed{record['_row_number']}@example.com", age="30", signup_date="2020-01-01",
        id=str(10_000 + int(record["_row_number"])), name="Fixed", country="DE"))
    second = batch_import(str(fixed), db=sqlite_url)
    assert (second["total"], second["success"], second["failed"]) == (12, 12, 0)
    assert rows(sqlite_url, "select count(*) from users") == [(186 + 12,)]


def test_reimport_leaves_no_duplicates(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 500, bad=False)
    first = batch_import(str(source), db=sqlite_url, chunk_size=200)
    second = batch_import(str(source), db=sqlite_url, chunk_size=150, max_parallel=4)
    assert first["batch_id"] != second["batch_id"]
    assert second["success"] == 500
    assert rows(sqlite_url, "select count(*), count(distinct _batch_id) from users") == [(500, 1)]
    assert rows(sqlite_url, "select distinct _batch_id from users") == [(second["batch_id"],)]


def test_duplicate_keys_across_chunks_are_ignored_once(tmp_path, sqlite_url):
    path = tmp_path / "dups.csv"
    lines = ["id,email,name,age,country,signup_date,balance"]
    lines += [f"{i % 40 + 1},u{i}@example.com,User {i},30,DE,2020-01-01,1" for i in range(100)]
    path.write_text("\n".join(lines) + "\n")
    summary = batch_import(str(path), db=sqlite_url, chunk_size=7, max_parallel=6)
    assert (summary["success"], summary["ignored"], summary["failed"]) == (40, 60, 0)
    assert rows(sqlite_url, "select count(*) from users") == [(40,)]
    ignored = rows(sqlite_url, "select count(*) from batchyard_records where status='ignored'")
    assert ignored == [(60,)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "xlsx"])
def test_each_format_gives_the_same_table(tmp_path, sqlite_url, fmt):
    table = users_table(120, 0, bad=True)
    path = tmp_path / f"users.{fmt}"
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    elif fmt == "parquet":
        pq.write_table(table, path)
    else:
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.append(table.column_names)
        for record in table.to_pylist():
            sheet.append(list(record.values()))
        book.save(path)
    summary = batch_import(str(path), db=sqlite_url, chunk_size=50)
    assert (summary["total"], summary["success"], summary["failed"], summary["ignored"]) == (
        120, 111, 8, 1)
    bad = {7, 19, 31, 43, 59, 71, 83}
    expected = [(int(r["id"]), r["email"], int(r["age"]), r["signup_date"])
                for i, r in enumerate(table.to_pylist()) if i % 100 not in bad]
    assert rows(sqlite_url, "select id, email, age, signup_date from users order by id") == expected


def test_orders_schema_with_enrichment(tmp_path, sqlite_url):
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,customer_id,sku,quantity,unit_price,country,order_date\n"
        "A-1,7,EL-1001,2,19.99,de,2024-03-01\n"
        "A-2,8,BK-222,1,5,US,2024-03-02\n"
        "A-3,9,XX-999,0,5,US,2024-03-02\n"
    )
    summary = batch_import(str(path), schema_name="orders", db=sqlite_url)
    assert (summary["success"], summary["failed"]) == (2, 1)
    assert rows(sqlite_url, "select order_id, total_amount, region, product_category "
                            "from orders order by 1") == [
        ("A-1", 39.98, "EMEA", "electronics"), ("A-2", 5.0, "NA", "books")]
    assert rows(sqlite_url, "select error from batchyard_records") == [
        ("quantity: Input should be greater than or equal to 1 (got '0')",)]


def test_custom_schema_from_module(tmp_path, sqlite_url, monkeypatch):
    (tmp_path / "myschemas.py").write_text(textwrap.dedent('''
        from pydantic import BaseModel, Field

        class Product(BaseModel):
            __batchyard_key__ = ("sku",)

            sku: str = Field(pattern=r"^P[0-9]+$")
            price: float = Field(gt=0)
            in_stock: bool = True
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("myschemas", None)
    path = tmp_path / "products.csv"
    path.write_text("sku,price,in_stock\nP1,2.5,yes\nP2,-1,no\nP3,4,\n")
    summary = batch_import(str(path), schema_name="myschemas:Product", db=sqlite_url,
                           table="products")
    assert (summary["success"], summary["failed"]) == (2, 1)
    assert rows(sqlite_url, "select sku, price, in_stock from products order by sku") == [
        ("P1", 2.5, 1), ("P3", 4.0, 1)]


def test_completed_batch_is_not_run_again_unless_fresh(tmp_path, sqlite_url):
    from batchyard.errors import BatchStateError

    source = write_users(tmp_path / "users.csv", 50, bad=False)
    batch_import(str(source), db=sqlite_url, batch_id="nightly-1")
    with pytest.raises(BatchStateError, match="already completed"):
        batch_import(str(source), db=sqlite_url, batch_id="nightly-1")
    again = batch_import(str(source), db=sqlite_url, batch_id="nightly-1", fresh=True)
    assert (again["status"], again["success"]) == ("completed", 50)
    assert rows(sqlite_url, "select count(*) from batchyard_chunks") == [(1,)]


def test_chunk_that_keeps_failing_is_recorded_and_others_go_on(tmp_path, sqlite_url):
    """A real constraint in the target rejects one chunk's rows at load time (a processing
    error, not bad data): it is retried, then marked failed; the other chunks commit."""
    with session(sqlite_url, write=True) as connection:
        connection.sql(
            "create table users (id bigint primary key, email text, name text, age bigint, "
            "country text, signup_date date, balance float, _batch_id text, "
            "_row_number bigint, check (id < 150 or id > 199))"
        )
    source = write_users(tmp_path / "users.csv", 300, bad=False)
    summary, state = run_to_end(batch_import, str(source), db=sqlite_url, chunk_size=100)
    assert summary["status"] == "failed" and state.is_failed()  # issue 14: the run fails too
    assert (summary["success"], summary["failed"], summary["ignored"]) == (200, 100, 0)
    assert summary["error"] == ("1 chunk(s) failed: chunk 1, rows 101-200 (100 records): PROCESSING_ERROR: "
                                "IntegrityError: INTEGRITY: CHECK constraint failed: id < 150 or id > 199")
    chunks = rows(sqlite_url, "select chunk_index, status, error from batchyard_chunks order by 1")
    assert [(c[0], c[1]) for c in chunks] == [(0, "committed"), (1, "failed"), (2, "committed")]
    assert "CHECK constraint failed" in chunks[1][2]
    assert rows(sqlite_url, "select count(*) from users") == [(200,)]


def test_artifacts_report_progress_and_counts(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 400)
    summary = batch_import(str(source), db=sqlite_url, chunk_size=100, batch_id="Art_1")

    progress = latest_artifact("batch-art-1-progress")
    counts = latest_artifact("batch-art-1-counts")
    report = latest_artifact("batch-art-1-report")
    assert progress["data"] == 100.0
    assert "400 of 400 records (372 loaded, 24 failed, 4 ignored)" in progress["description"]
    assert json.loads(counts["data"])[0]["success"] == 372
    assert "| failed | name: Field required | 4 |" in report["data"]
    assert summary["rejects_file"] in report["data"]


@pytest.mark.postgres
def test_postgres_target_with_bad_rows_and_reimport(tmp_path, postgres_url, unique_table):
    source = write_users(tmp_path / "users.csv", 3_000)
    first = batch_import(str(source), db=postgres_url, table=unique_table, chunk_size=1_000,
                         max_parallel=3)
    want = expected_counts(3_000)
    assert {k: first[k] for k in want} == want
    second = batch_import(str(source), db=postgres_url, table=unique_table, chunk_size=700)
    assert {k: second[k] for k in want} == want
    assert rows(postgres_url, f"select count(*), count(distinct id) from {unique_table}") == [
        (want["success"], want["success"])]
    with source.open() as handle:
        first = next(csv.DictReader(handle))
    assert rows(postgres_url, f"select email, signup_date::text from {unique_table} where id=1") == [
        (first["email"], first["signup_date"])]
    assert rows(postgres_url, "select status, total, success from batchyard_batches "
                              f"where batch_id = '{second['batch_id']}'") == [
        ("completed", 3_000, want["success"])]
    rows(postgres_url, f"drop table {unique_table}")


def test_source_options_are_a_pydantic_model_for_the_ui():
    schema = batch_import.parameters.model_dump()
    assert "options" in schema["properties"]
    assert schema["definitions"]["SourceOptions"]["properties"]["delimiter"]["default"] == ","
    assert SourceOptions().format is None


def test_database_from_a_saved_sqlalchemy_connector_block(tmp_path):
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    target = tmp_path / "from-block.db"
    SqlAlchemyConnector(
        connection_info=ConnectionComponents(driver=SyncDriver.SQLITE_PYSQLITE,
                                             database=str(target))
    ).save("batchyard-test-target", overwrite=True)
    source = write_users(tmp_path / "users.csv", 30, bad=False)
    summary = batch_import(str(source), db="block:batchyard-test-target")
    assert summary["success"] == 30
    assert rows(f"sqlite:///{target}", "select count(*) from users") == [(30,)]
