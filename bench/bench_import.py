"""Side-by-side import benchmark on one generated users file, in one run.

    ./dev bench --rows 1000000

(a) `batchyard import` into SQLite against an already running Prefect server (started here),
(b) the same in ephemeral mode (no server configured: Prefect starts a temporary one),
(c) pandas `read_csv(chunksize)` + `to_sql` into SQLite, no validation,
(d) plain `sqlite3.executemany` of already-parsed rows in one transaction (the floor).

Each runs in its own process; we record the process's wall time, the time of the work itself
(batchyard: the batch's duration in the ledger; the others: their load loop) and the peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent

PANDAS = textwrap.dedent("""
    import json, sqlite3, sys, time
    import pandas as pd
    source, target = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    connection = sqlite3.connect(target)
    for chunk in pd.read_csv(source, chunksize=50_000):
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


def run_measured(command: list[str], env: dict) -> dict:
    """Run a command; return wall seconds, its own peak RSS (MiB) and its last stdout line."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode:
            raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{err.read()[-3000:]}")
        last = out.read().strip().splitlines()[-1]
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "result": json.loads(last)}


# The server settings the README recommends for batch workloads: task-run states are written
# in batches instead of one transaction per event (the default), which frees the server's CPU.
SERVER_TUNING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "PREFECT_UI_ENABLED": "false", **SERVER_TUNING}, stdout=subprocess.DEVNULL,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="batchyard-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(work / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(work / "spool"))
    source = work / "users.csv"
    subprocess.run([str(BIN / "batchyard"), "generate", str(source), "--rows", str(args.rows),
                    "--clean"], check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"{args.rows:,} rows, {source.stat().st_size / 2**20:.0f} MiB CSV in {work}")

    results: dict[str, dict] = {}
    server, api = start_server(env)
    try:
        def batchyard(name: str, extra_env: dict) -> None:
            db = work / f"{name}.db"
            results[name] = run_measured(
                [str(BIN / "batchyard"), "import", str(source), "--db", f"sqlite:///{db}",
                 "--chunk-size", str(args.chunk_size), "--json"], {**env, **extra_env})
            summary = results[name]["result"]
            assert summary["success"] == args.rows, summary
            results[name]["work"] = summary["duration_seconds"]

        batchyard("batchyard (server)", {"PREFECT_API_URL": api})
        batchyard("batchyard (ephemeral)", {})
    finally:
        server.terminate()
        server.wait(30)

    for name, script in (("pandas read_csv + to_sql", PANDAS),
                         ("sqlite3 executemany (floor)", EXECUTEMANY)):
        results[name] = run_measured([sys.executable, "-c", script, str(source),
                                      str(work / f"{name.split()[0]}.db")], env)
        results[name]["work"] = results[name]["result"]["work_seconds"]

    baseline = results["batchyard (server)"]
    lines = [
        f"## {args.rows:,} rows, {dt.date.today()}, {platform.machine()} "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        "",
        "| run | work s | rows/s (work) | process wall s | peak RSS MiB | "
        "batchyard (server) speed ÷ this one's (work) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['work']:.2f} | {args.rows / r['work']:,.0f} | {r['wall']:.2f} | "
            f"{r['rss_mib']:.0f} | {r['work'] / baseline['work']:.2f}× |"
        )
    fixed = results["batchyard (ephemeral)"]["wall"] - results["batchyard (ephemeral)"]["work"]
    server_fixed = baseline["wall"] - baseline["work"]
    lines += [
        "",
        f"Fixed cost outside the work: {server_fixed:.1f} s per command with a running server "
        f"(interpreter, imports, flow-run bookkeeping), {fixed:.1f} s in ephemeral mode "
        "(plus starting and stopping the temporary server).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    previous = args.results.read_text() if args.results.exists() else "# Benchmark results\n\n"
    args.results.write_text(previous.rstrip() + "\n\n" + report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
