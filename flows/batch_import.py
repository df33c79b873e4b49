"""batch-import: a file of records into a database table, validated, with a ledger.

extract (spool the source into chunks) → validate, transform and load each chunk in parallel
(threads, processes or a Dask cluster) →
report (counts, reasons, rejects file). A chunk that fails after its retries is recorded and
the others go on; the batch can then be resumed with the same batch id. A batch that ends
failed or cancelled ends its flow run Failed or Cancelled, once its ledger, summary and
artifacts are written.

`python flows/batch_import.py [FILE]` imports FILE (default: a sample of 1,000 users, written
to demo/users.csv when it is not there) into SQLite at demo/batchyard.db.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from batchyard.contracts.resolve import prepare_schema
from batchyard.errors import BatchyardError
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lease import BatchLease
from batchyard.ingest.lifecycle import fail_batch, not_completed
from batchyard.readers import SourceOptions
from batchyard.sizing import DEFAULT_CHUNK_SIZE, ChunkSize
from blocks.database import database_url
from tasks.chunks import (
    close_batch,
    fail_chunk,
    import_chunk_with_retries,
    open_batch,
    spool_chunks,
)
from tasks.concurrency import Handoff, submit_bounded
from tasks.outcome import final_state
from tasks.reporting import BatchProgress, publish_summary
from tasks.runners import TaskRunnerName, chunks_in_flight, open_runner


@flow(name="batch-import", task_runner=ThreadPoolTaskRunner(max_workers=32))
def batch_import(
    source: str,
    schema_name: str = "users",
    db: str = "sqlite:///batchyard.db",  # a URL, or block:NAME for a saved SqlAlchemyConnector
    table: str | None = None,
    chunk_size: ChunkSize = DEFAULT_CHUNK_SIZE,  # or "auto": sized from the machine's load per chunk
    max_parallel: int = 10,
    batch_id: str | None = None,
    fresh: bool = False,
    options: SourceOptions = SourceOptions(),
    rejects_file: str | None = None,
    task_runner: TaskRunnerName = "thread",  # where chunk tasks run: thread, process or dask
    dask_address: str | None = None,  # scheduler of an existing Dask cluster (task_runner dask)
    evolve: bool = False,  # schema_name "infer": accept new columns as a new contract version
):
    """Import `source` into `table` of `db` as batch `batch_id` (new when not given); returns
    the batch's summary, or a Failed (Cancelled) state holding it when the batch did not
    complete."""
    started = dt.datetime.now(dt.UTC)  # the attempt's start: a wait for the lock counts
    url = database_url(db)
    schema_name, table = prepare_schema(schema_name, source, options, url, table, evolve)
    job = resolve_job(source, schema_name, url, table, batch_id)
    with open_runner(task_runner, dask_address, max_parallel) as runner:
        batch = open_batch(job, chunk_size, options, fresh, started)
        with BatchLease(job) as lease:
            progress = BatchProgress(job, batch)
            cut = Handoff()  # the chunks, as the spool cuts them: loading starts at the first
            spooled = spool_chunks.submit(job, options, chunk_size, cut)
            spooled.add_done_callback(lambda _: cut.end())  # ended, however the task ended
            progress.publish()  # stage "spooling", while the source is spooled

            # `db` as given: a block name, not its password, travels to processes and workers
            chunk_job = job.model_copy(update={"db": db})
            in_flight = chunks_in_flight(task_runner, max_parallel)
            try:
                for ref, future in submit_bounded(import_chunk_with_retries(), progress.reading(cut),
                                                  in_flight, "ref", stop=lease.stop_requested,
                                                  runner=runner, started=progress.publish,
                                                  job=chunk_job):
                    try:
                        progress.add(future.result())
                    except Exception as exc:  # retries exhausted: record it, the others go on
                        fail_chunk(job, ref, exc)
                        progress.add_failed_chunk(ref.index, ref.n_rows, str(exc))
                total, _ = spooled.result()
            except BatchyardError as exc:  # the source failed a check (or changed) as it was read
                fail_batch(job, str(exc), exc.code)
                raise
            progress.planned(total)
            progress.finish()

            summary = close_batch(job, cancelled=lease.stopped, rejects_file=rejects_file)
            progress.closed(summary)
    publish_summary(job, summary)
    return final_state(summary, not_completed(summary, db))


def main(argv: list[str]) -> int:
    """Import a file (or the sample) into demo/batchyard.db and say where everything is."""
    from batchyard.demo import write_users
    from batchyard.prefect_runtime import run_locally

    demo = Path("demo")
    source = Path(argv[0]) if argv else demo / "users.csv"
    if not argv and not source.exists():
        write_users(source, 1_000)
        print(f"wrote a sample of 1,000 users (some deliberately bad) to {source}")
    db = f"sqlite:///{demo / 'batchyard.db'}"
    demo.mkdir(exist_ok=True)
    state, summary = run_locally(batch_import, source=str(source.resolve()), db=db)
    print(f"batch {summary['batch_id']}: {summary['status']}, {summary['success']:,} of "
          f"{summary['total']:,} records loaded into table {summary['table']} of {db}, "
          f"{summary['failed']:,} failed, {summary['ignored']:,} ignored")
    if summary.get("rejects_file"):
        print(f"rejected records: {summary['rejects_file']}")
    print(f"more: batchyard status {summary['batch_id']} --db {db}")
    return 0 if state.is_completed() else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
