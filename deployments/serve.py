"""Serve every batchyard flow from this process, for users without a worker.

    python -m deployments.serve            # then: prefect deployment run batch-import/batch-import
"""

from __future__ import annotations

from prefect import serve

from flows.batch_import import batch_import
from flows.etl_pipeline import etl_pipeline


def deployments() -> list:
    return [
        batch_import.to_deployment(
            name="batch-import",
            description="Import a file of records into a database table, with a ledger.",
            tags=["batchyard", "import"],
        ),
        etl_pipeline.to_deployment(
            name="etl-pipeline",
            description="Extract several sources in parallel, transform and load them in batches.",
            tags=["batchyard", "etl"],
            cron="0 2 * * *",
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
