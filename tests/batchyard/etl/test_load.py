"""Load helpers: one schema for a run, batches conformed to it, merge de-duplication."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batchyard.etl.load import conform, dedupe_last, unify_schemas


@pytest.mark.parametrize("types, expected", [
    ([pa.int64(), pa.int64()], pa.int64()),
    ([pa.int64(), pa.float64()], pa.float64()),
    ([pa.null(), pa.int32()], pa.int32()),
    ([pa.null(), pa.null()], pa.string()),
    ([pa.int64(), pa.string()], pa.string()),
    ([pa.list_(pa.int64())], pa.string()),
])
def test_unify_schemas_widens_or_falls_back_to_text(types, expected):
    schema = unify_schemas([pa.schema([pa.field("a", t)]) for t in types])
    assert schema.field("a").type == expected
    assert schema.names == ["a", "_batch_id", "_row_number"]


def test_conform_fills_missing_columns_and_lineage():
    schema = unify_schemas([pa.schema([("id", pa.int64()), ("v", pa.string())]), pa.schema([("w", pa.float64())])])
    out = conform(pa.table({"w": [1, 2], "id": [7, 8]}), schema, "run:s:0", 11)
    assert out.to_pydict() == {"id": [7, 8], "v": [None, None], "w": [1.0, 2.0],
                               "_batch_id": ["run:s:0", "run:s:0"], "_row_number": [11, 12]}


def test_conform_turns_nested_values_into_text():
    schema = pa.schema([("tags", pa.string()), ("_batch_id", pa.string()), ("_row_number", pa.int64())])
    out = conform(pa.table({"tags": [[1, 2], None]}), schema, "b", 1)
    assert out["tags"].to_pylist() == ["[1, 2]", None]


@pytest.mark.parametrize("ids, values, expected", [
    ([1, 2, 1], ["a", "b", "c"], [(2, "b"), (1, "c")]),
    ([1, 2, 3], ["a", "b", "c"], [(1, "a"), (2, "b"), (3, "c")]),
    ([5], ["x"], [(5, "x")]),
])
def test_dedupe_last(ids, values, expected):
    out = dedupe_last(pa.table({"id": ids, "v": values}), ("id",))
    assert list(zip(out["id"].to_pylist(), out["v"].to_pylist(), strict=True)) == expected
