"""ETL targets: where a pipeline's batches go, every type behind one interface, `EtlTarget`.

A target type is two things: its spec model in `batchyard.etl.spec` (the shape a pipeline spec,
the flow's parameters and a deployment write) and one module here that implements `EtlTarget`
for it, named in `TARGETS` under the spec's `type`. The generic steps (`batchyard.etl.load`,
`batchyard.etl.run`) only call this interface, so adding a target type changes none of them.

Nothing here imports Prefect: a target only names which of its fields may hold a `block:NAME`
reference (`block_fields`), and `blocks.etl` loads the block.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Protocol

import pyarrow as pa

from batchyard.errors import BatchyardError, ConfigurationError
from batchyard.identifiers import check_identifier, quote

if TYPE_CHECKING:

    from batchyard.etl.extract import Cursor
    from batchyard.etl.load import LoadJob
    from batchyard.etl.spec import Target, WriteDisposition
    from batchyard.etl.state import FailedBatch


class LoadValidationError(BatchyardError):
    """The data itself was refused (a duplicate key, a value the column cannot hold): never
    retried, since the same batch would be refused again."""


class EtlTarget(Protocol):
    """What every target type does for a run. An instance is bound to one target spec.

    A run calls, in order: `ensure_state` and `read_cursor` (at its start), `prepare` (once,
    before any batch loads, so that parallel batches only ever insert), `load` (once per batch,
    possibly in parallel and retried), `finish` (once), then `save_cursor` and `record_failures`.
    Under `replace` every batch goes to a staging table (or directory), `destination`, which
    takes the target's place in `finish` only when all of them loaded; until then, and for good
    if one fails, readers see the old data.
    """

    block_fields: ClassVar[dict[str, str]]
    """Spec fields that may hold `block:NAME`, each with the kind of Prefect block it names
    (e.g. `{"url": "SqlAlchemyConnector"}`); `blocks.etl.resolve_target` replaces them."""

    def describe(self) -> str:
        """The target for messages and artifacts, with any password masked."""

    def destination(self, run_id: str, disposition: WriteDisposition) -> str:
        """The table (or directory) a run's batches are written to: the target's own, or the
        run's staging one under `replace`.

        Raises:
            ConfigurationError: the name it makes is not a valid identifier.
        """

    def prepare(self, job: LoadJob, schema: pa.Schema) -> None:
        """Make `job.table` ready for batches of `schema` (the run's unified Arrow schema):
        create it when missing, add the columns it lacks, and under `replace` start from an
        empty staging table (or directory).

        Raises:
            LoadValidationError: the data cannot go there (a primary key column is missing
                from the data, or an existing table has another primary key under merge).
        """

    def load(self, job: LoadJob, table: pa.Table) -> None:
        """Write one conformed batch (already de-duplicated under merge) to `job.table`, in one
        transaction, so a failed batch leaves nothing behind; a target without transactions
        (files) names what it writes after the batch, so that a retry overwrites it.

        Raises:
            LoadValidationError: when the target itself can tell the data is refused; a
                driver's integrity or conversion error may also propagate, and
                `batchyard.etl.load.load_table` turns it into a LoadValidationError.
        """

    def integer_columns(self, job: LoadJob) -> set[str]:
        """The columns of the prepared `job.table` that hold whole numbers (an existing
        table's, or an existing directory's files'), so that a float value for one is refused
        unless it is whole, never rounded."""

    def finish(self, job: LoadJob, complete: bool) -> bool:
        """End the run's load. Under `replace`, put the staging data in the target's place if
        `complete` (every batch loaded), else drop it; other dispositions have nothing to do.

        Returns:
            Whether the new data became visible (`complete` unless under replace).
        """

    def ensure_state(self) -> None:
        """Create where the pipeline state (cursors, failed batches) is kept, if needed."""

    def read_cursor(self, pipeline_id: str, source_id: str) -> Cursor | None:
        """The incremental cursor the source last reached in a visible run, or None."""

    def save_cursor(self, pipeline_id: str, source_id: str, cursor: Cursor, run_id: str) -> None:
        """Record `cursor` as the source's new position, replacing the one before."""

    def record_failures(self, pipeline_id: str, run_id: str, failed: list[FailedBatch]) -> None:
        """Append the run's failed batches (nothing when `failed` is empty)."""

    def failed_batches(self, pipeline_id: str) -> list[dict]:
        """Every recorded failure of the pipeline, oldest first (what a re-run would load)."""


TARGETS: dict[str, str] = {
    "database": "batchyard.etl.targets.database:DatabaseEtlTarget",
    "warehouse": "batchyard.etl.targets.warehouse:WarehouseEtlTarget",
    "file": "batchyard.etl.targets.files:FileEtlTarget",
}
"""Target spec `type` → `module:class` implementing `EtlTarget` for it (built with the spec)."""


def target_for(spec: Target) -> EtlTarget:
    """The implementation of the spec's target type, bound to the spec.

    The modules are imported on first use: they import this one (for `LoadValidationError` and
    the helpers below), and a run needs only its own target's drivers.

    Args:
        spec: a target spec model; its `type` selects the implementation in `TARGETS`.

    Returns:
        An `EtlTarget` for `spec`; cheap to make, so callers need not keep it.

    Raises:
        ConfigurationError: no implementation is registered for `spec.type`.
    """
    where = TARGETS.get(spec.type)
    if where is None:
        raise ConfigurationError(f"no ETL target implements type {spec.type!r} "
                                 f"(known: {', '.join(TARGETS)})")
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)(spec)


# Shared by the targets whose data is a SQL table (database, warehouse).

def staging_table(table: str, run_id: str, disposition: WriteDisposition) -> str:
    """`table`, or under replace the run's staging table: a name of its own per run (cut to
    stay within identifier length), so a failed run's leftovers never meet the next run's."""
    if disposition == "replace":
        return check_identifier(f"{table[:40]}__new_{run_id[:12]}")
    return table


def require_key_columns(key: tuple[str, ...], schema: pa.Schema) -> None:
    """Refuse a primary key the data does not have, before a table is made with it.

    Raises:
        LoadValidationError: naming the missing key columns and the data's columns.
    """
    missing = [k for k in key if k not in schema.names]
    if missing:
        raise LoadValidationError(f"primary key column(s) {', '.join(missing)} not in the data "
                                  f"(columns: {', '.join(schema.names)})")


def swap_statements(table: str, staging: str, complete: bool,
                    quote: Callable[[str], str] = quote) -> list[str]:
    """The SQL that ends a replace: the staging table renamed in the target's place when every
    batch loaded, else only the staging table dropped (the old data stays); identifiers quoted
    with `quote` (a session's own, on MariaDB backticks)."""
    if not complete:
        return [f"DROP TABLE IF EXISTS {quote(staging)}"]
    return [f"DROP TABLE IF EXISTS {quote(table)}",
            f"ALTER TABLE {quote(staging)} RENAME TO {quote(table)}"]


def is_integer_type(name: str) -> bool:
    """Whether a database's name for a column type (BIGINT, int4, INTEGER, ...) is a whole
    number type."""
    return "INT" in name.upper()


def column_kind(arrow_type: pa.DataType) -> str:
    """The kind of column a table target makes for an Arrow type: boolean, integer, float,
    timestamp, timestamptz (an aware timestamp), date, or text for anything else."""
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    return "date" if pa.types.is_date(arrow_type) else "text"


class TableTarget:
    """What the two table targets (a database table, a DuckDB table) share: the spec they are
    bound to, and a staging table of its own per run under replace."""

    def __init__(self, spec):
        self.spec = spec

    def destination(self, run_id: str, disposition: WriteDisposition) -> str:
        return staging_table(self.spec.table, run_id, disposition)

    def prepare(self, job: LoadJob, schema: pa.Schema) -> None:
        """Refuse a key the data lacks, then create or extend the table (`prepare_table`)."""
        require_key_columns(job.key, schema)
        self.prepare_table(job, schema)

    def prepare_table(self, job: LoadJob, schema: pa.Schema) -> None:
        raise NotImplementedError
