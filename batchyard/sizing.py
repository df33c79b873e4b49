"""Chunk sizes: fixed, or dynamic (the dynamic batch size of the Temporal batch import this
follows): big chunks on an idle machine, small ones on a busy one, so that a loaded host is not
swamped and an idle one is not wasted on per-chunk overhead. The sizes chosen land in the ledger
as chunk boundaries, so a resumed batch replays exactly the same chunks whatever the load is then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

DEFAULT_CHUNK_SIZE = 100_000
"""Records per chunk: ten chunk tasks per million records keeps Prefect's per-task cost small
against the work, for about 100 MiB more peak memory than 50,000 (bench/RESULTS.md)."""

ChunkSize = int | Literal["auto"]


@dataclass(frozen=True)
class SizeRange:
    minimum: int = 10_000
    middle: int = 50_000
    maximum: int = 100_000


def size_for_load(cpu_busy: float, sizes: SizeRange) -> int:
    """CPU below 50 % → maximum, below 80 % → middle, else minimum (the rule of the Temporal
    batch import this follows)."""
    if cpu_busy < 0.5:
        return sizes.maximum
    if cpu_busy < 0.8:
        return sizes.middle
    return sizes.minimum


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values), idle


def cpu_busy_fraction(sample_seconds: float = 0.05) -> float:
    """Share of all cores busy over a short sample (Linux /proc/stat; 0 where unavailable)."""
    try:
        total_1, idle_1 = _cpu_times()
        time.sleep(sample_seconds)
        total_2, idle_2 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return 0.0
    elapsed = total_2 - total_1
    return 1.0 - (idle_2 - idle_1) / elapsed if elapsed > 0 else 0.0


def auto_sizes(sizes: SizeRange, probe: Callable[[], float] | None = None) -> Iterator[int]:
    """One size per chunk, each chosen from the load `probe` (default: `cpu_busy_fraction`)
    measures just before the chunk is cut."""
    while True:
        yield size_for_load((probe or cpu_busy_fraction)(), sizes)


def fixed_sizes(chunk_size: int) -> Iterator[int]:
    """`chunk_size`, for ever."""
    while True:
        yield chunk_size


def chunk_sizes(chunk_size: ChunkSize, sizes: tuple[int, int, int]) -> Iterator[int]:
    """The size of each chunk in turn: fixed, or with `auto` chosen from the load within `sizes`
    (minimum, middle, maximum)."""
    if chunk_size == "auto":
        return auto_sizes(SizeRange(*sizes))
    return fixed_sizes(int(chunk_size))


def recorded_size(chunk_size: ChunkSize, sizes: tuple[int, int, int]) -> int:
    """The chunk size a batch row records: the size itself, or for `auto` the middle size."""
    return sizes[1] if chunk_size == "auto" else int(chunk_size)
