"""The shared chunk helpers: the re-batcher and Arrow IPC files."""

from __future__ import annotations

import pyarrow as pa
import pytest

from batchyard.chunks import read_ipc, read_ipc_schema, rebatch, write_ipc
from batchyard.sizing import fixed_sizes


@pytest.mark.parametrize("cuts, size, expected", [
    ([3, 4, 5], 5, [5, 5, 2]),
    ([12], 5, [5, 5, 2]),
    ([1, 1, 1], 10, [3]),
    ([], 5, []),
])
def test_rebatch_cuts_exact_sizes(cuts, size, expected):
    start, batches = 0, []
    for n in cuts:
        batches.append(pa.RecordBatch.from_pydict({"id": list(range(start, start + n))}))
        start += n
    out = list(rebatch(iter(batches), fixed_sizes(size)))
    assert [t.num_rows for t in out] == expected
    assert [i for t in out for i in t["id"].to_pylist()] == list(range(start))


def test_rebatch_asks_for_each_size_once_the_chunk_before_is_taken():
    asked = []

    def sizes():
        for size in (2, 3, 4, 5):
            asked.append(size)
            yield size

    tables = [pa.table({"id": list(range(10))})]
    out = rebatch(tables, sizes())
    assert next(out).num_rows == 2 and asked == [2]
    assert [t.num_rows for t in out] == [3, 4, 1]
    assert asked == [2, 3, 4, 5]


def test_rebatch_joins_batches_whose_columns_differ():
    out = list(rebatch([pa.table({"a": [1]}), pa.table({"a": [2], "b": ["x"]})], fixed_sizes(5)))
    assert out[0].to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_ipc_round_trip(tmp_path):
    table = pa.table({"id": [1, 2], "name": ["a", None]})
    write_ipc(table, tmp_path / "t.arrow")
    assert read_ipc(tmp_path / "t.arrow").equals(table)
    assert read_ipc_schema(tmp_path / "t.arrow") == table.schema
