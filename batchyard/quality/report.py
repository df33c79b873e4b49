"""A batch's profile as markdown: one row per column with a small chart (the top values as
bars, a histogram of numbers as a sparkline), for the Prefect artifact and `batchyard profile`."""

from __future__ import annotations

from typing import Any

BLOCKS = " ▁▂▃▄▅▆▇█"
EIGHTHS = " ▏▎▍▌▋▊▉"


def sparkline(counts: list[int]) -> str:
    """`▁▃▇█▅▂`: a histogram in one line of text."""
    peak = max(counts) if counts else 0
    if not peak:
        return ""
    return "".join(BLOCKS[0 if not c else max(1, round(8 * c / peak))] for c in counts)


def bars(top: list, rows: int, width: int = 10) -> str:
    """`UA 18% ██████████ · B6 16% ████████▉`: the top values and their share."""
    if not top or not rows:
        return ""
    peak = top[0][1]
    parts = []
    for value, count in top[:3]:
        filled = width * count / peak
        bar = "█" * int(filled) + EIGHTHS[round(8 * (filled % 1)) % 8].strip()
        parts.append(f"{_text(value)} {count / rows:.0%} {bar}")
    return " · ".join(parts)


def _text(value: Any, limit: int = 24) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render_profile(profile: dict, batch_id: str, table: str) -> str:
    """The markdown page of a batch's profile."""
    rows = profile["rows"]
    lines = [f"# Profile of batch {batch_id} (table `{table}`)", "",
             f"{rows:,} records loaded or to load, {profile['rejected']:,} rejected, in "
             f"{profile['chunks']} chunk(s). Distinct counts marked ≈ are estimates; top values "
             "of a column with many values are approximate.", "",
             "| column | type | nulls | distinct | min | max | rejects | chart |",
             "|---|---|---:|---:|---|---|---:|---|"]
    for name, c in profile["columns"].items():
        distinct = f"{c['distinct']:,}" if c["distinct_exact"] else f"≈{c['distinct']:,}"
        if c.get("histogram"):
            h = c["histogram"]
            chart = f"`{sparkline(h['counts'])}` {_number(h['low'])} .. {_number(h['high'])}"
        else:
            chart = bars(c.get("top") or [], rows)
        lines.append(f"| {name} | {c['kind']} | {c['nulls']:,} | {distinct} | "
                     f"{_text(_value(c['min']))} | {_text(_value(c['max']))} | {c['rejects']:,} | "
                     f"{chart} |")
    if profile.get("record_rejects"):
        lines += ["", f"{profile['record_rejects']:,} record(s) rejected as a whole (not one "
                      "field: a ragged row, an invalid line, a NUL byte)."]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    return "" if value is None else _number(value) if isinstance(value, float) else str(value)


def _number(value: float) -> str:
    return f"{value:.6g}"


def batch_profile(connection, batch_id: str) -> dict | None:
    """The merged profile of a batch's committed chunks, or None when none has one."""
    from batchyard.quality.profile import merge_profiles
    from batchyard.quality.store import read_chunk_profiles

    profiles = read_chunk_profiles(connection, batch_id)
    return merge_profiles(profiles) if profiles else None
