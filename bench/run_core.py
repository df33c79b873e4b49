"""batchyard's import without Prefect: the same chunk functions the flow's tasks call, in the
same order, on a plain thread pool (chunks load while the source is read, as in the flow).
The benchmark runs it beside the flow so that the difference is Prefect's own share (task
runs, states, events, logs, artifacts).

    python bench/run_core.py SOURCE DB_URL CHUNK_SIZE MAX_PARALLEL
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lease import BatchLease
from batchyard.ingest.lifecycle import close_batch, iter_plan, open_batch
from batchyard.ingest.spool import SourcePlan
from batchyard.ingest.summary import summary as summary_of
from batchyard.readers import SourceOptions
from tasks.runners import chunks_in_flight


def main() -> None:
    source, db, chunk_size, max_parallel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    job = resolve_job(source, "users", db, None, None)
    options = SourceOptions()
    open_batch(job, chunk_size, options)
    with BatchLease(job):
        chunks = iter_plan(job, options, chunk_size, SourcePlan([], [], 0))
        with ThreadPoolExecutor(chunks_in_flight("thread", max_parallel)) as pool:
            # map submits each chunk as the spool cuts it, as the flow does
            for _ in pool.map(lambda ref: process_chunk(job, ref), chunks):
                pass
        summary = summary_of(close_batch(job))
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
