"""batchyard's import without Prefect: the same chunk functions the flow's tasks call, in the
same order, on a plain thread pool. The benchmark runs it beside the flow so that the
difference is Prefect's own share (task runs, states, events, logs, artifacts).

    python bench/run_core.py SOURCE DB_URL CHUNK_SIZE MAX_PARALLEL
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from batchyard import pipeline
from batchyard.sources import SourceOptions
from tasks.runners import chunks_in_flight


def main() -> None:
    source, db, chunk_size, max_parallel = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    job = pipeline.resolve_job(source, "users", db, None, None)
    options = SourceOptions()
    pipeline.open_batch(job, chunk_size, options)
    with pipeline.BatchLease(job):
        chunks, _, _ = pipeline.plan_batch(job, options, chunk_size)
        with ThreadPoolExecutor(chunks_in_flight("thread", max_parallel)) as pool:
            for _ in pool.map(lambda ref: pipeline.process_chunk(job, ref), chunks):
                pass
        summary = pipeline.summary(pipeline.close_batch(job))
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    main()
