"""A streamed sample of a source, for inferring its schema and checking it against a contract.

The sample is the first `first` records and a spread of the later ones: every k-th record, k
doubling whenever the spread would outgrow its budget, so it covers the whole file evenly
without knowing its length up front and holds at most `first + spread` records in memory. It is
deterministic: the same file gives the same sample, and so the same inferred module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from batchyard.chunks import PARSE_ERROR, RAW, ROW
from batchyard.errors import SourceError
from batchyard.readers import SourceOptions, open_reader

DEFAULT_FIRST = 100_000


@dataclass
class Sample:
    """Text columns under the file's own header names, plus what was seen while streaming."""

    path: Path
    format: str
    header: list[str]
    table: pa.Table
    total: int
    first: int
    spread: int
    parse_errors: int = 0
    typed: dict[str, pa.DataType] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def describe(self) -> str:
        """`110,000 of 336,776 records (the first 100,000 and 10,000 spread over the rest)`."""
        if self.rows >= self.total:
            text = f"all {self.total:,} records"
        else:
            text = (f"{self.rows:,} of {self.total:,} records (the first {self.first:,} and "
                    f"{self.spread:,} spread over the rest)")
        if self.parse_errors:
            text += f"; {self.parse_errors:,} records that could not be parsed left out"
        return text


def _unique_header(header: list[str]) -> list[str]:
    seen: set[str] = set()
    names = []
    for name in header:
        if name in seen:
            raise SourceError(f"the header names column {name!r} twice: rename one")
        seen.add(name)
        names.append(name)
    return names


def sample_source(path: str | Path, options: SourceOptions, first: int = DEFAULT_FIRST,
                  spread: int | None = None) -> Sample:
    """Stream the source once and keep its sample (see the module's docstring). `spread`
    defaults to a tenth of `first` (at least 1,000).

    Raises SourceError as the import would (no file, wrong format, no header)."""
    reader = open_reader(path, options)
    header = reader.header()
    if not header:
        raise SourceError(f"{reader.path}: no header and no records")
    header = _unique_header(header)
    budget = spread if spread is not None else max(1_000, first // 10)
    head: list[pa.Table] = []
    kept = 0
    later: list[pa.Table] = []
    later_count = 0
    stride = 1
    total = 0
    broken = 0
    for table in reader.records({h: h for h in header}, header):
        if not table.num_rows:
            continue
        bad = pc.is_valid(table[PARSE_ERROR])
        if pc.any(bad).as_py():
            broken += pc.sum(bad.cast(pa.int64())).as_py()
        total += table.num_rows
        good = table.filter(pc.invert(bad)).drop_columns([PARSE_ERROR, RAW])
        if kept < first:
            take = good.slice(0, first - kept)
            head.append(take)
            kept += take.num_rows
            good = good.slice(take.num_rows)
        if not good.num_rows or budget <= 0:
            continue
        picked = good.filter(pc.equal(pc.bit_wise_and(good[ROW], stride - 1), 0))
        later.append(picked)
        later_count += picked.num_rows
        while later_count > budget:
            stride *= 2
            later = [t.filter(pc.equal(pc.bit_wise_and(t[ROW], stride - 1), 0)) for t in later]
            later_count = sum(t.num_rows for t in later)
    pieces = [t for t in head + later if t.num_rows]
    if pieces:
        table = pa.concat_tables(pieces).combine_chunks()
    else:
        table = pa.table({**{h: pa.array([], pa.string()) for h in header},
                          ROW: pa.array([], pa.int64())})
    return Sample(reader.path, reader.name, header, table, total, kept, later_count, broken,
                  reader.typed_columns())
