"""The benchmark's report: ratios, Prefect's cost, and the targets of issues 6 and 19 checked on a
run's medians (bench/bench_import.py runs the contenders; this only reads their figures)."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Callable
from pathlib import Path

from servers import SERVERS  # bench/servers.py: each server's batchyard contender

SERVER, LOCAL, EPHEMERAL = "batchyard (server)", "batchyard (local server)", "batchyard (ephemeral)"
EPHEMERAL_WHEN_FILED, PANDAS_WHEN_FILED = 7.97, 2.27
"""Whole-process seconds at 1M of ephemeral mode and of pandas when issue 19 was filed."""
EPHEMERAL_BEFORE = PANDAS_WHEN_FILED / EPHEMERAL_WHEN_FILED
CORE, PANDAS_CSV = "batchyard without Prefect", "pandas read_csv + to_sql"
LOCAL_HOME = "prefect-local"
INPUT_MIB: dict[int, dict[str, float]] = {}
"""The size of each input file, per row count, printed beside the spool's peak."""


def ratio(results: dict, ours: str, theirs: str, key: str = "work") -> float | None:
    if ours in results and theirs in results:
        return results[theirs][key] / results[ours][key]
    return None


def prefect_share(results: dict) -> float | None:
    """Prefect's share of the work: the flow against the same chunk functions run without it."""
    if "batchyard (server)" not in results or "batchyard without Prefect" not in results:
        return None
    return 1 - results["batchyard without Prefect"]["work"] / results["batchyard (server)"]["work"]


def prefect_share_per_round(results: dict) -> list[float]:
    """The share of each round on its own (the two runs of a round ran minutes apart at most):
    how far single runs scatter around the medians."""
    flows = results["batchyard (server)"]["all_work"]
    cores = results["batchyard without Prefect"]["all_work"]
    return [1 - core / flow for flow, core in zip(flows, cores, strict=True)]


def report(rows: int, results: dict) -> list[str]:
    base = "batchyard (server)"
    lines = [
        f"#### {rows:,} rows, {dt.date.today()}, {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "",
        "| run | work s | rows/s (work) | process wall s | peak RSS MiB | spool peak MiB | "
        "batchyard's speed ÷ this one's (work) | (wall) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ours = next((ours for server, ours in SERVERS.items() if server in name), base)
        work, wall = ratio(results, ours, name), ratio(results, ours, name, "wall")
        spool = f"{r['spool_mib']:.0f}" if r.get("spool_mib") else ""
        lines.append(
            f"| {name} | {r['work']:.2f} | {rows / r['work']:,.0f} | {r['wall']:.2f} | "
            f"{r['rss_mib']:.0f} | {spool} | {_x(work)} | {_x(wall)} |"
        )
    lines.append("")
    if rows in INPUT_MIB:
        lines.append("Inputs: " + ", ".join(f"{k} {v:,.0f} MiB" for k, v in INPUT_MIB[rows].items())
                     + " (the spool's peak is the largest its directory got during a run; chunk files "
                       "are deleted as their chunks commit).")
    warm = [f"{name} {r['warm_runs']} of {r['runs']}" for name, r in results.items() if r.get("warm_runs")]
    if warm:
        lines.append("Runs forked from a warm process (batchyard/warm.py; the local server's, or "
                     "the one a command against the running server left): "
                     + ", ".join(warm) + "; the others imported Prefect themselves.")
    lines += ratio_lines(results)
    for name in ("batchyard (server)", "batchyard without Prefect"):
        if f"{name}, baseline" in results:
            lines.append(
                f"{name} against the same code before the change (baseline): "
                f"{_x(ratio(results, name, name + ', baseline', 'wall'))} on the whole process, "
                f"{_x(ratio(results, name, name + ', baseline'))} on the work (above 1: faster now).")
    share = prefect_share(results)
    if share is not None:
        rounds = ", ".join(f"{s:.0%}" for s in prefect_share_per_round(results))
        lines.append(f"Prefect's share of the work time: {share:.1%} (the flow against the same "
                     f"chunk functions run without Prefect; single rounds: {rounds}).")
    return lines + [""]


def cost(results: dict, ours: str, key: str) -> float | None:
    """Prefect's cost as a ratio: our time ÷ the same chunk functions' time without Prefect."""
    if ours in results and CORE in results:
        return results[ours][key] / results[CORE][key]
    return None


def fixed(results: dict, name: str) -> float | None:
    return results[name]["wall"] - results[name]["work"] if name in results else None


def ratio_lines(results: dict) -> list[str]:
    """The ratios issue 19 asks for, whole process first, each mode on its own line."""
    lines = []
    for name in (LOCAL, SERVER, EPHEMERAL):
        if name not in results:
            continue
        lines.append(
            f"- {name}: whole process {_x(ratio(results, name, PANDAS_CSV, 'wall'))} pandas "
            f"({results[name]['wall']:.2f} s); Prefect's cost {_x(cost(results, name, 'wall'))} on the "
            f"whole process, {_x(cost(results, name, 'work'))} on the work; fixed cost per command "
            f"{fixed(results, name):.2f} s.")
    return lines + [""] if lines else []


def _checker(lines: list[str]) -> Callable:
    """A function that adds one row of a targets table to `lines` (none for a missing value)."""

    def check(label: str, value: float | None, ok: Callable[[float], bool], fmt="{:.2f}×") -> None:
        if value is not None:
            lines.append(f"| {label} | {fmt.format(value)} | {'yes' if ok(value) else 'no'} |")

    return check


def targets_19(all_results: dict[int, dict]) -> list[str]:
    """Issue 19's targets, checked on this run's figures."""
    lines = ["| target | measured | met |", "|---|---:|---|"]
    check = _checker(lines)

    for rows, results in all_results.items():
        n = f"{rows / 1e6:g}M"
        least = 1.5 if rows >= 5_000_000 else 1.0
        check(f"{n}, local server up, whole process: ≥ {least:g}× pandas",
              ratio(results, LOCAL, PANDAS_CSV, "wall"), lambda v, least=least: v >= least)
        check(f"{n}, running server, whole process: ≥ 1.2× pandas",
              ratio(results, SERVER, PANDAS_CSV, "wall"), lambda v: v >= 1.2)
        for name in (LOCAL, SERVER):
            short = name.split("(")[1].rstrip(")")
            check(f"{n}, {short}: Prefect's cost, whole process ≤ 1.25×", cost(results, name, "wall"),
                  lambda v: v <= 1.25)
            check(f"{n}, {short}: Prefect's cost, work ≤ 1.10×", cost(results, name, "work"),
                  lambda v: v <= 1.10)
            check(f"{n}, {short}: fixed cost per command ≤ 1.2 s", fixed(results, name),
                  lambda v: v <= 1.2, "{:.2f} s")
        if EPHEMERAL in results and rows == 1_000_000:
            check(f"{n}, ephemeral (the fallback), whole process: no slower than when issue 19 was "
                  f"filed, as a ratio to pandas in the same run (then {PANDAS_WHEN_FILED:g} s ÷ "
                  f"{EPHEMERAL_WHEN_FILED:g} s: "
                  f"{EPHEMERAL_BEFORE:.2f}×)", ratio(results, EPHEMERAL, PANDAS_CSV, "wall"),
                  lambda v: v >= EPHEMERAL_BEFORE)
    return lines + [""]


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def targets(all_results: dict[int, dict]) -> list[str]:
    """The targets of issues 6, 16 and 18, checked on this run's figures."""
    lines = ["| target | measured | met |", "|---|---:|---|"]
    check = _checker(lines)
    pg_ours = SERVERS["PostgreSQL"]
    for rows, results in all_results.items():
        n = f"{rows / 1e6:g}M"
        for key in ("work", "wall"):
            check(f"{n}, server, {key}: ≥ 1.2× pandas to_sql",
                  ratio(results, SERVER, PANDAS_CSV, key), lambda v: v >= 1.2)
        check(f"{n}: PostgreSQL ≥ 0.9× raw COPY (work)",
              ratio(results, pg_ours, "raw COPY → PostgreSQL"), lambda v: v >= 0.9)
        check(f"{n}: MariaDB ≥ 0.7× raw LOAD DATA LOCAL INFILE (work)",
              ratio(results, SERVERS["MariaDB"], "raw LOAD DATA LOCAL INFILE → MariaDB"), lambda v: v >= 0.7)
        for mode in (LOCAL, SERVER):
            check(f"{n}: SQLite, {mode}, whole process ≥ 0.75× the sqlite3 shell's .import",
                  ratio(results, mode, "sqlite3 shell .import", "wall"), lambda v: v >= 0.75)
        check(f"{n}: 7 % bad rows cost ≤ 1.2× a clean file (work)",
              ratio(results, SERVER, "batchyard (server, 7 % bad rows)"), lambda v: v <= 1.2)
        check(f"{n}: Prefect's share of the work < 10 %", prefect_share(results),
              lambda v: v < 0.10, "{:.1%}")
    sizes = sorted(all_results)
    if len(sizes) > 1:
        small, large = all_results[sizes[0]], all_results[sizes[-1]]
        span = f"{sizes[-1] / 1e6:g}M ÷ {sizes[0] / 1e6:g}M"
        for mode in (SERVER, pg_ours):
            if mode in small and mode in large:
                per_row = (large[mode]["work"] / sizes[-1]) / (small[mode]["work"] / sizes[0])
                check(f"time per row {span}, {mode}: within 10 %", per_row, lambda v: v <= 1.10)
        for mode in (SERVER, "batchyard (server, JSON Lines)", "batchyard (server, Parquet)", LOCAL,
                     EPHEMERAL):
            if mode in small and mode in large:
                check(f"peak RSS {span}, {mode}", large[mode]["rss_mib"] / small[mode]["rss_mib"],
                      lambda v: v <= 1.25)
    return lines + [""]


def with_run(results: Path, text: str) -> str:
    """RESULTS.md with this run added at the end of its "## Runs" section (before the
    "## Earlier runs" kept below it), or at the end when there is no such section."""
    previous = results.read_text() if results.exists() else "# Benchmark results\n\n## Runs\n"
    head, marker, tail = previous.partition("\n## Earlier runs")
    return f"{head.rstrip()}\n\n{text}\n{marker}{tail}" if marker else f"{previous.rstrip()}\n\n{text}\n"
