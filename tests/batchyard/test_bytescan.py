import pyarrow as pa
import pytest

from batchyard.bytescan import contains_any, contains_only, data_bytes, has_double_space


def column(values: list[str | None], chunks: int = 1) -> pa.ChunkedArray:
    step = max(1, len(values) // chunks)
    return pa.chunked_array([pa.array(values[i:i + step], pa.string())
                             for i in range(0, len(values), step)] or [pa.array([], pa.string())])


@pytest.mark.parametrize(
    ("values", "needles", "expected"),
    [
        (["abc", "de"], b"\x00", False),
        (["abc", "d\x00e"], b"\x00", True),
        (["tab\there", None], b"\t\n", True),
        ([None, None], b"a", False),
        ([], b"a", False),
    ],
)
def test_contains_any(values, needles, expected):
    assert contains_any(column(values), needles) is expected


@pytest.mark.parametrize(
    ("values", "allowed", "expected"),
    [
        (["12", "-3", None], b"0123456789-", True),
        (["12", "0x10"], b"0123456789-", False),
        (["2020-01-31"], b"0123456789-", True),
    ],
)
def test_contains_only(values, allowed, expected):
    assert contains_only(column(values), allowed) is expected


def test_a_slice_sees_only_its_own_cells():
    """A sliced array shares its parent's buffers: the bytes of cells outside it are not seen."""
    sliced = pa.array(["x\x00", "ok", "fine", "a  b"], pa.string()).slice(1, 2)
    assert b"".join(chunk.tobytes() for chunk in data_bytes(sliced)) == b"okfine"
    assert not contains_any(sliced, b"\x00") and not has_double_space(sliced)


@pytest.mark.parametrize(("values", "expected"), [(["a b", "c"], False), (["a  b"], True)])
def test_has_double_space(values, expected):
    assert has_double_space(column(values, chunks=2)) is expected


def test_a_non_string_column_is_refused():
    with pytest.raises(TypeError, match="byte scans read string columns, not int64"):
        contains_any(pa.array([1, 2]), b"\x00")
