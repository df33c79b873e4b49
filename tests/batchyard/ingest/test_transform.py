import datetime as dt
from typing import Annotated

import pyarrow as pa
import pytest
from pydantic import BaseModel, StringConstraints

from batchyard.chunks import ROW
from batchyard.ingest.transform import dedupe, normalise
from batchyard.schemas import load_schema
from batchyard.schemas.base import compile_plan


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("email", "  A@B.COM ", "a@b.com"), ("country", "de", "DE"),
     ("name", " Ada \t  Lovelace ", "Ada Lovelace"),
     # users strips its text (str_strip_whitespace); an empty string is not a missing value
     ("name", "   ", ""), ("age", "", ""), ("age", " 42 ", "42"), ("age", None, None)],
)
def test_normalise(column, value, expected):
    plan = load_schema("users")
    raw = pa.table({column: pa.array([value], pa.string()), ROW: pa.array([1], pa.int64())})
    assert normalise(raw, plan)[column].to_pylist() == [expected]


class Plain(BaseModel):
    id: int
    note: str | None = None
    stripped: Annotated[str, StringConstraints(strip_whitespace=True)] = ""


@pytest.mark.parametrize(("column", "value", "expected"), [
    ("note", "  padded  ", "  padded  "),  # text keeps its whitespace (RFC 4180 §2.4)
    ("note", "", ""),
    ("note", None, None),
    ("stripped", "  padded  ", "padded"),  # unless the field asks for stripping
    ("id", " 7 ", "7"),  # a parsed value: spaces around it are not data
])
def test_whitespace_is_kept_unless_the_schema_strips(column, value, expected):
    plan = compile_plan(Plain)
    raw = pa.table({column: pa.array([value], pa.string()), ROW: pa.array([1], pa.int64())})
    assert normalise(raw, plan)[column].to_pylist() == [expected]


def test_normalise_adds_missing_optional_columns_as_nulls():
    plan = load_schema("users")
    out = normalise(pa.table({"id": ["1"], ROW: pa.array([1], pa.int64())}), plan)
    assert out.column_names == [*plan.field_names, ROW]
    assert out["age"].to_pylist() == [None]


def test_dedupe_keeps_first_and_reports_the_rest():
    table = pa.table({"id": [5, 6, 5, 5], ROW: pa.array([10, 11, 12, 13], pa.int64())})
    kept, dups = dedupe(table, ("id",))
    assert kept.to_pylist() == [{"id": 5, ROW: 10}, {"id": 6, ROW: 11}]
    assert [(d.row_number, d.first_row, d.key) for d in dups] == [
        (12, 10, {"id": 5}), (13, 10, {"id": 5}),
    ]


def test_dedupe_composite_key_and_no_duplicates():
    table = pa.table({"a": [1, 1], "b": ["x", "y"], ROW: pa.array([1, 2], pa.int64())})
    kept, dups = dedupe(table, ("a", "b"))
    assert kept.num_rows == 2 and dups == []


@pytest.mark.parametrize(("columns", "key", "kept_rows", "duplicates"), [
    # rows out of order (records pydantic accepted come last): the lowest row number is first
    ({"id": [7, 3, 7, 3, 9], ROW: [50, 20, 10, 40, 30]}, ("id",), [20, 10, 30],
     [(40, 20, {"id": 3}), (50, 10, {"id": 7})]),
    ({"a": [1, 1, 2, 1], "b": ["x", "y", "x", "x"], ROW: [1, 2, 3, 4]}, ("a", "b"), [1, 2, 3],
     [(4, 1, {"a": 1, "b": "x"})]),
    # missing key values are equal to each other, as in a group-by
    ({"a": [None, 1, None], "b": ["x", None, "x"], ROW: [1, 2, 3]}, ("a", "b"), [1, 2],
     [(3, 1, {"a": None, "b": "x"})]),
    ({"day": pa.array([dt.date(2024, 1, 2)] * 3), ROW: [3, 1, 2]}, ("day",), [1],
     [(2, 1, {"day": dt.date(2024, 1, 2)}), (3, 1, {"day": dt.date(2024, 1, 2)})]),
    ({"id": [1], ROW: [1]}, ("id",), [1], []),
])
def test_dedupe_keeps_each_keys_lowest_row_in_table_order(columns, key, kept_rows, duplicates):
    table = pa.table({**columns, ROW: pa.array(columns[ROW], pa.int64())})
    kept, dups = dedupe(table, key)
    assert kept[ROW].to_pylist() == kept_rows
    assert [(d.row_number, d.first_row, d.key) for d in dups] == duplicates
