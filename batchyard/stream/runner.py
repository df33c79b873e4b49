"""One window, start to finish: read, aggregate, commit with the watermark, acknowledge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from batchyard.stream.aggregate import UserFunction, aggregate, apply_function
from batchyard.stream.sinks import Sink, WindowStats
from batchyard.stream.sources import Source, format_position, parse_position
from batchyard.stream.window import Window, next_window


@dataclass(frozen=True)
class WindowResult:
    window_start: int
    window_end: int
    events_in: int
    events_out: int
    late: int
    invalid: int
    committed: bool  # False: the window was already behind the watermark (a repeated run)
    lag_seconds: float
    before_start: int = 0  # a job's first window: events before it, not aggregated

    def as_dict(self) -> dict:
        return asdict(self)


def owed_window(sink: Sink, job: str, scheduled_ms: int, size_ms: int, lateness_ms: int,
                start: Callable[[], int | None] | None = None) -> Window:
    """The window after the job's watermark; on its first run, the window of `start()` (where
    the job starts, asked only then), or without one the window the scheduled start owes."""
    state = sink.state(job)
    if state is not None:
        return next_window(state.watermark, scheduled_ms, size_ms, lateness_ms)
    return next_window(None, scheduled_ms, size_ms, lateness_ms, start() if start else None)


def process_window(source: Source, sink: Sink, job: str, window: Window, now_ms: int,
                   function: UserFunction | None = None) -> WindowResult:
    """Acknowledge only after the commit: a crash in between re-reads the events, and the
    repeated commit of a window behind the watermark is a no-op. In a job's first window, the
    events before it are not late (no window of theirs was ever committed): they are counted
    as before the job's start."""
    state = sink.state(job)
    seen = parse_position(state.position) if state else (0, 0)
    fetched = source.fetch(window, seen)
    before_start = 0
    if state is None:
        before_start, fetched.late = len(fetched.late), []
    rows = apply_function(function, window, aggregate(fetched.events))
    stats = WindowStats(len(fetched.events), len(fetched.late), fetched.invalid)
    committed = sink.commit(job, window, rows, stats, format_position(fetched.position))
    source.ack(fetched)
    return WindowResult(window.start, window.end, stats.events_in, len(rows), stats.late,
                        stats.invalid, committed, round((now_ms - window.end) / 1000, 3),
                        before_start)
