"""Per-window aggregation: count, sum, min and max of the values of each key."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from batchyard.stream.window import Window


@dataclass(frozen=True)
class Event:
    """One event of a source: `position` is where it sits in its source (a stream id or a row
    id, comparable within the source), `ts` its event time in epoch ms."""

    position: tuple[int, int]
    key: str
    value: float
    ts: int


def aggregate(events: Iterable[Event]) -> list[dict]:
    """Rows sorted by key, so that a window's results are the same however its events arrived."""
    groups: dict[str, dict] = {}
    for event in events:
        if not math.isfinite(event.value):
            raise ValueError(f"event {event.position} of key {event.key!r} has value {event.value}")
        row = groups.get(event.key)
        if row is None:
            groups[event.key] = {"key": event.key, "count": 1, "sum": event.value,
                                 "min": event.value, "max": event.value}
        else:
            row["count"] += 1
            row["sum"] += event.value
            row["min"] = min(row["min"], event.value)
            row["max"] = max(row["max"], event.value)
    return [groups[key] for key in sorted(groups)]


UserFunction = Callable[[Window, list[dict]], list[dict]]


def load_function(spec: str) -> UserFunction:
    """`module:function`, called with the window and its aggregated rows; it returns the rows to
    write (it may add fields, drop rows or change them, but each row keeps its `key`)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"user function must be module:function, got {spec!r}")
    function = getattr(importlib.import_module(module_name), name, None)
    if not callable(function):
        raise ValueError(f"{spec!r} is not a function")
    return function


def apply_function(function: UserFunction | None, window: Window, rows: list[dict]) -> list[dict]:
    if function is None:
        return rows
    out = function(window, [dict(r) for r in rows])
    if not isinstance(out, list) or any(not isinstance(r, dict) or "key" not in r for r in out):
        raise ValueError("a user function must return a list of dicts, each with a 'key'")
    keys = [str(r["key"]) for r in out]
    if len(set(keys)) != len(keys):
        raise ValueError("a user function must return at most one row per key")
    return out
