"""One ETL run, free of Prefect: extract a source, transform a batch, load a batch, finish.

The flow decides where and how often these run; each takes and returns references to batch
files, so no step ever holds more than one batch of records.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from batchyard.chunks import read_ipc, read_ipc_schema, write_ipc
from batchyard.engines import safe_url
from batchyard.errors import BatchyardError, ConfigurationError, RunNotCompleted
from batchyard.etl import state
from batchyard.etl.extract import (
    BatchRef,
    Extracted,
    ExtractError,
    extract_api,
    extract_database,
    extract_file,
    source_columns,
    spool,
)
from batchyard.etl.load import LoadJob, conform, load_table, save_schema, unify_schemas
from batchyard.etl.spec import ApiSource, DatabaseSource, Source, Target, TransformSpec, check_pipeline
from batchyard.etl.targets import target_for
from batchyard.etl.transform import check_steps, transform_table
from batchyard.settings import get_settings


class EtlRun(BaseModel):
    """The run's identity and working directory; small, passed to every task."""

    pipeline_id: str
    run_id: str
    target: Target
    disposition: str
    directory: str


def start_run(pipeline_id: str, sources: list[Source], target: Target, disposition: str) -> EtlRun:
    check_pipeline(pipeline_id, sources, target, disposition)
    run_id = uuid.uuid4().hex[:12]
    safe_id = "".join(c if c.isalnum() or c in "-_" else "_" for c in pipeline_id)
    directory = get_settings().work_dir / "etl" / safe_id / run_id
    directory.mkdir(parents=True, exist_ok=True)
    target_for(target).ensure_state()
    return EtlRun(pipeline_id=pipeline_id, run_id=run_id, target=target, disposition=disposition,
                  directory=str(directory))


def scrub(text: str, secrets: list[str | None]) -> str:
    """Whatever a driver put in its message, no credential leaves in it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def extract(run: EtlRun, source: Source, batch_size: int, auth: str | None = None) -> Extracted:
    """Stream one source into batch files; an incremental database source starts after the
    cursor the target recorded."""
    directory = Path(run.directory) / "extract" / source.id
    since = None
    password = None
    try:
        if isinstance(source, DatabaseSource):
            password = _password(source.url)
            if source.cursor_column:
                since = target_for(run.target).read_cursor(run.pipeline_id, source.id)
                if since is not None and since.column != source.cursor_column:
                    since = None
            batches = extract_database(source, batch_size, since)
        elif isinstance(source, ApiSource):
            batches = extract_api(source, batch_size, auth)
        else:
            batches = extract_file(source, batch_size)
        cursor_column = getattr(source, "cursor_column", None)
        result = spool(source.id, batches, batch_size, directory, cursor_column)
    except BatchyardError as exc:
        raise ExtractError(scrub(str(exc), [auth, password])) from None
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        where = f" ({safe_url(source.url)})" if isinstance(source, DatabaseSource) else ""
        raise ExtractError(scrub(f"source {source.id}{where}: {type(exc).__name__}: "
                                 f"{reason[0] if reason else ''}", [auth, password])) from None
    if result.cursor is None and since is not None:
        result.cursor = since
    return result


def _password(url: str) -> str | None:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password
    except Exception:
        return None


class TransformError(BatchyardError):
    """A batch could not be transformed after its retries: the whole run fails before anything
    is loaded, as in the Temporal data pipeline this follows."""


def check_transforms(sources: list[Source], spec: TransformSpec) -> None:
    """Refuse transform steps that name columns a source does not produce, before anything is
    extracted (`check_steps`); a pipeline-wide drop must name a column of some source. Sources
    whose columns only their records can tell (APIs, JSON Lines) are checked when they arrive.

    Raises ConfigurationError, or ExtractError when a source cannot be looked at."""
    seen: list[set[str] | None] = []
    for source in sources:
        own = source.transform
        names_columns = bool(spec.rename or spec.drop or (own and (own.rename or own.drop)))
        columns = source_columns(source) if names_columns else None
        seen.append(check_steps(source.id, columns, own, spec) if columns is not None else None)
    if spec.drop and seen and all(s for s in seen):
        unknown = [c for c in spec.drop if not any(c in s for s in seen)]
        if unknown:
            raise ConfigurationError(f"the pipeline's transform drops column(s) {', '.join(unknown)}, "
                                     "which no source produces")


def transform(run: EtlRun, ref: BatchRef, spec: TransformSpec, version: str,
              own: TransformSpec | None = None) -> BatchRef:
    """One batch through its source's `own` steps and the pipeline's, into a new batch file."""
    table = transform_table(read_ipc(ref.path), spec, version, own=own)
    directory = Path(run.directory) / "transform"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / Path(ref.path).name
    write_ipc(table, path)
    return ref.model_copy(update={"path": str(path)})


def load_job(run: EtlRun, refs: list[BatchRef]) -> LoadJob:
    """Unify the batches' schemas (read from the files' footers, not their records) and prepare
    the target for them."""
    schema = unify_schemas([read_ipc_schema(r.path) for r in refs])
    path = save_schema(schema, Path(run.directory) / "schema.arrow")
    job = LoadJob(pipeline_id=run.pipeline_id, run_id=run.run_id, target=run.target,
                  disposition=run.disposition, schema_path=path)
    target = target_for(job.target)
    target.prepare(job, schema)
    return job.model_copy(update={"integer_columns": sorted(target.integer_columns(job))})


def load(job: LoadJob, ref: BatchRef) -> int:
    batch_id = f"{job.run_id}:{ref.source_id}:{ref.index}"
    table = conform(read_ipc(ref.path), read_ipc_schema(job.schema_path), batch_id, ref.first_row)
    return load_table(job, table)


@dataclass
class SourceCounts:
    extracted: int = 0
    loaded: int = 0
    failed: int = 0


@dataclass
class Outcome:
    """The run's counts as the flow reports them."""

    sources: dict[str, SourceCounts] = field(default_factory=dict)
    failed_batches: list[state.FailedBatch] = field(default_factory=list)
    visible: bool = True

    def failed(self, ref: BatchRef, error: str) -> None:
        self.sources[ref.source_id].failed += ref.n_rows
        self.failed_batches.append(state.FailedBatch(source_id=ref.source_id, batch_index=ref.index,
                                                     n_rows=ref.n_rows, path=ref.path, error=error))

    @property
    def total(self) -> int:
        return sum(c.extracted for c in self.sources.values())

    @property
    def successful(self) -> int:
        return sum(c.loaded for c in self.sources.values())

    @property
    def failed_rows(self) -> int:
        return sum(c.failed for c in self.sources.values())


def not_completed(result: dict, target: str) -> RunNotCompleted | None:
    """What a run with failed batches ends with (None when every batch loaded): the pipeline,
    the counts, the first failures and how to load them again (`target` as it may be shown)."""
    failures = result["failed_batches"]
    if not failures and not result["failed_records"]:
        return None
    shown = "; ".join(failures[:3]) + (f"; and {len(failures) - 3} more" if len(failures) > 3 else "")
    return RunNotCompleted(
        f"pipeline {result['pipeline_id']}: {result['failed_records']:,} of "
        f"{result['total_records']:,} records did not load ({len(failures)} failed batch(es): "
        f"{shown}); they are recorded in {target} (batchyard_etl_failed): run the pipeline again "
        "to load them", result)


def finish(run: EtlRun, job: LoadJob | None, extracted: list[Extracted], outcome: Outcome) -> Outcome:
    """Make replaced data visible (or not), move each cleanly loaded source's cursor on, record
    the failed batches, and keep the batch files only when a re-run needs them."""
    target = target_for(run.target)
    complete = not outcome.failed_batches
    visible = target_for(job.target).finish(job, complete) if job is not None else complete
    outcome.visible = visible or run.disposition != "replace"
    if not outcome.visible:
        for counts in outcome.sources.values():
            counts.failed += counts.loaded
            counts.loaded = 0
    failed_sources = {f.source_id for f in outcome.failed_batches}
    for result in extracted:
        if result.cursor is not None and result.source_id not in failed_sources and \
                outcome.visible:
            target.save_cursor(run.pipeline_id, result.source_id, result.cursor, run.run_id)
    target.record_failures(run.pipeline_id, run.run_id, outcome.failed_batches)
    if not outcome.failed_batches and not get_settings().etl_keep_files:
        shutil.rmtree(run.directory, ignore_errors=True)
    return outcome
