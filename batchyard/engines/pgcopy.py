"""PostgreSQL's binary COPY format, written from Arrow columns with numpy (no per-row Python).

With text COPY the server parses every number and date from text; with binary COPY it copies
the bytes. Each column is encoded for the type its target column has (a `bigint` gets 8 bytes,
an `integer` 4); a column whose type or values this module cannot encode makes `encode` return
None, and the caller falls back to CSV.

Format (PostgreSQL docs, "COPY ... BINARY"): a signature, flags and header extension; per row a
16-bit field count, then per field a 32-bit byte length (-1 for NULL) and the value; a 16-bit -1.
All integers are big-endian; dates count days and timestamps microseconds from 2000-01-01.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_EPOCH_US = _EPOCH_DAYS * 86_400 * 1_000_000

FIXED = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2", "double precision": ">f8",
         "real": ">f4", "boolean": "u1", "date": ">i4", "timestamp without time zone": ">i8",
         "timestamp with time zone": ">i8"}
TEXT = ("text", "character varying", "character")


def _fixed_values(column: pa.ChunkedArray | pa.Array, kind: str) -> np.ndarray | None:
    """The column's values as the big-endian array `kind` needs (nulls as zeros)."""
    t = column.type
    if kind in ("bigint", "integer", "smallint"):
        if not pa.types.is_integer(t):
            return None
        values = pc.fill_null(column, 0).to_numpy()
        info = np.iinfo(np.dtype(FIXED[kind]))
        if values.size and (values.min() < info.min or values.max() > info.max):
            return None
    elif kind in ("double precision", "real"):
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            return None
        values = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy()
    elif kind == "boolean":
        if not pa.types.is_boolean(t):
            return None
        values = pc.fill_null(column, False).to_numpy(zero_copy_only=False)
    elif kind == "date":
        if not pa.types.is_date32(t):
            return None
        values = pc.fill_null(pc.cast(column, pa.int32()), 0).to_numpy() - _EPOCH_DAYS
    else:
        if not pa.types.is_timestamp(t) or (t.tz is None) != (kind == "timestamp without time zone"):
            return None
        micro = pc.cast(column, pa.timestamp("us", tz=t.tz)) if t.unit != "us" else column
        values = pc.fill_null(pc.cast(micro, pa.int64()), 0).to_numpy() - _EPOCH_US
    return np.ascontiguousarray(values.astype(FIXED[kind]))


NULL_FIELD = b"\xff\xff\xff\xff"
"""A NULL field: length -1. Kept as bytes: `pa.scalar` at import time makes pyarrow import pandas
(0.3 s of every command, PostgreSQL or not); Arrow takes the bytes where it is used."""


def _fixed_binary(raw: np.ndarray, n: int) -> pa.Array:
    """n values of equal width (the rows of `raw`) as a binary array, without a copy per value."""
    width = raw.shape[1] if raw.ndim == 2 else raw.dtype.itemsize
    fixed = pa.Array.from_buffers(pa.binary(width), n, [None, pa.py_buffer(np.ascontiguousarray(raw))])
    return pc.cast(fixed, pa.binary())


def _length_prefix(lengths: np.ndarray) -> pa.Array:
    return _fixed_binary(lengths.astype(">i4"), len(lengths))


def _field(column, kind: str) -> pa.Array | None:
    """One column as the bytes of its fields: a 32-bit length, then the value; -1 for NULL."""
    n = len(column)
    if kind in FIXED:
        values = _fixed_values(column, kind)
        if values is None:
            return None
        width = values.dtype.itemsize
        framed = np.empty((n, 4 + width), np.uint8)
        framed[:, :4] = np.frombuffer(width.to_bytes(4, "big"), np.uint8)
        framed[:, 4:] = values.view(np.uint8).reshape(n, width)
        field = _fixed_binary(framed, n)
    elif kind in TEXT and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        text = pc.cast(pc.cast(column, pa.string()), pa.binary())
        lengths = pc.fill_null(pc.binary_length(text), 0).to_numpy().astype(np.int64)
        field = pc.binary_join_element_wise(_length_prefix(lengths), pc.fill_null(text, b""), b"")
    else:
        return None
    if column.null_count:
        field = pc.if_else(pc.is_valid(column), field, pa.scalar(NULL_FIELD, pa.binary()))
    return field.combine_chunks() if isinstance(field, pa.ChunkedArray) else field


def encode(table: pa.Table, kinds: list[str]) -> bytes | None:
    """The rows of `table` as one binary COPY payload for target columns of these PostgreSQL
    types (one per column, `information_schema` spelling), or None when a column cannot be
    encoded for its type. Every step is an Arrow or numpy kernel over whole columns."""
    n = table.num_rows
    fields = []
    for column, kind in zip(table.columns, kinds, strict=True):
        field = _field(column, kind)
        if field is None:
            return None
        fields.append(field)
    count = _fixed_binary(np.full(n, len(fields), ">i2"), n)
    rows = pc.binary_join_element_wise(count, *fields, b"")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    _, offsets, data = rows.buffers()
    bounds = np.frombuffer(offsets, np.int32)[rows.offset:rows.offset + n + 1]
    body = memoryview(data)[bounds[0]:bounds[-1]] if n else b""
    return b"".join((HEADER, body, TRAILER))
