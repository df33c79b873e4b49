"""Tumbling windows as integer epoch milliseconds.

The window a run processes is derived from the persisted watermark (or, on a job's first run,
from where the job starts: its source's earliest event, a chosen moment, or the run's scheduled
start time), never from the wall clock: a late or retried run then processes exactly the window
it owes. The wall clock only decides whether that window is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, order=True)
class Window:
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def next(self) -> Window:
        return Window(self.end, self.end + self.size)

    def label(self) -> str:
        return f"{iso(self.start)}/{iso(self.end)}"


def to_ms(moment: datetime | float | int) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(round(moment.timestamp() * 1000))
    return int(moment)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def first_window(scheduled_ms: int, size_ms: int, lateness_ms: int = 0) -> Window:
    """The last whole window that a run scheduled at `scheduled_ms` may close: its end plus the
    allowed lateness is not after the scheduled time."""
    if size_ms <= 0:
        raise ValueError(f"window size must be positive, got {size_ms} ms")
    if lateness_ms < 0:
        raise ValueError(f"allowed lateness cannot be negative, got {lateness_ms} ms")
    end = (scheduled_ms - lateness_ms) // size_ms * size_ms
    return Window(end - size_ms, end)


def window_after(watermark_ms: int, size_ms: int) -> Window:
    """The window that starts at the watermark (the end of the last committed window)."""
    if size_ms <= 0:
        raise ValueError(f"window size must be positive, got {size_ms} ms")
    if watermark_ms % size_ms:
        raise ValueError(
            f"watermark {watermark_ms} is not on a {size_ms} ms window boundary: "
            "the window size of a job cannot change once it has run"
        )
    return Window(watermark_ms, watermark_ms + size_ms)


def window_of(moment_ms: int, size_ms: int) -> Window:
    """The window that holds `moment_ms`."""
    start = moment_ms // size_ms * size_ms
    return Window(start, start + size_ms)


def next_window(watermark_ms: int | None, scheduled_ms: int, size_ms: int,
                lateness_ms: int = 0, start_ms: int | None = None) -> Window:
    """After the watermark; on a job's first run, the window of `start_ms` when given (its
    source's earliest event, or a chosen moment), else the one the scheduled start owes."""
    if watermark_ms is None:
        if start_ms is not None:
            return window_of(start_ms, size_ms)
        return first_window(scheduled_ms, size_ms, lateness_ms)
    return window_after(watermark_ms, size_ms)


def due_at(window: Window, lateness_ms: int) -> int:
    """When a window may be closed: events may still arrive up to the allowed lateness."""
    return window.end + lateness_ms


def is_due(window: Window, now_ms: int, lateness_ms: int) -> bool:
    return now_ms >= due_at(window, lateness_ms)
