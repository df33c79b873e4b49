"""The quality profile of a batch: computed from each chunk as it is prepared, kept in the
ledger with the chunk, merged for `batchyard profile` and the markdown artifact; and a batch's
pace (rows/s, ETA) in `status`."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.engines import session
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import open_batch, plan_batch
from batchyard.ingest.pace import eta_seconds, ledger_pace, rows_per_second
from batchyard.ingest.summary import batch_summary
from batchyard.quality.profile import SKETCH, merge_profiles, profile_chunk, rejects_by_field
from batchyard.quality.report import bars, batch_profile, render_profile, sparkline
from batchyard.readers import SourceOptions
from tests.helpers import import_without_prefect

ITEM = "tests.batchyard.ingest.fidelity_schemas:Item"
PENGUIN = "tests.batchyard.ingest.fidelity_schemas:Penguin"
runner = CliRunner()


def _profile(db: str, batch_id: str) -> dict:
    with session(db) as connection:
        return batch_profile(connection, batch_id)


def test_a_batch_profile_counts_nulls_distinct_extremes_top_values_and_rejects(tmp_path, db_url):
    path = tmp_path / "items.csv"
    path.write_text("id,label,note,amount\n1,a,,1.5\n2,b,x,2.5\n3,a,,x\n4,a,y,10\n5,c,,\n"
                    "6,b,x,4\n7,a,z,,extra\n")
    result = import_without_prefect(path, db_url, chunk_size=3, schema=ITEM)
    assert (result["success"], result["failed"]) == (5, 2)
    profile = _profile(db_url, result["batch_id"])
    assert (profile["rows"], profile["rejected"], profile["chunks"], profile["record_rejects"]) == (5, 2, 3, 1)
    columns = profile["columns"]
    assert {k: columns["label"][k] for k in ("nulls", "distinct", "distinct_exact", "min", "max",
                                             "rejects", "top")} == {
        "nulls": 0, "distinct": 3, "distinct_exact": True, "min": "a", "max": "c", "rejects": 0,
        "top": [("a", 2), ("b", 2), ("c", 1)]}
    assert {k: columns["amount"][k] for k in ("nulls", "distinct", "min", "max", "rejects")} == {
        "nulls": 1, "distinct": 4, "min": 1.5, "max": 10.0, "rejects": 1}
    assert sum(columns["amount"]["histogram"]["counts"]) == 4
    assert (columns["note"]["nulls"], columns["note"]["distinct"]) == (2, 2)
    assert (columns["id"]["min"], columns["id"]["max"], columns["id"]["distinct"]) == (1, 6, 5)


def test_the_profile_of_a_real_file_matches_pandas(tmp_path, sqlite_url):
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    frame = pd.read_csv(source)
    frame.insert(0, "id", range(1, len(frame) + 1))
    path = tmp_path / "penguins.csv"
    frame.to_csv(path, index=False, na_rep="NA", float_format="%g")
    result = import_without_prefect(path, sqlite_url, chunk_size=100, schema=PENGUIN,
                                    null_values=["NA"])
    columns = _profile(sqlite_url, result["batch_id"])["columns"]
    for name in frame.columns:
        values = frame[name]
        assert (columns[name]["nulls"], columns[name]["distinct"]) == (
            int(values.isna().sum()), int(values.nunique())), name
        assert (columns[name]["min"], columns[name]["max"]) == (values.min(), values.max()), name
    assert columns["species"]["top"] == [(k, int(v)) for k, v in frame["species"].value_counts().items()]


def test_distinct_counts_of_many_values_are_estimated_across_chunks():
    chunks = [profile_chunk({"n": "int"}, pa.table({"n": pa.array(range(i, i + 4_000))}), 0, [])
              for i in range(0, 20_000, 2_000)]  # 21,999 distinct values, half seen twice
    column = merge_profiles(chunks)["columns"]["n"]
    assert column["distinct_exact"] is False
    assert abs(column["distinct"] - 21_999) < 0.2 * 21_999
    assert len(chunks[0]["columns"]["n"]["sketch"]) == SKETCH
    assert sum(column["histogram"]["counts"]) == 40_000
    assert (column["min"], column["max"]) == (0, 21_999)


def test_rejects_are_counted_per_field_named_in_the_error():
    assert rejects_by_field(["age: Input should be a valid integer (got 'x')",
                             "age: too big; email: not an email", "record: expected 3 fields",
                             "unknown: what"], ["age", "email"]) == {
        "age": 2, "email": 1, "(record)": 2}


def test_the_markdown_has_a_small_chart_per_column(tmp_path, sqlite_url):
    path = tmp_path / "items.csv"
    path.write_text("id,label,amount\n" + "".join(f"{i},{'ab'[i % 2]},{i % 5}\n" for i in range(1, 21)))
    result = import_without_prefect(path, sqlite_url, chunk_size=7, schema=ITEM)
    text = render_profile(_profile(sqlite_url, result["batch_id"]), result["batch_id"], "items")
    lines = text.splitlines()
    assert lines[0] == f"# Profile of batch {result['batch_id']} (table `items`)"
    assert "| label | str | 0 | 2 | a | b | 0 | a 50% ██████████ · b 50% ██████████ |" in lines
    amount = next(line for line in lines if line.startswith("| amount |"))
    assert re.fullmatch(r"\| amount \| float \| 0 \| 5 \| 0 \| 4 \| 0 \| `[ ▁-█]{10}` 0 \.\. 4 \|", amount)
    assert sparkline([0, 1, 4, 8]) == " ▁▄█" and bars([("x", 3), ("y", 1)], 4) == (
        "x 75% ██████████ · y 25% ███▍")

    shown = runner.invoke(app, ["profile", result["batch_id"], "--db", sqlite_url])
    assert (shown.exit_code, shown.stdout) == (0, text)
    as_json = json.loads(runner.invoke(app, ["profile", result["batch_id"], "--db", sqlite_url,
                                             "--json"]).stdout)
    assert as_json["columns"]["label"]["distinct"] == 2
    missing = runner.invoke(app, ["profile", "nope", "--db", sqlite_url])
    assert (missing.exit_code, missing.stderr.strip()) == (1, f"error: no batch 'nope' in {sqlite_url}")


def test_profile_reads_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    result = runner.invoke(app, ["profile", "b1", "--db", url])
    assert (result.exit_code, result.stderr.strip()) == (1, f"error: no such database: {url}")
    assert not (tmp_path / "none.db").exists()


def test_pace_of_a_running_and_of_a_finished_batch(tmp_path, sqlite_url):
    path = tmp_path / "items.csv"
    path.write_text("id,label\n" + "".join(f"{i},x\n" for i in range(1, 31)))
    job = resolve_job(str(path), ITEM, sqlite_url, None, "paced")
    open_batch(job, 10, SourceOptions())
    chunks = plan_batch(job, SourceOptions(), 10)[0]
    process_chunk(job, chunks[0])
    running = batch_summary(sqlite_url, "paced")
    assert running["status"] == "running" and running["rows_per_second"] > 0
    assert running["eta_seconds"] == pytest.approx(20 / running["rows_per_second"], rel=0.1, abs=0.01)
    printed = runner.invoke(app, ["status", "paced", "--db", sqlite_url]).stdout
    assert re.search(r"^  [0-9,]+ rows/s, ETA [0-9,]+ s$", printed, re.MULTILINE)

    finished = import_without_prefect(path, sqlite_url, chunk_size=10, schema=ITEM, batch_id="done")
    done = batch_summary(sqlite_url, "done")
    assert done["eta_seconds"] is None
    assert done["rows_per_second"] == pytest.approx(30 / done["attempt_history"][0]["seconds"], rel=0.05)
    assert finished["total"] == 30


def test_pace_functions():
    assert rows_per_second(500, 10.0, now=12.0) == 250.0
    assert rows_per_second(0, 10.0, now=12.0) is None and rows_per_second(5, None) is None
    assert eta_seconds(1_000, 250.0) == 4.0 and eta_seconds(10, None) is None
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    attempt = {"started_at": start, "finished_at": None}
    chunks = [(100, start + dt.timedelta(seconds=1)), (100, start + dt.timedelta(seconds=2)),
              (50, start - dt.timedelta(seconds=5))]  # the last from an earlier attempt
    assert ledger_pace(1_000, 250, "running", attempt, chunks, start + dt.timedelta(seconds=4)) == {
        "rows_per_second": 50.0, "eta_seconds": 15.0}


@pytest.mark.parametrize("values", [
    np.arange(100_000, dtype=np.uint64),  # all distinct
    np.arange(100_000, dtype=np.uint64) % 300,  # heavy repeats, more distinct than the sketch
    np.arange(100_000, dtype=np.uint64) % 200,  # fewer distinct than the sketch
    np.repeat(np.arange(SKETCH, dtype=np.uint64), 7),  # exactly as many
    np.array([5], dtype=np.uint64),
])
def test_the_smallest_distinct_hashes_are_those_of_a_full_sort(values):
    from batchyard.quality.profile import _mix, _smallest_distinct

    hashed = _mix(np.random.default_rng(1).permutation(values))
    assert _smallest_distinct(hashed).tolist() == np.unique(hashed)[:SKETCH].tolist()


def test_text_hashes_are_equal_exactly_when_the_strings_are():
    from batchyard.quality.profile import _text_keys

    strings = ["", "a", "a\x00", "abcdefgh", "abcdefgh\x00", "abcdefghi", "abcdefghj",
               "x" * 17, "x" * 16 + "y", "ünïcødé", "a" * 300, "a" * 299 + "b"]
    keys = _text_keys(pa.array(strings + strings[::-1]))
    assert len(set(keys[:len(strings)].tolist())) == len(strings)
    assert keys[:len(strings)].tolist() == keys[len(strings):][::-1].tolist()
    sliced = pa.array(["pad", *strings]).slice(1)  # an array that starts at an offset
    assert _text_keys(sliced).tolist() == keys[:len(strings)].tolist()
