"""Parquet: typed columns, read a row group's batches at a time and turned into text."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from batchyard.errors import SourceError
from batchyard.readers import register
from batchyard.readers.base import (
    BLOCK_ROWS,
    Reader,
    arrow_message,
    as_text,
    record_table,
    without_null_values,
)


@register
class ParquetReader(Reader):
    name = "parquet"
    extensions = (".parquet", ".pq")
    magic = (b"PAR1",)

    def _open(self) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(str(self.path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.path}: not a readable Parquet file: {arrow_message(exc)}") from None

    def header(self) -> list[str]:
        return list(self._open().schema_arrow.names)

    def typed_columns(self) -> dict[str, pa.DataType]:
        return {f.name: f.type for f in self._open().schema_arrow}

    def records(self, mapping: dict[str, str], header: list[str]) -> Iterator[pa.Table]:
        parquet = self._open()
        fields = list(mapping)
        nulls = self.options.null_values
        next_row = 1
        try:
            for batch in parquet.iter_batches(batch_size=BLOCK_ROWS, columns=list(mapping.values())):
                columns = {f: without_null_values(as_text(batch.column(mapping[f])), nulls)
                           for f in fields}
                rows = list(range(next_row, next_row + batch.num_rows))
                next_row += batch.num_rows
                yield record_table(fields, columns, rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.path}: near record {next_row}: {arrow_message(exc)}") from None

    def arrow(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._open().iter_batches(batch_size=batch_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.path}: {arrow_message(exc)}") from None
