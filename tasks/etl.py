"""Tasks of the etl-pipeline flow: extract a source, transform a batch, load a batch.

Their retry policies are in `tasks.policies`; bad data and configuration are never retried.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from batchyard.etl import run as etl
from batchyard.etl.extract import BatchRef, Extracted
from batchyard.etl.load import LoadJob
from batchyard.etl.run import EtlRun, Outcome
from batchyard.etl.spec import Source, TransformSpec
from blocks.etl import resolve_source
from tasks.policies import ETL_STEP, etl_extract_policy, etl_load_policy, etl_transform_policy


@task(name="check-transforms", cache_policy=NO_CACHE, **ETL_STEP.options())
def check_transforms(sources: list[Source], spec: TransformSpec) -> None:
    """Transform steps that name columns a source does not produce fail the run up front."""
    etl.check_transforms([resolve_source(s)[0] if s.type == "database" else s for s in sources], spec)


@task(name="extract-source", task_run_name="extract-{source.id}", cache_policy=NO_CACHE)
def extract_source(run: EtlRun, source: Source, batch_size: int) -> Extracted:
    resolved, auth = resolve_source(source)
    return etl.extract(run, resolved, batch_size, auth)


def extract_with_retries():
    """The extract task with its policy (and time limit), read at run time."""
    return extract_source.with_options(**etl_extract_policy().options())


@task(name="transform-batch", task_run_name="transform-{ref.source_id}-{ref.index}",
      cache_policy=NO_CACHE)
def transform_batch(run: EtlRun, ref: BatchRef, spec: TransformSpec, version: str,
                    own: dict[str, TransformSpec | None] | None = None) -> BatchRef:
    """`own`: each source's own steps, by source id."""
    return etl.transform(run, ref, spec, version, (own or {}).get(ref.source_id))


@task(name="load-batch", task_run_name="load-{ref.source_id}-{ref.index}", cache_policy=NO_CACHE)
def load_batch(job: LoadJob, ref: BatchRef) -> int:
    return etl.load(job, ref)


def transform_with_retries():
    """The transform task with its policy, read at run time."""
    return transform_batch.with_options(**etl_transform_policy().options())


def load_with_retries():
    """The load task with its policy, read at run time."""
    return load_batch.with_options(**etl_load_policy().options())


@task(name="prepare-target", cache_policy=NO_CACHE, **ETL_STEP.options())
def prepare_target(run: EtlRun, refs: list[BatchRef]) -> LoadJob:
    return etl.load_job(run, refs)


@task(name="finish-run", cache_policy=NO_CACHE, **ETL_STEP.options())
def finish_run(run: EtlRun, job: LoadJob | None, extracted: list[Extracted], outcome: Outcome) -> Outcome:
    return etl.finish(run, job, extracted, outcome)
