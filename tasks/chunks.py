"""Tasks of the batch-import flow: one per step of the job, chunk tasks with retries."""

from __future__ import annotations

import datetime as dt

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_engine import TaskRunTimeoutError

from batchyard.chunks import ChunkRef
from batchyard.errors import error_code, kind_of, portable
from batchyard.ingest import chunk, lifecycle
from batchyard.ingest.job import ChunkResult, ImportJob
from batchyard.ingest.spool import SourcePlan
from batchyard.ingest.summary import final_report
from batchyard.readers import SourceOptions
from batchyard.sizing import ChunkSize
from blocks.database import BLOCK_PREFIX, database_url
from tasks.concurrency import Handoff
from tasks.policies import BOOKKEEPING, chunk_policy


@task(name="open-batch", cache_policy=NO_CACHE)
def open_batch(job: ImportJob, chunk_size: ChunkSize, options: SourceOptions, fresh: bool = False,
               started_at: dt.datetime | None = None) -> dict:
    return lifecycle.open_batch(job, chunk_size, options, flow_run_id=flow_run.get_id(), fresh=fresh,
                                started_at=started_at)


@task(name="spool-chunks", cache_policy=NO_CACHE)
def spool_chunks(job: ImportJob, options: SourceOptions, chunk_size: ChunkSize,
                 cut: Handoff) -> tuple[int, list[str]]:
    """Cut the source into chunks, handing each to `cut` once the ledger has recorded it, so
    that the flow loads the first chunks while this task reads the rest; returns the record
    count and the warnings (logged as soon as the source's header is read)."""
    result = SourcePlan([], [], 0)
    told = []

    def tell(_: ChunkRef) -> None:
        if not told:
            told.append(True)
            for warning in result.warnings:
                get_run_logger().warning(warning)

    cut.fill(lifecycle.iter_plan(job, options, chunk_size, result), each=tell)
    tell(None)  # a source with no records still has its warnings
    return result.total, result.warnings


@task(name="import-chunk", task_run_name="import-chunk-{ref.index}", cache_policy=NO_CACHE)
def import_chunk(job: ImportJob, ref: ChunkRef) -> ChunkResult:
    """`job.db` may name a block: its URL, password included, is loaded where the chunk runs,
    so it is in no parameter a process pool or a Dask cluster receives."""
    if job.db.startswith(BLOCK_PREFIX):
        job = job.model_copy(update={"db": database_url(job.db)})
    try:
        return chunk.process_chunk(job, ref)
    except Exception as exc:  # what happened must survive the trip back from a worker
        carried = portable(exc)
        if carried is exc:
            raise
        raise carried from None


def import_chunk_with_retries():
    """The chunk task with the chunk retry policy of the environment, read at run time."""
    return import_chunk.with_options(**chunk_policy().options())


@task(name="fail-chunk", cache_policy=NO_CACHE, **BOOKKEEPING.options())
def fail_chunk(job: ImportJob, ref: ChunkRef, exc: BaseException) -> None:
    """Record a chunk that exhausted its retries, with its error code and cause."""
    code = error_code(exc)
    cause = f"{kind_of(exc)}: {(str(exc).strip().splitlines() or [''])[0]}"  # one line
    if isinstance(exc, TaskRunTimeoutError):
        cause = (f"the chunk did not finish within {chunk_policy().timeout:g} s "
                 "(BATCHYARD_CHUNK_TIMEOUT)")
    chunk.fail_chunk(job, ref, f"{code}: {cause}", code)


@task(name="close-batch", cache_policy=NO_CACHE, **BOOKKEEPING.options())
def close_batch(job: ImportJob, cancelled: bool = False, rejects_file: str | None = None) -> dict:
    """The final summary, with the batch's attempts and failed chunks."""
    return final_report(job.db, lifecycle.close_batch(job, cancelled, rejects_file))
