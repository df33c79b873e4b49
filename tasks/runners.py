"""Where chunk tasks run: threads of the flow's process, a local process pool, or a Dask cluster.

The flow keeps its own thread pool for its small steps and enters the chosen runner only for
the chunk tasks, so the choice is a plain flow parameter: the same for the CLI and for a
deployment's run form. Threads are the default: pyarrow's reader and compute functions release
the GIL, and a process pool pays a start-up of seconds per worker (each imports Prefect).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal, get_args

from batchyard.errors import ConfigurationError

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

TaskRunnerName = Literal["thread", "process", "dask"]
RUNNERS: tuple[str, ...] = get_args(TaskRunnerName)
CONNECT_TIMEOUT = 10.0


def check_runner(name: str, dask_address: str | None) -> None:
    """Refuse a runner choice that cannot work, in one line, before anything is written."""
    if name not in RUNNERS:
        raise ConfigurationError(f"unknown task runner {name!r}: use {', '.join(RUNNERS)}")
    if dask_address and name != "dask":
        raise ConfigurationError(
            f"a Dask address ({dask_address}) needs the dask task runner (--task-runner dask)")
    if dask_address:
        check_dask_address(dask_address)


def check_dask_address(address: str) -> None:
    """A scheduler that cannot be reached fails at once, naming it, instead of Dask's client
    retrying for its connect timeout."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a Dask scheduler address: {address!r} ({exc})") from None
    if scheme not in ("tcp", "tls"):
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise ConfigurationError(f"cannot reach the Dask scheduler at {address}: "
                                 f"{exc.strerror or exc}") from None


def build_runner(name: str, dask_address: str | None, max_parallel: int) -> TaskRunner | None:
    """The runner for chunk tasks; None for threads, which the flow's own runner provides."""
    if name == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=min(max_parallel, os.cpu_count() or 2))
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        # its scheduler and nannies log every connection; the batch's progress is what matters
        logging.getLogger("distributed").setLevel(logging.WARNING)

        if dask_address:
            return DaskTaskRunner(address=dask_address,
                                  client_kwargs={"timeout": f"{CONNECT_TIMEOUT}s"})
        return DaskTaskRunner()  # a temporary LocalCluster for this run
    return None


def chunks_in_flight(name: str, max_parallel: int) -> int:
    """How many chunk task runs to keep submitted at once.

    On threads, only as many chunks as there are work slots (cores) do their work at once, so
    one more is enough to have the next chunk ready the moment a slot frees. Submitting up to
    --max-parallel at once only started that many task runs together, each with its engine
    and its state events, while the first chunks were being prepared, which made the batch
    slower (bench/RESULTS.md). Processes and a Dask cluster get --max-parallel, as their
    workers do the work in parallel."""
    if name == "thread":
        from batchyard.ingest.chunk import work_slot_count

        return max(1, min(max_parallel, work_slot_count() + 1))
    return max_parallel


@contextlib.contextmanager
def open_runner(name: str, dask_address: str | None, max_parallel: int,
                ) -> Iterator[TaskRunner | None]:
    """The started runner; a Dask client connects here, so a bad address fails the run before
    its batch is opened."""
    check_runner(name, dask_address)
    runner = build_runner(name, dask_address, max_parallel)
    if runner is None:
        yield None
        return
    with _api_for_workers(), runner:
        if name == "dask":
            runner.client  # noqa: B018 - connects, or starts the local cluster
        yield runner


@contextlib.contextmanager
def _api_for_workers() -> Iterator[None]:
    """Without PREFECT_API_URL Prefect runs a temporary server for this process only; worker
    processes would each start another. Give them this one's address instead."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the singleton this process's client started
    if not server.running:
        server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield
