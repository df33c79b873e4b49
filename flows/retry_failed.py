"""retry-failed: re-validate and load a batch's failed records (the retrier of the PHP batch system
this follows).

extract (the failed records, from the ledger or a corrected rejects file) → validate, transform
and load them in chunks → report. Records that still fail count one more retry; past the limit
they are `abandoned`. The batch's counters are corrected in the same transactions.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from batchyard.ingest.retry import job_for
from batchyard.sizing import DEFAULT_CHUNK_SIZE
from blocks.database import database_url
from tasks.chunks import close_batch
from tasks.concurrency import submit_bounded
from tasks.reporting import publish_summary
from tasks.retry import begin_retry, retry_chunk_with_retries, spool_failed


@flow(name="retry-failed", task_runner=ThreadPoolTaskRunner(max_workers=16))
def retry_failed(
    batch_id: str,
    db: str = "sqlite:///batchyard.db",
    from_file: str | None = None,
    max_retries: int = 3,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_parallel: int = 4,
) -> dict:
    """Retry the failed records of `batch_id` (from `from_file` if given: a fixed rejects CSV)."""
    job = job_for(database_url(db), batch_id)
    begin_retry(job)
    chunks = spool_failed(job, chunk_size, from_file)
    totals = {"retried": 0, "succeeded": 0, "ignored": 0, "still_failed": 0, "abandoned": 0,
              "not_failed": 0}
    for _, future in submit_bounded(retry_chunk_with_retries(), chunks, max_parallel, "ref", job=job,
                                    max_retries=max_retries):
        for key, value in asdict(future.result()).items():
            if key in totals:
                totals[key] += value
    summary = close_batch(job)
    publish_summary(job, summary)
    return {**summary, "retry": totals}


if __name__ == "__main__":
    retry_failed("b0123456789ab", db="sqlite:///demo/batchyard.db")
