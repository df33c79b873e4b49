"""How fast a batch goes and when it should be done, from the chunks committed so far."""

from __future__ import annotations

import time


def rows_per_second(rows: int, since: float | None, now: float | None = None) -> float | None:
    """Rows committed per second since `since` (a `time.monotonic()`), None before any."""
    if since is None or rows <= 0:
        return None
    elapsed = (now if now is not None else time.monotonic()) - since
    return rows / elapsed if elapsed > 0 else None


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until the `remaining` rows are in at `rate`; None without a rate."""
    if rate is None or rate <= 0:
        return None
    return max(0, remaining) / rate


def ledger_pace(total: int, processed: int, status: str, attempt: dict | None,
                chunk_rows: list[tuple[int, object]], now) -> dict:
    """Rows/s and ETA of a batch as the ledger has it: the rows of the chunks committed during
    its last attempt, over the time from that attempt's start to its end (or now, while it
    runs); the ETA only for a running batch."""
    if attempt is None:
        return {"rows_per_second": None, "eta_seconds": None}
    start = attempt["started_at"]
    end = attempt.get("finished_at") or now
    rows = sum(n for n, at in chunk_rows if at is not None and at >= start)
    elapsed = (end - start).total_seconds()
    rate = rows / elapsed if rows and elapsed > 0 else None
    eta = eta_seconds(total - processed, rate) if status == "running" else None
    return {"rows_per_second": round(rate, 1) if rate is not None else None,
            "eta_seconds": round(eta, 2) if eta is not None else None}
