"""Create the `batchyard` process work pool and its work queues, high, default and low.

    python -m deployments.pool        # once per Prefect server, before `prefect deploy --all`

A worker on the pool takes runs from `high` first, then `default`, then `low`; send a batch
import to a queue by its deployment (batch-import-high, batch-import, batch-import-low) or with
`run_deployment(..., work_queue_name="high")`. Safe to run again.
"""

from __future__ import annotations

import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

POOL = "batchyard"
QUEUES = ("high", "default", "low")


def create_pool(pool: str = POOL, queues: tuple[str, ...] = QUEUES) -> list[tuple[str, int]]:
    """The queues of `pool` with their priorities (1 is taken first)."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
        for priority, name in enumerate(queues, start=1):
            try:
                queue = client.read_work_queue_by_name(name, work_pool_name=pool)
                client.update_work_queue(queue.id, priority=priority)
            except ObjectNotFound:
                client.create_work_queue(name=name, work_pool_name=pool, priority=priority)
        found = [client.read_work_queue_by_name(name, work_pool_name=pool) for name in queues]
        return sorted((q.priority, q.name) for q in found)


if __name__ == "__main__":
    pool = sys.argv[1] if len(sys.argv) > 1 else POOL
    for priority, name in create_pool(pool):
        print(f"{pool}: queue {name} (priority {priority})")
