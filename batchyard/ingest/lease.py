"""Who runs a batch, and whether that run is still alive.

A running batch records its owner (host, pid and the process's start time). A second start is
refused while the owner lives; after a crash or `kill -9` the owner is gone and the batch can be
resumed at once. On the same host liveness is read from the process table; across hosts from the
heartbeat the owner writes every few seconds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
from pathlib import Path

from batchyard.engines import session
from batchyard.ingest import ledger
from batchyard.ingest.job import ImportJob

LEASE_SECONDS = 60.0


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    """This process (or `pid`) as a batch owner: `host:pid:start-ticks`."""
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}"


def owner_alive(owner: str | None, heartbeat_at: dt.datetime | None,
                now: dt.datetime | None = None, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether `owner` still runs: on this host from the process table (the same pid with the
    same start time), elsewhere from a heartbeat younger than `lease_seconds`."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        return _start_ticks(int(pid_text)) == ticks
    if heartbeat_at is None:
        return False
    now = now or dt.datetime.now(dt.UTC)
    return (now - heartbeat_at).total_seconds() < lease_seconds


def describe_owner(owner: str | None) -> str:
    """`pid N on HOST`, for messages."""
    if not owner:
        return "an unknown process"
    host, _, rest = owner.partition(":")
    return f"pid {rest.partition(':')[0]} on {host}"


class BatchLease:
    """Keeps the batch's lease fresh from a background thread while the run works, and tells
    the run when `batchyard stop` asked it to stop."""

    def __init__(self, job: ImportJob, interval: float = 5.0):
        self.job, self.interval = job, interval
        self.owner = owner_id()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="batchyard-lease", daemon=True)
        self.stopped = False

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat only shortens the lease
                with session(self.job.db, write=True) as connection:
                    ledger.heartbeat(connection, self.job.batch_id, self.owner)

    def stop_requested(self) -> bool:
        """Asked between chunks; a database that is briefly away means no stop was seen yet."""
        if not self.stopped:
            with contextlib.suppress(Exception), session(self.job.db) as connection:
                self.stopped = ledger.stop_requested(connection, self.job.batch_id)
        return self.stopped

    def __enter__(self) -> BatchLease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(timeout=10)
