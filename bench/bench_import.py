"""Side-by-side import benchmark on one generated users file per size, in one run.

    ./dev bench                        # 1,000,000 rows
    ./dev bench --rows 1000000 5000000 # and the memory check at 5M

For each size, each contender runs in its own process on the same file, once per round,
for --repeat rounds (medians are reported):

SQLite: batchyard against an already running Prefect server (started here, as deployments
have one, with PREFECT_API_URL set), on the CSV and on the same data as Parquet; batchyard with
its local server up (`batchyard server start`, no PREFECT_API_URL: what a user's second command
gets); batchyard in ephemeral mode (BATCHYARD_LOCAL_SERVER=off); batchyard's chunk functions
without Prefect (to measure Prefect's cost); pandas `read_csv(chunksize)` + `to_sql`; dlt;
plain `sqlite3.executemany` of already-parsed rows (the floor).
PostgreSQL (when one answers at --pg-url): batchyard against the server, and a raw `COPY`.
MariaDB (when one answers at --mariadb-url): batchyard against the server, and a raw
`LOAD DATA LOCAL INFILE` of the CSV.

Each row records the process's wall time, the time of the work itself (batchyard: the batch's
duration in its ledger; the others: their load) and the process's peak RSS. Results are
appended to bench/RESULTS.md, dated, with the targets of issues 6, 16, 18 and 19 checked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
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
from bench_report import EPHEMERAL, INPUT_MIB, LOCAL, LOCAL_HOME, report, targets, targets_19, with_run
from servers import (  # bench/servers.py: the database servers' contenders
    BENCH_DB,
    COPY,
    LOAD_DATA,
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
    # A command the warm process ran (batchyard/warm.py) used that process's child, not the one
    # started here: its client writes the child's resource use to this file.
    warm_report = Path(tempfile.mkdtemp()) / "warm.json"
    env = {**env, "BATCHYARD_WARM_REPORT": str(warm_report)}
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
    rss_kib, warm = usage.ru_maxrss, warm_report.exists()
    if warm:
        rss_kib = max(rss_kib, json.loads(warm_report.read_text())["maxrss_kib"])
        warm_report.unlink()
    warm_report.parent.rmdir()
    return {"wall": wall, "rss_mib": rss_kib / 1024, "result": json.loads(last),
            "spool_mib": peak[0] / 2**20, "warm": warm}


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
    local = {"PREFECT_HOME": str(work / LOCAL_HOME), "BATCHYARD_LOCAL_SERVER": "start"}

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
        batchyard(LOCAL, source, f"sqlite:///{work / 'local.db'}", local),
        batchyard(EPHEMERAL, source, f"sqlite:///{work / 'ephemeral.db'}", {"BATCHYARD_LOCAL_SERVER": "off"}),
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
                         "all_work": [r["work"] for r in done],
                         "warm_runs": sum(r["warm"] for r in done)}
        print(f"  {name}: {results[name]['work']:.2f} s work "
              f"(runs {', '.join(f'{w:.2f}' for w in results[name]['all_work'])}), "
              f"{results[name]['wall']:.2f} s wall, {results[name]['rss_mib']:.0f} MiB"
              + (f", {results[name]['warm_runs']} of {len(done)} runs in the warm process"
                 if results[name]["warm_runs"] else ""))
    return results


def _busy_and_total() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # idle + iowait, and niced time: work at nice 19 (other engineers' test suites here) gets
    # about 1/70 of a core's share against a contender, so it does not hold a run back.
    idle = fields[3] + fields[4] + fields[1]
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


def local_env(env: dict, work: Path) -> dict:
    return {**env, "PREFECT_HOME": str(work / LOCAL_HOME), "BATCHYARD_LOCAL_SERVER": "start"}


def start_local_server(env: dict, work: Path) -> None:
    """batchyard's own local server, as `batchyard server start` (or a first command) leaves it."""
    subprocess.run([str(BIN / "batchyard"), "server", "start"], check=True, env=local_env(env, work),
                   stdout=subprocess.DEVNULL)


def stop_local_server(env: dict, work: Path) -> None:
    """The local server and its warm process, and the warm process the running server's
    commands left (`batchyard server stop` of each Prefect home)."""
    for server_env in (local_env(env, work), env):
        subprocess.run([str(BIN / "batchyard"), "server", "stop"], env=server_env,
                       stdout=subprocess.DEVNULL)


def warm_up(work: Path, env: dict, api: str) -> None:
    """A deployment's server has run flows before: the first flow run on a new server also
    creates the flow and the server is still settling, which is not the import's cost. The
    same for the local server, which a user's earlier commands have used. Each leaves its warm
    process, as a user's earlier command does (the first command against a server runs cold)."""
    source = work / "warm-up.csv"
    subprocess.run([str(BIN / "batchyard"), "generate", str(source), "--rows", "1000"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    for server_env in ({**env, "PREFECT_API_URL": api}, local_env(env, work)):
        subprocess.run([str(BIN / "batchyard"), "import", str(source), "--db",
                        f"sqlite:///{work / 'warm-up.sqlite'}", "--json"], check=True,
                       env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from batchyard import warm

    home = Path(env["PREFECT_HOME"])
    deadline = time.monotonic() + 120
    while not warm.listening(home, api) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not warm.listening(home, api):  # the server contender would then run cold: say so
        print(f"warning: no warm process for {api} after 120 s; the server's runs start cold",
              file=sys.stderr)


def checked(summary: dict, rows: int, expected: dict | None = None) -> dict:
    """The summary of a run that loaded exactly what it had to (every row of a clean file)."""
    want = expected or {"total": rows, "success": rows}
    if summary["status"] != "completed" or any(summary[k] != v for k, v in want.items()):
        raise SystemExit(f"batchyard did not load what it should ({want}): {summary}")
    return summary


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
    # A bench stopped with SIGTERM still stops the servers it started (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    work = Path(tempfile.mkdtemp(prefix="batchyard-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(work / "spool"))
    pg = postgres_database(args.pg_url) if args.pg_url else None
    maria = mariadb_database(args.mariadb_url) if args.mariadb_url else None
    server, api = start_server(env)
    all_results: dict[int, dict] = {}
    try:
        start_local_server(env, work)
        warm_up(work, env, api)
        for rows in args.rows:
            all_results[rows] = bench_size(rows, args, work, env, api, pg, maria)
    finally:
        server.terminate()
        server.wait(30)
        stop_local_server(env, work)

    lines = [f"### Run of {dt.datetime.now():%Y-%m-%d %H:%M}: "
             f"--rows {' '.join(map(str, args.rows))} --chunk-size {args.chunk_size} "
             f"--repeat {args.repeat} (medians)", ""]
    if args.baseline:
        lines += [f"Baseline: {describe_checkout(args.baseline)}; this run: {describe_checkout(ROOT)}.", ""]
    for rows, results in all_results.items():
        lines += report(rows, results)
    lines += ["Targets (issues 6, 16 and 18):", ""] + targets(all_results)
    lines += ["Targets (issue 19: whole-process ratios first; Prefect's cost as ratios to the same "
              "chunk functions without it):", ""] + targets_19(all_results)
    text = "\n".join(lines)
    print(text)
    args.results.write_text(with_run(args.results, text))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
