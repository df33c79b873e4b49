"""Every task's retry policy, in one place.

I/O tasks retry transient faults (a dropped connection, a locked database) and never bad data
or configuration; the chunk policy comes from the environment settings, read when a run starts,
and the ETL delays follow the Temporal data pipeline this project follows (transform 1 s → 10 s,
load 2 s → 30 s), scaled by `BATCHYARD_ETL_RETRY_SCALE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchyard.errors import is_retryable
from batchyard.settings import get_settings


def retry_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry I/O faults, never a BatchyardError or bad data."""
    try:
        state.result()
    except Exception as exc:  # the failed run's exception, re-raised by Prefect
        return is_retryable(exc)
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and after how long a task is run again."""

    retries: int
    delays: tuple[float, ...]
    jitter: float | None = None
    transient_only: bool = True

    def options(self) -> dict[str, Any]:
        """The policy as keyword arguments of `@task` or `Task.with_options`."""
        options: dict[str, Any] = {"retries": self.retries, "retry_delay_seconds": list(self.delays)}
        if self.jitter is not None:
            options["retry_jitter_factor"] = self.jitter
        if self.transient_only:
            options["retry_condition_fn"] = retry_transient
        return options


BOOKKEEPING = RetryPolicy(5, (1, 2, 4, 8, 10), transient_only=False)
"""Ledger writes after the work (a failed chunk, closing a batch): they must land."""
REPORTING = RetryPolicy(3, (1, 2, 4), transient_only=False)
"""Artifacts of a finished batch."""
WINDOW = RetryPolicy(2, (1, 5), transient_only=False)
"""A stream window's steps: their commits are idempotent."""
ETL_EXTRACT = RetryPolicy(2, (2, 10))
ETL_STEP = RetryPolicy(2, (1, 5))
"""Preparing and finishing an ETL target."""


def chunk_policy() -> RetryPolicy:
    """A chunk task: `BATCHYARD_CHUNK_RETRIES` retries, `BATCHYARD_RETRY_DELAYS` capped at 10 s,
    with jitter."""
    settings = get_settings()
    return RetryPolicy(settings.chunk_retries, tuple(min(d, 10.0) for d in settings.retry_delays),
                       jitter=0.5)


def _scaled(delays: tuple[float, ...]) -> tuple[float, ...]:
    scale = get_settings().etl_retry_scale
    return tuple(d * scale for d in delays)


def etl_transform_policy() -> RetryPolicy:
    return RetryPolicy(3, _scaled((1.0, 3.0, 10.0)))


def etl_load_policy() -> RetryPolicy:
    return RetryPolicy(5, _scaled((2.0, 4.0, 8.0, 16.0, 30.0)))
