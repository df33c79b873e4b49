"""One window, start to finish: read, aggregate, commit with the watermark, acknowledge."""

from __future__ import annotations

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

    def as_dict(self) -> dict:
        return asdict(self)


def owed_window(sink: Sink, job: str, scheduled_ms: int, size_ms: int, lateness_ms: int) -> Window:
    state = sink.state(job)
    return next_window(state.watermark if state else None, scheduled_ms, size_ms, lateness_ms)


def process_window(source: Source, sink: Sink, job: str, window: Window, now_ms: int,
                   function: UserFunction | None = None) -> WindowResult:
    """Acknowledge only after the commit: a crash in between re-reads the events, and the
    repeated commit of a window behind the watermark is a no-op."""
    state = sink.state(job)
    seen = parse_position(state.position) if state else (0, 0)
    fetched = source.fetch(window, seen)
    rows = apply_function(function, window, aggregate(fetched.events))
    stats = WindowStats(len(fetched.events), len(fetched.late), fetched.invalid)
    committed = sink.commit(job, window, rows, stats, format_position(fetched.position))
    source.ack(fetched)
    return WindowResult(window.start, window.end, stats.events_in, len(rows), stats.late,
                        stats.invalid, committed, round((now_ms - window.end) / 1000, 3))
