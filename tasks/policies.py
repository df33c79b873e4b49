"""Every task's retry policy, in one place.

I/O tasks retry transient faults (a dropped connection, a locked database, a wait that ran out)
and never bad data or configuration; the chunk policy comes from the environment settings, read
when a run starts, and the ETL numbers are those of the Temporal data pipeline this project
follows: transform 3 attempts in all (1 s, doubling, at most 10 s), load 5 attempts in all (2 s,
doubling, at most 30 s), their delays scaled by `BATCHYARD_ETL_RETRY_SCALE`. Chunk, extract,
transform and load tasks also have a time limit from the settings: a run that cannot finish
within it fails with TIMEOUT_ERROR (and is retried as a transient fault).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from batchyard.errors import is_retryable
from batchyard.settings import chunk_retry_delays, get_settings


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
    timeout: float | None = None
    """Seconds a run may take (None or 0: no limit)."""

    def options(self) -> dict[str, Any]:
        """The policy as keyword arguments of `@task` or `Task.with_options`."""
        options: dict[str, Any] = {"retries": self.retries, "retry_delay_seconds": list(self.delays)}
        if self.jitter is not None:
            options["retry_jitter_factor"] = self.jitter
        if self.transient_only:
            options["retry_condition_fn"] = retry_transient
        if self.timeout:
            options["timeout_seconds"] = self.timeout
        return options


def doubling(first: float, cap: float, retries: int) -> tuple[float, ...]:
    """`retries` delays from `first`, each twice the one before, none over `cap`."""
    return tuple(min(first * 2 ** i, cap) for i in range(retries))


class ThreadTimeoutNotice(logging.Filter):
    """Prefect warns, for every run of a task with a time limit in a worker thread, that the
    limit cannot interrupt a blocking call. batchyard bounds its blocking calls itself (the
    databases' lock, statement and busy timeouts, HTTP and Redis timeouts), so a stuck run
    returns from them and then meets its limit; once per chunk, the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout of %s seconds configured for this task")


logging.getLogger("prefect.task_runs").addFilter(ThreadTimeoutNotice())


BOOKKEEPING = RetryPolicy(5, (1, 2, 4, 8, 10), transient_only=False)
"""Ledger writes after the work (a failed chunk, closing a batch): they must land."""
REPORTING = RetryPolicy(3, (1, 2, 4), transient_only=False)
"""Artifacts of a finished batch."""
WINDOW = RetryPolicy(2, (1, 5), transient_only=False)
"""A stream window's steps: their commits are idempotent."""
ETL_STEP = RetryPolicy(2, (1, 5))
"""Preparing and finishing an ETL target."""


def chunk_policy() -> RetryPolicy:
    """A chunk task: `BATCHYARD_CHUNK_RETRIES` retries, `BATCHYARD_RETRY_DELAYS` capped at 10 s,
    with jitter, within `BATCHYARD_CHUNK_TIMEOUT` seconds a run."""
    settings = get_settings()
    return RetryPolicy(settings.chunk_retries, chunk_retry_delays(settings),
                       jitter=0.5, timeout=settings.chunk_timeout)


def _scaled(delays: tuple[float, ...]) -> tuple[float, ...]:
    scale = get_settings().etl_retry_scale
    return tuple(d * scale for d in delays)


def etl_extract_policy() -> RetryPolicy:
    """An extract task: 2 retries (2 s, 10 s), within `BATCHYARD_ETL_EXTRACT_TIMEOUT`."""
    return RetryPolicy(2, (2.0, 10.0), timeout=get_settings().etl_extract_timeout)


def etl_transform_policy() -> RetryPolicy:
    """A transform task: 3 attempts in all, 1 s then 2 s apart (doubling, at most 10 s)."""
    return RetryPolicy(2, _scaled(doubling(1.0, 10.0, 2)), timeout=get_settings().etl_transform_timeout)


def etl_load_policy() -> RetryPolicy:
    """A load task: 5 attempts in all, 2, 4, 8, 16 s apart (doubling, at most 30 s)."""
    return RetryPolicy(4, _scaled(doubling(2.0, 30.0, 4)), timeout=get_settings().etl_load_timeout)
