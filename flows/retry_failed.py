"""retry-failed: re-validate and load a batch's failed records (the retrier of the PHP batch system
this follows).

extract (the failed records, from the ledger or a corrected rejects file) → validate, transform
and load them in chunks → report. Records that still fail count one more retry; past the limit
they are `abandoned`. The batch's counters are corrected in the same transactions. A retry that
leaves records failing ends its flow run Failed, once its ledger and artifacts are written.

`python flows/retry_failed.py [BATCH_ID]` retries the newest batch with failed records in
demo/batchyard.db (importing the sample first when there is none).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import asdict
from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from batchyard.errors import BatchyardError
from batchyard.ingest.retry import job_for, not_completed
from batchyard.sizing import DEFAULT_CHUNK_SIZE
from blocks.database import database_url
from tasks.chunks import close_batch
from tasks.concurrency import submit_bounded
from tasks.outcome import final_state
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
):
    """Retry the failed records of `batch_id` (from `from_file` if given: a fixed rejects CSV);
    returns the batch's summary with the retry's counts, or a Failed state holding them when
    records are still failing."""
    started = dt.datetime.now(dt.UTC)
    job = job_for(database_url(db), batch_id)
    begin_retry(job, started)
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
    return final_state({**summary, "retry": totals}, not_completed(summary, totals, max_retries, db))


def main(argv: list[str]) -> int:
    """Retry a batch of demo/batchyard.db and say what became of its failed records."""
    from batchyard.engines import session
    from batchyard.ingest.summary import list_batches, read_ledger
    from batchyard.prefect_runtime import run_locally
    from flows.batch_import import batch_import

    db = "sqlite:///demo/batchyard.db"
    batch_id = argv[0] if argv else None
    if batch_id is None:
        try:
            with read_ledger(db) as connection:
                found = [b for b in list_batches(connection) if b["failed"]]
        except BatchyardError:
            found = []
        if not found:  # nothing to retry yet: import the sample, which has bad records
            from batchyard.demo import write_users

            source = write_users(Path("demo/users.csv"), 1_000) if not Path("demo/users.csv").exists() \
                else Path("demo/users.csv")
            run_locally(batch_import, source=str(source.resolve()), db=db)
            with session(db) as connection:
                found = [b for b in list_batches(connection) if b["failed"]]
        batch_id = found[0]["batch_id"]
    state, summary = run_locally(retry_failed, batch_id=batch_id, db=db)
    retried = summary["retry"]
    print(f"batch {batch_id} of {db}: {retried['retried']:,} failed records retried, "
          f"{retried['succeeded']:,} loaded, {retried['still_failed']:,} still failed, "
          f"{retried['abandoned']:,} abandoned; the batch has {summary['failed']:,} failed records")
    print(f"list them: batchyard errors {batch_id} --db {db}; fix them in a copy of the rejects file and "
          f"retry with: batchyard retry {batch_id} --db {db} --from FIXED.csv")
    return 0 if state.is_completed() else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
