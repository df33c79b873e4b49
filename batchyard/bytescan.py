"""Byte-level prefilters over Arrow string columns.

Most chunks are clean: no NUL bytes, no runs of spaces, numbers that are plain digits. Asking
that of each cell costs a scan per question per column; asking it of the column's UTF-8 bytes
at once, with numpy, costs a few milliseconds. A prefilter only decides whether the exact,
per-cell check is needed, so it may say "maybe" but never "no" wrongly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa


def data_bytes(values: pa.ChunkedArray | pa.Array) -> Iterator[np.ndarray]:
    """The UTF-8 bytes of the cells of a string column, chunk by chunk, without copying."""
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise TypeError(f"byte scans read string columns, not {values.type}")
    arrays = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    for array in arrays:
        if len(array) == 0 or array.null_count == len(array):
            continue
        _, offsets, data = array.buffers()[:3]
        if data is None:
            continue
        width = np.int64 if pa.types.is_large_string(array.type) else np.int32
        bounds = np.frombuffer(offsets, dtype=width)[array.offset:array.offset + len(array) + 1]
        yield np.frombuffer(data, dtype=np.uint8)[bounds[0]:bounds[-1]]


def _table(allowed: bytes) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(allowed)] = True
    return table


def contains_any(values: pa.ChunkedArray | pa.Array, needles: bytes) -> bool:
    """Whether any cell may contain one of these bytes (one memchr-speed find per byte)."""
    singles = [bytes([needle]) for needle in needles]
    for chunk in data_bytes(values):
        data = chunk.tobytes()
        if any(data.find(single) >= 0 for single in singles):
            return True
    return False


def contains_only(values: pa.ChunkedArray | pa.Array, allowed: bytes) -> bool:
    """Whether every cell is made of these bytes only (null cells have none)."""
    table = _table(allowed)
    return all(table[chunk].all() for chunk in data_bytes(values))


def has_double_space(values: pa.ChunkedArray | pa.Array) -> bool:
    """Two spaces in a row somewhere (across two cells too: a "maybe")."""
    return any(bool(np.any((chunk[:-1] == 32) & (chunk[1:] == 32)))
               for chunk in data_bytes(values))
