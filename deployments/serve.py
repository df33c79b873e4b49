"""Serve every batchyard flow from this process, for users without a worker.

    python -m deployments.serve            # then: prefect deployment run batch-import/batch-import
"""

from __future__ import annotations

from prefect import serve

from flows.batch_import import batch_import


def deployments() -> list:
    return [
        batch_import.to_deployment(
            name="batch-import",
            description="Import a file of records into a database table, with a ledger.",
            tags=["batchyard", "import"],
        ),
    ]


if __name__ == "__main__":
    serve(*deployments())
