"""Who runs a batch, and whether that run is still alive.

A running batch records its owner (host, pid and the process's start time). A second start is
refused while the owner lives; after a crash or `kill -9` the owner is gone and the batch can be
resumed at once. On the same host liveness is read from the process table; across hosts from the
heartbeat the owner writes every few seconds.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from pathlib import Path

LEASE_SECONDS = 60.0


def _start_ticks(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner_id(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or 0}"


def owner_alive(owner: str | None, heartbeat_at: dt.datetime | None,
                now: dt.datetime | None = None, lease_seconds: float = LEASE_SECONDS) -> bool:
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
    if not owner:
        return "an unknown process"
    host, _, rest = owner.partition(":")
    return f"pid {rest.partition(':')[0]} on {host}"
