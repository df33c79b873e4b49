"""Serve every batchyard flow from this process, for users without a worker.

    python -m deployments.serve            # then: prefect deployment run batch-import/batch-import
"""

from __future__ import annotations

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from batchyard.stream.job import StreamJob
from flows.batch_import import batch_import
from flows.etl_pipeline import etl_pipeline
from flows.retry_failed import retry_failed
from flows.stream_window import stream_window


def deployments() -> list:
    return [
        batch_import.to_deployment(
            name="batch-import",
            description="Import a file of records into a database table, with a ledger.",
            tags=["batchyard", "import"],
        ),
        retry_failed.to_deployment(
            name="retry-failed",
            description="Re-validate and load the failed records of a batch.",
            tags=["batchyard", "retry"],
        ),
        stream_window.to_deployment(
            name="stream-window",
            description="Close the tumbling windows a stream job owes and write their aggregates.",
            tags=["batchyard", "stream"],
            parameters={"job": StreamJob().model_dump()},
            interval=60,
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        ),
        etl_pipeline.to_deployment(
            name="etl-pipeline",
            description="Extract several sources in parallel, transform and load them in batches.",
            tags=["batchyard", "etl"],
            schedules=[Cron("0 2 * * *", timezone="UTC", active=False)],  # paused: it needs a spec
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
