"""What the `batchyard` console script and the warm process (batchyard/warm.py) share: where
the warm process listens, which commands it may serve (`signature`, `fingerprint`) and the
messages between them (length-prefixed JSON, with file descriptors beside the first).
Standard library only: the console script imports this before anything heavy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import struct
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

MAX_MESSAGE = 1 << 20
# Variables that may differ between this process and the commands it serves: the local
# server's address (set here as use_early sets it) and what only batchyard reads at run time.
_UNSIGNED = ("PREFECT_API_URL",)


def address(home: Path, api_url: str | None = None) -> str:
    """The warm process's socket for one Prefect home (and configured API URL): in Linux's
    abstract namespace (a file's path is limited to 107 bytes, a Prefect home's is not); it
    goes away with its process."""
    key = str(home.expanduser().resolve()) + (f"\n{api_url}" if api_url else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"\0batchyard-warm-{digest}"


def listening(home: Path, api_url: str | None = None) -> bool:
    """Whether a warm process serves this Prefect home (and API URL) now."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address(home, api_url))
        except OSError:
            return False
    return True


def signature(environ: Mapping[str, str]) -> list[list[str]]:
    """The Prefect settings an environment gives, as Prefect reads them at import: every
    `PREFECT_*` variable but the API URL, with the defaults a `batchyard` command sets."""
    from batchyard.prefect_runtime import COMMAND_DEFAULTS

    merged = {**COMMAND_DEFAULTS, **environ}
    return sorted([k, v] for k, v in merged.items() if k.startswith("PREFECT_") and k not in _UNSIGNED)


def fingerprint() -> list:
    """What a served command must share with this process: the interpreter, the installed
    packages (their directory changes when one is installed or removed) and batchyard's own
    source files (their newest change)."""
    root = Path(__file__).resolve().parent.parent
    newest = 0.0
    for package in ("batchyard", "flows", "tasks", "blocks"):
        for path in (root / package).rglob("*.py"):
            with contextlib.suppress(OSError):
                newest = max(newest, path.stat().st_mtime)
    purelib = sysconfig.get_paths()["purelib"]
    return [sys.executable, os.stat(purelib).st_mtime, newest]


def send_message(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], list(fds))
    else:
        sock.sendall(payload)


def receive_message(sock: socket.socket, fds: int = 0) -> tuple[dict | None, list[int]]:
    """One length-prefixed JSON message and up to `fds` file descriptors; (None, []) at EOF."""
    head, received, _, _ = socket.recv_fds(sock, 4, fds) if fds else (sock.recv(4), [], 0, None)
    if len(head) < 4:
        for fd in received:
            os.close(fd)
        return None, []
    size = struct.unpack("!I", head)[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    data = b""
    while len(data) < size:
        part = sock.recv(size - len(data))
        if not part:
            return None, received
        data += part
    return json.loads(data), received
