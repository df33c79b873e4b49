"""Tasks of the batch-import flow: one per step of the job, chunk tasks with retries."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from batchyard import pipeline
from batchyard.errors import error_code, is_retryable
from batchyard.pipeline import ChunkResult, ChunkSize, ImportJob
from batchyard.settings import get_settings
from batchyard.sources import ChunkRef, SourceOptions
from blocks.database import BLOCK_PREFIX, database_url


def _retry_transient(task, task_run, state) -> bool:
    """Retry I/O faults (a dropped connection, a locked database), never bad data or config."""
    try:
        state.result()
    except Exception as exc:  # the failed run's exception, re-raised by Prefect
        return is_retryable(exc)
    return False


def _delays() -> list[float]:
    return [min(d, 10.0) for d in get_settings().retry_delays]


@task(name="open-batch", cache_policy=NO_CACHE)
def open_batch(job: ImportJob, chunk_size: ChunkSize, options: SourceOptions, fresh: bool = False) -> dict:
    return pipeline.open_batch(job, chunk_size, options, flow_run_id=flow_run.get_id(), fresh=fresh)


@task(name="spool-chunks", cache_policy=NO_CACHE)
def spool_chunks(job: ImportJob, options: SourceOptions, chunk_size: ChunkSize,
                 ) -> tuple[list[ChunkRef], int, list[str]]:
    return pipeline.plan_batch(job, options, chunk_size)


@task(name="import-chunk", task_run_name="import-chunk-{ref.index}", cache_policy=NO_CACHE)
def import_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    """`job.db` may name a block: its URL, password included, is loaded where the chunk runs,
    so it is in no parameter a process pool or a Dask cluster receives."""
    if job.db.startswith(BLOCK_PREFIX):
        job = job.model_copy(update={"db": database_url(job.db)})
    return pipeline.process_chunk(job, ref)


def import_chunk_with_retries():
    """The chunk task with the retry policy of the environment settings, read at run time:
    3 attempts, backoff from 1 s to 10 s with jitter, bad data and configuration never retried."""
    settings = get_settings()
    return import_chunk.with_options(
        retries=settings.chunk_retries,
        retry_delay_seconds=_delays(),
        retry_jitter_factor=0.5,
        retry_condition_fn=_retry_transient,
    )


@task(name="fail-chunk", cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 4, 8, 10])
def fail_chunk(job: ImportJob, ref: ChunkRef, exc: BaseException) -> None:
    """Record a chunk that exhausted its retries, with its error code."""
    code = error_code(exc)
    pipeline.fail_chunk(job, ref, f"{code}: {type(exc).__name__}: {exc}", code)


@task(name="close-batch", cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 4, 8, 10])
def close_batch(job: ImportJob, cancelled: bool = False, rejects_file: str | None = None) -> dict:
    return pipeline.summary(pipeline.close_batch(job, cancelled, rejects_file))
