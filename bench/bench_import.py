"""Side-by-side import benchmark on one generated users file per size, in one run.

    ./dev bench                        # 1,000,000 rows
    ./dev bench --rows 1000000 5000000 # and the memory check at 5M

For each size, each contender runs in its own process on the same file, once per round,
for --repeat rounds (medians are reported):

SQLite: batchyard against an already running Prefect server (started here, as deployments
have one), on the CSV and on the same data as Parquet; batchyard in ephemeral mode; batchyard's
chunk functions without Prefect (to measure Prefect's share); pandas `read_csv(chunksize)` +
`to_sql`; dlt; plain `sqlite3.executemany` of already-parsed rows (the floor).
PostgreSQL (when one answers at --pg-url): batchyard against the server, and a raw `COPY`.
MariaDB (when one answers at --mariadb-url): batchyard against the server, and a raw
`LOAD DATA LOCAL INFILE` of the CSV.

Each row records the process's wall time, the time of the work itself (batchyard: the batch's
duration in its ledger; the others: their load) and the process's peak RSS. Results are
appended to bench/RESULTS.md with the targets of issues 6 and 18 checked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import native  # noqa: I001 (bench/ is this script's directory)
from servers import (  # bench/servers.py: the database servers' contenders
    BENCH_DB,
    COPY,
    LOAD_DATA,
    SERVERS,
    USERS_DDL,
    empty_server_tables,
    mariadb_database,
    postgres_database,
)

from batchyard.demo import expected_counts
from batchyard.prefect_runtime import RECORDER_IN_BATCHES  # what the README recommends
from batchyard.sizing import DEFAULT_CHUNK_SIZE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MARIADB_URL = "mariadb://root@127.0.0.1:3306/test"

PANDAS = textwrap.dedent("""
    import json, sqlite3, sys, time
    import pandas as pd
    import pyarrow.parquet as pq
    source, target = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    connection = sqlite3.connect(target)
    if source.endswith(".parquet"):
        chunks = (b.to_pandas() for b in pq.ParquetFile(source).iter_batches(50_000))
    else:
        chunks = pd.read_csv(source, chunksize=50_000)
    for chunk in chunks:
        chunk.to_sql("users", connection, if_exists="append", index=False)
    connection.commit()
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")

EXECUTEMANY = textwrap.dedent("""
    import csv, json, sqlite3, sys, time
    source, target = sys.argv[1], sys.argv[2]
    with open(source, newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [tuple(r) for r in reader]
    start = time.perf_counter()
    connection = sqlite3.connect(target)
    connection.execute("create table users (id integer primary key, email text, name text, "
                       "age integer, country text, signup_date text, balance real)")
    connection.executemany("insert into users values (?,?,?,?,?,?,?)", rows)
    connection.commit()
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")

# dlt at its fastest: Arrow record batches straight from pyarrow's CSV reader (dlt's own advice
# for speed), written to SQLite through its SQLAlchemy destination.
DLT = textwrap.dedent("""
    import json, sys, time
    import dlt
    import pyarrow.csv as pv
    source, target, work = sys.argv[1], sys.argv[2], sys.argv[3]
    start = time.perf_counter()

    @dlt.resource(name="users", write_disposition="append")
    def users():
        yield from pv.open_csv(source)

    pipeline = dlt.pipeline("bench", destination=dlt.destinations.sqlalchemy(f"sqlite:///{target}"),
                            dataset_name="main", pipelines_dir=work)
    info = pipeline.run(users(), loader_file_format="parquet")
    info.raise_on_failed_jobs()
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")



def _directory_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def run_measured(command: list[str], env: dict) -> dict:
    """Run a command; return wall seconds, its own peak RSS (MiB), the largest size its spool
    (BATCHYARD_WORK_DIR) reached (sampled every 0.2 s) and its last stdout line."""
    spool = Path(env.get("BATCHYARD_WORK_DIR", "/nonexistent"))
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _directory_bytes(spool))

    sampler = threading.Thread(target=sample, daemon=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=ROOT)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        code = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if code:
            raise SystemExit(f"{' '.join(command[:3])} failed ({code}):\n{err.read()[-3000:]}")
        last = out.read().strip().splitlines()[-1]
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "result": json.loads(last),
            "spool_mib": peak[0] / 2**20}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "PREFECT_UI_ENABLED": "false", **RECORDER_IN_BATCHES}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return server, api
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the Prefect server did not become healthy in 120 s")


TO_PARQUET = textwrap.dedent("""
    import sys
    import pyarrow.csv as pv
    import pyarrow.parquet as pq
    table = pv.read_csv(sys.argv[1], convert_options=pv.ConvertOptions(
        column_types={"signup_date": "string"}))
    pq.write_table(table, sys.argv[2], row_group_size=100_000)
""")


def make_inputs(work: Path, rows: int, env: dict) -> tuple[Path, Path]:
    """The users CSV from the generator, and the same records as Parquet. Both are made in
    child processes: Linux hands a parent's peak RSS down to the children it starts, so this
    process must stay small for the children's peaks to be their own."""
    source = work / f"users-{rows}.csv"
    subprocess.run([str(BIN / "batchyard"), "generate", str(source), "--rows", str(rows),
                    "--clean"], check=True, env=env, stdout=subprocess.DEVNULL)
    parquet = source.with_suffix(".parquet")
    subprocess.run([sys.executable, "-c", TO_PARQUET, str(source), str(parquet)], check=True)
    return source, parquet


@dataclass
class Contender:
    name: str
    command: list[str]
    extra_env: dict = field(default_factory=dict)
    work_of: Callable[[dict], float] | None = lambda result: result["work_seconds"]


def contenders(rows: int, args, work: Path, source: Path, parquet: Path, api: str,
               pg: str | None, maria: str | None, extra: dict[str, Path]) -> list[Contender]:
    chunking = ["--chunk-size", str(args.chunk_size), "--max-parallel", str(args.max_parallel)]
    server = {"PREFECT_API_URL": api}

    def batchyard(name: str, file: Path, db: str, extra_env: dict | None = None,
                  expected: dict | None = None) -> Contender:
        return Contender(name, [str(BIN / "batchyard"), "import", str(file), "--db", db, *chunking,
                                "--table", f"users_{rows}", "--json"], extra_env or {},
                         lambda summary: checked(summary, rows, expected)["duration_seconds"])

    chosen = [
        batchyard("batchyard (server)", source, f"sqlite:///{work / 'server.db'}", server),
        batchyard("batchyard (server, Parquet)", parquet, f"sqlite:///{work / 'parquet.db'}", server),
        batchyard("batchyard (server, JSON Lines)", extra["jsonl"], f"sqlite:///{work / 'jsonl.db'}",
                  server),
        batchyard("batchyard (server, 7 % bad rows)", extra["bad"], f"sqlite:///{work / 'bad.db'}",
                  server, expected_counts(rows)),
        batchyard("batchyard (ephemeral)", source, f"sqlite:///{work / 'ephemeral.db'}"),
        Contender("batchyard without Prefect",
                  [sys.executable, str(HERE / "run_core.py"), str(source),
                   f"sqlite:///{work / 'core.db'}", str(args.chunk_size), str(args.max_parallel)],
                  work_of=lambda summary: checked(summary, rows)["duration_seconds"]),
        Contender("pandas read_csv + to_sql",
                  [sys.executable, "-c", PANDAS, str(source), str(work / "pandas.db")]),
        Contender("pandas read_parquet + to_sql",
                  [sys.executable, "-c", PANDAS, str(parquet), str(work / "pandas-parquet.db")]),
        Contender("dlt (Arrow → SQLite)",
                  [sys.executable, "-c", DLT, str(source), str(work / "dlt.db"), str(work / "dlt")]),
        Contender("sqlite3 executemany (floor)",
                  [sys.executable, "-c", EXECUTEMANY, str(source), str(work / "executemany.db")]),
    ]
    if args.baseline:
        old = {"PYTHONPATH": str(args.baseline), **server}
        chosen += [
            Contender("batchyard (server), baseline",
                      [sys.executable, "-c", RUN_CLI, "import", str(source), "--db",
                       f"sqlite:///{work / 'baseline.db'}", *chunking, "--table", f"users_{rows}", "--json"],
                      old, lambda summary: checked(summary, rows)["duration_seconds"]),
            Contender("batchyard without Prefect, baseline",
                      [sys.executable, str(args.baseline / "bench" / "run_core.py"), str(source),
                       f"sqlite:///{work / 'baseline-core.db'}", str(args.chunk_size),
                       str(args.max_parallel)],
                      {"PYTHONPATH": str(args.baseline)},
                      work_of=lambda summary: checked(summary, rows)["duration_seconds"]),
        ]
    if pg:
        chosen += [
            batchyard("batchyard → PostgreSQL (server)", source, pg, server),
            Contender("raw COPY → PostgreSQL",
                      [sys.executable, "-c", COPY, str(source), pg, USERS_DDL]),
        ]
    if maria:
        chosen += [
            batchyard("batchyard → MariaDB (server)", source, maria, server),
            Contender("raw LOAD DATA LOCAL INFILE → MariaDB",
                      [sys.executable, "-c", LOAD_DATA, str(source), maria, USERS_DDL]),
        ]
    chosen += native.native_contenders(Contender, work, source, pg, native.ensure_tools())
    return [c for c in chosen if not args.only or any(word in c.name for word in args.only)]


INPUT_MIB: dict[int, dict[str, float]] = {}
"""The size of each input file, per row count, printed beside the spool's peak."""

RUN_CLI = "import sys; from batchyard.cli import main; main()"
"""The `batchyard` command of whichever checkout PYTHONPATH puts first (the baseline's)."""


def bench_size(rows: int, args, work: Path, env: dict, api: str, pg: str | None,
               maria: str | None) -> dict:
    """Every contender once per round, --repeat rounds: the machine's speed drifts over minutes
    (here by up to 2x in an afternoon), and taking all the runs of one contender before the next
    put that drift into the ratios. Each run starts on an empty target and a quiet machine."""
    source, parquet = make_inputs(work, rows, env)
    extra = native.extra_inputs(work, source, rows, env, BIN)
    print(f"{rows:,} rows: {source.stat().st_size / 2**20:.0f} MiB CSV, "
          f"{parquet.stat().st_size / 2**20:.0f} MiB Parquet, "
          f"{extra['jsonl'].stat().st_size / 2**20:.0f} MiB JSON Lines")
    INPUT_MIB[rows] = {"CSV": source.stat().st_size / 2**20, "Parquet": parquet.stat().st_size / 2**20,
                       "JSON Lines": extra["jsonl"].stat().st_size / 2**20}
    chosen = contenders(rows, args, work, source, parquet, api, pg, maria, extra)
    runs: dict[str, list[dict]] = {c.name: [] for c in chosen}
    for round_ in range(1, args.repeat + 1):
        print(f"  round {round_}:", end="", flush=True)
        for contender in chosen:
            empty_targets(work, pg, maria, rows)
            wait_for_quiet()
            run = run_measured(contender.command, {**env, **contender.extra_env})
            run["work"] = contender.work_of(run["result"]) if contender.work_of else run["wall"]
            runs[contender.name].append(run)
            print(f" [{contender.name}] {run['work']:.2f}", end="", flush=True)
        print()
    empty_targets(work, pg, maria, rows)
    results = {}
    for name, done in runs.items():
        results[name] = {"work": statistics.median(r["work"] for r in done),
                         "wall": statistics.median(r["wall"] for r in done),
                         "rss_mib": max(r["rss_mib"] for r in done), "runs": len(done),
                         "spool_mib": max(r["spool_mib"] for r in done),
                         "all_work": [r["work"] for r in done]}
        print(f"  {name}: {results[name]['work']:.2f} s work "
              f"(runs {', '.join(f'{w:.2f}' for w in results[name]['all_work'])}), "
              f"{results[name]['wall']:.2f} s wall, {results[name]['rss_mib']:.0f} MiB")
    return results


def _busy_and_total() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(busy_below: float = 0.1, timeout: float = 30.0) -> None:
    """Start each run on a quiet machine: the Prefect server records the previous flow run's
    events for a few seconds after it ends, and the page cache still holds hundreds of MiB of
    the previous run's database (or the generated inputs) to write back; whichever contender
    ran next would pay for them. Writes back dirty pages, then waits until the machine is less
    than `busy_below` busy over half a second (Linux)."""
    os.sync()
    if not Path("/proc/stat").exists():
        return
    deadline = time.monotonic() + timeout
    busy, total = _busy_and_total()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now_busy, now_total = _busy_and_total()
        if now_total > total and (now_busy - busy) / (now_total - total) < busy_below:
            return
        busy, total = now_busy, now_total


def empty_targets(work: Path, pg: str | None, maria: str | None, rows: int) -> None:
    """Every run loads into an empty target, as the first import of a file does."""
    for path in work.glob("*.db*"):
        path.unlink()
    shutil.rmtree(work / "dlt", ignore_errors=True)
    empty_server_tables(pg, maria, f"users_{rows}")


def warm_up(work: Path, env: dict, api: str) -> None:
    """A deployment's server has run flows before: the first flow run on a new server also
    creates the flow and the server is still settling, which is not the import's cost."""
    source = work / "warm-up.csv"
    subprocess.run([str(BIN / "batchyard"), "generate", str(source), "--rows", "1000"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([str(BIN / "batchyard"), "import", str(source), "--db",
                    f"sqlite:///{work / 'warm-up.sqlite'}", "--json"], check=True,
                   env={**env, "PREFECT_API_URL": api}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def checked(summary: dict, rows: int, expected: dict | None = None) -> dict:
    """The summary of a run that loaded exactly what it had to (every row of a clean file)."""
    want = expected or {"total": rows, "success": rows}
    if summary["status"] != "completed" or any(summary[k] != v for k, v in want.items()):
        raise SystemExit(f"batchyard did not load what it should ({want}): {summary}")
    return summary


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
    if base in results and "batchyard (ephemeral)" in results:
        eph = results["batchyard (ephemeral)"]
        lines.append(
            f"Fixed cost outside the work: {results[base]['wall'] - results[base]['work']:.1f} s "
            f"per command with a running server, {eph['wall'] - eph['work']:.1f} s in ephemeral "
            "mode (which also starts and stops its temporary server).")
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


def _x(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}×"


def targets(all_results: dict[int, dict]) -> list[str]:
    """The targets of issues 6 and 16, checked on this run's figures."""
    lines = ["| target | measured | met |", "|---|---:|---|"]

    def check(label: str, value: float | None, ok: Callable[[float], bool], fmt="{:.2f}×"):
        if value is not None:
            lines.append(f"| {label} | {fmt.format(value)} | {'yes' if ok(value) else 'no'} |")

    pg_ours = "batchyard → PostgreSQL (server)"
    for rows, results in all_results.items():
        n = f"{rows / 1e6:g}M"
        for key in ("work", "wall"):
            check(f"{n}, server, {key}: ≥ 1.2× pandas to_sql",
                  ratio(results, "batchyard (server)", "pandas read_csv + to_sql", key), lambda v: v >= 1.2)
        check(f"{n}: PostgreSQL ≥ 0.9× raw COPY (work)",
              ratio(results, pg_ours, "raw COPY → PostgreSQL"), lambda v: v >= 0.9)
        check(f"{n}: SQLite, whole process ≥ 0.75× the sqlite3 shell's .import",
              ratio(results, "batchyard (server)", "sqlite3 shell .import", "wall"), lambda v: v >= 0.75)
        check(f"{n}: 7 % bad rows cost ≤ 1.2× a clean file (work)",
              ratio(results, "batchyard (server)", "batchyard (server, 7 % bad rows)"), lambda v: v <= 1.2,
              "{:.2f}×")
        check(f"{n}: MariaDB ≥ 0.7× raw LOAD DATA LOCAL INFILE (work)",
              ratio(results, "batchyard → MariaDB (server)", "raw LOAD DATA LOCAL INFILE → MariaDB"),
              lambda v: v >= 0.7)
        check(f"{n}: Prefect's share of the work < 10 %", prefect_share(results),
              lambda v: v < 0.10, "{:.1%}")
    sizes = sorted(all_results)
    if len(sizes) > 1:
        small, large = all_results[sizes[0]], all_results[sizes[-1]]
        span = f"{sizes[-1] / 1e6:g}M ÷ {sizes[0] / 1e6:g}M"
        for mode in ("batchyard (server)", pg_ours):
            if mode in small and mode in large:
                per_row = (large[mode]["work"] / sizes[-1]) / (small[mode]["work"] / sizes[0])
                check(f"time per row {span}, {mode}: within 10 %", per_row, lambda v: v <= 1.10)
        for mode in ("batchyard (server)", "batchyard (server, JSON Lines)", "batchyard (server, Parquet)",
                     "batchyard (ephemeral)"):
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


def describe_checkout(path: Path) -> str:
    found = subprocess.run(["git", "-C", str(path), "log", "-1", "--format=%h %s"],
                           capture_output=True, text=True)
    return f"`{found.stdout.strip()[:80]}`" if found.returncode == 0 else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--max-parallel", type=int, default=10)
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL server to create "
                        f"the {BENCH_DB} database on; '' to skip")
    parser.add_argument("--mariadb-url", default=MARIADB_URL, help="MariaDB server to create "
                        f"the {BENCH_DB} database on; '' to skip")
    parser.add_argument("--repeat", type=int, default=1, help="runs per contender (medians)")
    parser.add_argument("--only", nargs="*", help="run only contenders whose name has one of "
                        "these words")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--baseline", type=Path, help="a checkout of an earlier commit (git "
                        "worktree add DIR REV): its batchyard runs beside this one, interleaved")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batchyard-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(work / "spool"))
    pg = postgres_database(args.pg_url) if args.pg_url else None
    maria = mariadb_database(args.mariadb_url) if args.mariadb_url else None
    server, api = start_server(env)
    all_results: dict[int, dict] = {}
    try:
        warm_up(work, env, api)
        for rows in args.rows:
            all_results[rows] = bench_size(rows, args, work, env, api, pg, maria)
    finally:
        server.terminate()
        server.wait(30)

    lines = [f"### Run of {dt.datetime.now():%Y-%m-%d %H:%M}: "
             f"--rows {' '.join(map(str, args.rows))} --chunk-size {args.chunk_size} "
             f"--repeat {args.repeat} (medians)", ""]
    if args.baseline:
        lines += [f"Baseline: {describe_checkout(args.baseline)}; this run: {describe_checkout(ROOT)}.", ""]
    for rows, results in all_results.items():
        lines += report(rows, results)
    lines += ["Targets (issues 6 and 16):", ""] + targets(all_results)
    text = "\n".join(lines)
    print(text)
    args.results.write_text(with_run(args.results, text))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
