"""Named pause points for crash tests (Spring Batch style restart tests).

With `BATCHYARD_PAUSE_AT=NAME:N` the N-th time a run reaches point NAME it writes
`BATCHYARD_PAUSE_FILE` and sleeps, so that a test can `kill -9` it at exactly that moment, or
do something to the world (take a lock) and delete the file to let the run go on.
Unset (always, outside tests), a pause point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from batchyard.settings import pause_settings

_hits: Counter = Counter()
_lock = threading.Lock()
_injector: Callable[[str, object], None] | None = None


def inject(injector: Callable[[str, object], None] | None) -> None:
    """Call `injector(name, which)` at every pause point of this process (None: stop). A fault
    test raises from it (a dropped connection, a failed commit, a simulated kill) at random
    points, many times over."""
    global _injector
    _injector = injector


def pause_point(name: str, which: object = None) -> None:
    """`NAME:N` pauses at the N-th time any run reaches NAME; `NAME[W]:N` only counts the times
    it is reached for `which` (a chunk's index), so a test can hold back one chunk."""
    if _injector is not None:
        _injector(name, which)
    wanted, marker = pause_settings()
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point == f"{name}[{which}]":
        name = point
    elif point != name:
        return
    with _lock:
        _hits[name] += 1
        reached = _hits[name] == int(count or 1)
    if reached:
        if marker:
            with open(marker, "w") as handle:
                handle.write(f"{name} {os.getpid()}\n")
        while not marker or os.path.exists(marker):  # short sleeps, like real work
            time.sleep(0.05)
