"""The native loaders as contenders, and the inputs the scale checks need.

What a user who only wants a file in a database picks: the `sqlite3` shell's `.import`,
`psql`'s `\\copy`, pgloader, and DuckDB's `read_csv` into its own file. None of them validates a
record or keeps a ledger; they are the anchors for speed. Each runs as its own process on the
same file; its work time is its whole process (they have no fixed cost worth separating).
Debian's `sqlite3` and `pgloader` are installed with apt-get when the bench runs as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

USERS_COLUMNS = "id, email, name, age, country, signup_date, balance"
SQLITE_DDL = ("create table users (id integer primary key, email text, name text, age integer, "
              "country text, signup_date text, balance real);")
PG_DDL = ("create table {table} (id bigint primary key, email text, name text, age integer, "
          "country text, signup_date date, balance numeric(12, 2))")

DUCKDB = textwrap.dedent("""
    import json, sys, time
    import duckdb
    source, target = sys.argv[1], sys.argv[2]
    start = time.perf_counter()
    connection = duckdb.connect(target)
    connection.execute("create table users as select * from read_csv(?)", [source])
    connection.close()
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")

TO_JSONL = textwrap.dedent("""
    import sys
    import duckdb
    duckdb.execute(f"copy (select * from read_csv('{sys.argv[1]}', all_varchar = true)) "
                   f"to '{sys.argv[2]}' (format json)")
""")


def ensure_tools() -> list[str]:
    """Install Debian's sqlite3 and pgloader when missing and allowed; the tools still missing."""
    wanted = {"sqlite3": "sqlite3", "pgloader": "pgloader", "psql": "postgresql-client"}
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", *(wanted[t] for t in missing)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [tool for tool in wanted if shutil.which(tool) is None]


def extra_inputs(work: Path, source: Path, rows: int, env: dict, bin_dir: Path) -> dict[str, Path]:
    """The same records as JSON Lines, and a users file of the same size with 7 % bad rows."""
    jsonl = source.with_suffix(".jsonl")
    subprocess.run([sys.executable, "-c", TO_JSONL, str(source), str(jsonl)], check=True)
    bad = work / f"users-{rows}-bad.csv"
    subprocess.run([str(bin_dir / "batchyard"), "generate", str(bad), "--rows", str(rows)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return {"jsonl": jsonl, "bad": bad}


def _shell(script: str) -> list[str]:
    """A shell command that prints an empty JSON object at the end (the bench reads the last
    line): its work time is then the process's wall time."""
    return ["sh", "-c", f"{script} >/dev/null && echo '{{}}'"]


def pgloader_file(work: Path, source: Path, pg: str, table: str) -> Path:
    path = work / f"{table}.load"
    path.write_text(textwrap.dedent(f"""\
        LOAD CSV FROM '{source}' ({USERS_COLUMNS})
          INTO {pg}?tablename={table} ({USERS_COLUMNS})
          WITH skip header = 1, fields optionally enclosed by '"', fields terminated by ','
          BEFORE LOAD DO $$ drop table if exists {table}; $$, $$ {PG_DDL.format(table=table)}; $$;
        """))
    return path


def native_contenders(contender, work: Path, source: Path, pg: str | None, missing: list[str]):
    """The native loaders as `contender(name, command, extra_env, work_of)` objects."""
    found = []
    if "sqlite3" not in missing:
        target = work / "sqlite3-shell.db"
        found.append(contender("sqlite3 shell .import", _shell(
            f"sqlite3 {target} '{SQLITE_DDL}' '.import --csv --skip 1 {source} users'"), {}, None))
    found.append(contender("DuckDB read_csv", [sys.executable, "-c", DUCKDB, str(source),
                                                str(work / "duckdb.db")], {}, lambda r: r["work_seconds"]))
    if pg and "psql" not in missing:
        ddl = PG_DDL.format(table="psql_users")
        found.append(contender("psql \\copy → PostgreSQL", _shell(
            f"psql -q -v ON_ERROR_STOP=1 {pg} -c 'drop table if exists psql_users' -c '{ddl}' "
            f"-c \"\\copy psql_users from '{source}' csv header\""), {}, None))
    if pg and "pgloader" not in missing:
        load = pgloader_file(work, source, pg, "pgloader_users")
        found.append(contender("pgloader → PostgreSQL", _shell(f"pgloader --quiet {load}"), {}, None))
    return found
