"""Tasks of the etl-pipeline flow: extract a source, transform a batch, load a batch.

Retry policies are those of the Temporal data pipeline this flow follows (transform: 3 retries
from 1 s to 10 s; load: 5 retries from 2 s to 30 s, exponential), read at run time so
`BATCHYARD_ETL_RETRY_SCALE` can shorten them in tests. Bad data and configuration are never
retried.
"""

from __future__ import annotations

import os

from prefect import task
from prefect.cache_policies import NO_CACHE

from batchyard.errors import is_retryable
from batchyard.etl import run as etl
from batchyard.etl.extract import BatchRef, Extracted
from batchyard.etl.load import LoadJob
from batchyard.etl.run import EtlRun, Outcome
from batchyard.etl.spec import Source, TransformSpec
from blocks.etl import resolve_source

TRANSFORM_DELAYS = [1.0, 3.0, 10.0]
LOAD_DELAYS = [2.0, 4.0, 8.0, 16.0, 30.0]


def _scaled(delays: list[float]) -> list[float]:
    scale = float(os.environ.get("BATCHYARD_ETL_RETRY_SCALE", "1"))
    return [d * scale for d in delays]


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:
        return is_retryable(exc)
    return False


@task(name="extract-source", task_run_name="extract-{source.id}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)
def extract_source(run: EtlRun, source: Source, batch_size: int) -> Extracted:
    resolved, auth = resolve_source(source)
    return etl.extract(run, resolved, batch_size, auth)


@task(name="transform-batch", task_run_name="transform-{ref.source_id}-{ref.index}",
      cache_policy=NO_CACHE)
def transform_batch(run: EtlRun, ref: BatchRef, spec: TransformSpec, version: str) -> BatchRef:
    return etl.transform(run, ref, spec, version)


@task(name="load-batch", task_run_name="load-{ref.source_id}-{ref.index}", cache_policy=NO_CACHE)
def load_batch(job: LoadJob, ref: BatchRef) -> int:
    return etl.load(job, ref)


def transform_with_retries():
    return transform_batch.with_options(retries=3, retry_delay_seconds=_scaled(TRANSFORM_DELAYS),
                                        retry_condition_fn=_retry_transient)


def load_with_retries():
    return load_batch.with_options(retries=5, retry_delay_seconds=_scaled(LOAD_DELAYS),
                                   retry_condition_fn=_retry_transient)


@task(name="prepare-target", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=_retry_transient)
def prepare_target(run: EtlRun, refs: list[BatchRef]) -> LoadJob:
    return etl.load_job(run, refs)


@task(name="finish-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5],
      retry_condition_fn=_retry_transient)
def finish_run(run: EtlRun, job: LoadJob | None, extracted: list[Extracted], outcome: Outcome) -> Outcome:
    return etl.finish(run, job, extracted, outcome)
