"""Tasks of the retry-failed flow."""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from batchyard.chunks import ChunkRef
from batchyard.ingest import retry
from batchyard.ingest.job import ImportJob
from batchyard.ingest.spool import spool_dir
from tasks.policies import chunk_policy


@task(name="begin-retry", cache_policy=NO_CACHE)
def begin_retry(job: ImportJob, started_at: dt.datetime | None = None) -> dict:
    return retry.begin_retry(job, flow_run.get_id(), started_at)


@task(name="spool-failed", cache_policy=NO_CACHE)
def spool_failed(job: ImportJob, chunk_size: int, from_file: str | None) -> list[ChunkRef]:
    return retry.spool_retry(job, spool_dir(job.batch_id + "-retry"), chunk_size, from_file)


@task(name="retry-chunk", task_run_name="retry-chunk-{ref.index}", cache_policy=NO_CACHE)
def retry_chunk(job: ImportJob, ref: ChunkRef, max_retries: int) -> retry.RetryResult:
    return retry.retry_chunk(job, ref, max_retries)


def retry_chunk_with_retries():
    """The retry chunk task with the chunk retry policy of the environment, read at run time."""
    return retry_chunk.with_options(**chunk_policy().options())
