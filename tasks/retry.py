"""Tasks of the retry-failed flow."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from batchyard import retry
from batchyard.pipeline import ImportJob, spool_dir
from batchyard.sources import ChunkRef
from tasks.chunks import _delays, _retry_transient


@task(name="begin-retry", cache_policy=NO_CACHE)
def begin_retry(job: ImportJob) -> dict:
    return retry.begin_retry(job)


@task(name="spool-failed", cache_policy=NO_CACHE)
def spool_failed(job: ImportJob, chunk_size: int, from_file: str | None) -> list[ChunkRef]:
    return retry.spool_retry(job, spool_dir(job.batch_id + "-retry"), chunk_size, from_file)


@task(name="retry-chunk", task_run_name="retry-chunk-{ref.index}", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=_delays(), retry_jitter_factor=0.5,
      retry_condition_fn=_retry_transient)
def retry_chunk(job: ImportJob, ref: ChunkRef, max_retries: int) -> retry.RetryResult:
    return retry.retry_chunk(job, ref, max_retries)
