"""The file target: a directory of Parquet or CSV files, partitioned by a column if asked.

Files cannot merge (the spec refuses it). Under replace the run writes a staging directory beside
the target and renames it into place. The state is a JSON file beside the directory,
`PATH.batchyard-state.json`, rewritten whole through a temporary file so a reader never sees
half of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa

from batchyard.chunks import BATCH
from batchyard.etl.extract import Cursor
from batchyard.etl.state import FailedBatch, failure_rows

if TYPE_CHECKING:
    from batchyard.etl.load import LoadJob
    from batchyard.etl.spec import FileTarget, WriteDisposition


class FileEtlTarget:
    """`EtlTarget` for a `FileTarget` spec (no field names a block)."""

    block_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, spec: FileTarget):
        self.spec = spec

    def describe(self) -> str:
        return f"{self.spec.format} files in {self.spec.path}"

    def destination(self, run_id: str, disposition: WriteDisposition) -> str:
        return self.spec.path + (f".staging-{run_id}" if disposition == "replace" else "")

    def prepare(self, job: LoadJob, schema: pa.Schema) -> None:
        if job.disposition == "replace":
            shutil.rmtree(job.table, ignore_errors=True)
        Path(job.table).mkdir(parents=True, exist_ok=True)

    def load(self, job: LoadJob, table: pa.Table) -> None:
        """One file per batch (per partition value), named after the batch so a retried batch
        overwrites its own file rather than adding a second copy."""
        import pyarrow.dataset as ds

        batch_id = table[BATCH][0].as_py()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in batch_id)
        ds.write_dataset(
            table, job.table, format=self.spec.format,
            partitioning=[self.spec.partition_by] if self.spec.partition_by else None,
            partitioning_flavor="hive" if self.spec.partition_by else None,
            basename_template=f"part-{safe}-{{i}}.{self.spec.format}",
            existing_data_behavior="overwrite_or_ignore",
        )

    def integer_columns(self, job: LoadJob) -> set[str]:
        """Of Parquet files already in the directory: a dataset's files must agree on types
        (CSV files keep no types)."""
        import pyarrow.dataset as ds

        if self.spec.format != "parquet" or not any(Path(job.table).rglob("*.parquet")):
            return set()
        schema = ds.dataset(job.table, format="parquet", partitioning="hive").schema
        return {f.name for f in schema if pa.types.is_integer(f.type)}

    def finish(self, job: LoadJob, complete: bool) -> bool:
        if job.disposition != "replace":
            return complete
        if not complete:
            shutil.rmtree(job.table, ignore_errors=True)
            return False
        old = Path(f"{self.spec.path}.old-{job.run_id}")
        if Path(self.spec.path).exists():
            Path(self.spec.path).rename(old)
        Path(job.table).rename(self.spec.path)
        shutil.rmtree(old, ignore_errors=True)
        return True

    def ensure_state(self) -> None:
        """Nothing to create: the state file is written on the first save."""

    def read_cursor(self, pipeline_id: str, source_id: str) -> Cursor | None:
        found = self._read()["cursors"].get(f"{pipeline_id}/{source_id}")
        return Cursor(**found) if found else None

    def save_cursor(self, pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> None:
        state = self._read()
        state["cursors"][f"{pipeline_id}/{source_id}"] = cursor.model_dump()
        self._write(state)

    def record_failures(self, pipeline_id: str, run_id: str, failed: list[FailedBatch]) -> None:
        if not failed:
            return
        state = self._read()
        state["failed"] += failure_rows(pipeline_id, run_id, failed)
        self._write(state)

    def failed_batches(self, pipeline_id: str) -> list[dict]:
        return [r for r in self._read()["failed"] if r["pipeline_id"] == pipeline_id]

    @property
    def state_file(self) -> Path:
        """Where the pipeline state of this directory is kept: a JSON file beside it."""
        return Path(f"{self.spec.path.rstrip('/')}.batchyard-state.json")

    def _read(self) -> dict:
        path = self.state_file
        return json.loads(path.read_text()) if path.exists() else {"cursors": {}, "failed": []}

    def _write(self, state: dict) -> None:
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2, sort_keys=True))
        temporary.replace(path)
