"""Batch transforms: pure functions on Arrow tables."""

from __future__ import annotations

import datetime as dt
import sys
import types

import pyarrow as pa
import pytest

from batchyard.errors import ConfigurationError
from batchyard.etl.spec import TransformSpec
from batchyard.etl.transform import transform_table

WHEN = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _table() -> pa.Table:
    return pa.table({"Id": [1, 2], "name": ["  ann ", "bob"], "secret": ["x", "y"], "_source_id": ["s", "s"]})


def _double_ids(table: pa.Table) -> pa.Table:
    return table.set_column(0, "id", pa.array([v * 2 for v in table["id"].to_pylist()]))


@pytest.fixture(autouse=True)
def _user_module():
    sys.modules["etl_user_transforms"] = types.SimpleNamespace(double=_double_ids, broken=lambda t: "nope",
                                                               value=3)
    yield
    del sys.modules["etl_user_transforms"]


@pytest.mark.parametrize("spec, expected", [
    (TransformSpec(strip_strings=False), {"Id": [1, 2], "name": ["  ann ", "bob"], "secret": ["x", "y"]}),
    (TransformSpec(), {"Id": [1, 2], "name": ["ann", "bob"], "secret": ["x", "y"]}),
    (TransformSpec(rename={"Id": "id"}, drop=["secret", "absent"]), {"id": [1, 2], "name": ["ann", "bob"]}),
    (TransformSpec(rename={"Id": "id"}, function="etl_user_transforms:double"), {
        "id": [2, 4], "name": ["ann", "bob"], "secret": ["x", "y"]}),
])
def test_transform_and_metadata(spec, expected):
    out = transform_table(_table(), spec, "3.2", WHEN).to_pydict()
    assert out == {**expected, "_source_id": ["s", "s"], "_processed_at": [WHEN, WHEN],
                   "_pipeline_version": ["3.2", "3.2"]}


@pytest.mark.parametrize("spec, message", [
    (TransformSpec(rename={"nope": "x"}), "cannot rename missing column(s) nope"),
    (TransformSpec(function="no_colon"), "transform function 'no_colon': use module:function"),
    (TransformSpec(function="no_such_module_xyz:f"), "No module named 'no_such_module_xyz'"),
    (TransformSpec(function="etl_user_transforms:value"), "is not callable"),
    (TransformSpec(function="etl_user_transforms:broken"), "returned str, not a pyarrow Table"),
    (TransformSpec(rename={"name": "bad name"}), "invalid column name 'bad name'"),
])
def test_transform_refusals(spec, message):
    with pytest.raises(ConfigurationError) as error:
        transform_table(_table(), spec, "1")
    assert message in str(error.value)
