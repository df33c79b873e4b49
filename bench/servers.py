"""The database servers' side of the benchmark: a fresh database on each server that answers,
the raw loads batchyard is compared with (PostgreSQL's COPY, MariaDB's LOAD DATA LOCAL
INFILE), and emptying their tables between runs."""

from __future__ import annotations

import textwrap

BENCH_DB = "batchyard_bench"

USERS_DDL = ("create table raw_users (id bigint primary key, email text, name text, age integer, "
             "country text, signup_date date, balance numeric(12, 2))")

COPY = textwrap.dedent("""
    import json, sys, time
    import psycopg
    source, url, ddl = sys.argv[1], sys.argv[2], sys.argv[3]
    start = time.perf_counter()
    with psycopg.connect(url) as connection:
        connection.execute("drop table if exists raw_users")
        connection.execute(ddl)
        with connection.cursor().copy("copy raw_users from stdin (format csv, header true)") as copy, \\
                open(source, "rb") as handle:
            while block := handle.read(1 << 20):
                copy.write(block)
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")


LOAD_DATA = textwrap.dedent("""
    import json, sys, time
    import pymysql
    from sqlalchemy.engine import make_url
    source, url, ddl = sys.argv[1], make_url(sys.argv[2]), sys.argv[3]
    start = time.perf_counter()
    connection = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                 password=url.password or "", database=url.database, local_infile=True)
    with connection.cursor() as cursor:
        cursor.execute("drop table if exists raw_users")
        cursor.execute(ddl)
        cursor.execute("load data local infile %s into table raw_users fields terminated by ',' "
                       "optionally enclosed by '\\"' lines terminated by '\\n' ignore 1 lines", (source,))
    connection.commit()
    print(json.dumps({"work_seconds": time.perf_counter() - start}))
""")

SERVERS = {"PostgreSQL": "batchyard → PostgreSQL (server)", "MariaDB": "batchyard → MariaDB (server)"}
"""Each database server's batchyard contender, against which its raw load is compared."""


def postgres_database(url: str) -> str | None:
    """A fresh database for the PostgreSQL runs, or None when no server answers."""
    try:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"drop database if exists {BENCH_DB} with (force)")
            connection.execute(f"create database {BENCH_DB}")
    except Exception as exc:  # no PostgreSQL here: the SQLite runs still stand
        print(f"PostgreSQL runs skipped: {exc}")
        return None
    return url.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def mariadb_database(url: str) -> str | None:
    """A fresh database for the MariaDB runs, or None when no server answers."""
    try:
        import sqlalchemy as sa

        from batchyard.engines import normalise_url

        engine = sa.create_engine(normalise_url(url), isolation_level="AUTOCOMMIT",
                                  connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.exec_driver_sql(f"drop database if exists {BENCH_DB}")
            connection.exec_driver_sql(f"create database {BENCH_DB}")
        engine.dispose()
    except Exception as exc:  # no MariaDB here: the other runs still stand
        print(f"MariaDB runs skipped: {str(exc).splitlines()[0]}")
        return None
    return url.rsplit("/", 1)[0] + f"/{BENCH_DB}"


def empty_server_tables(pg: str | None, maria: str | None, table: str) -> None:
    """Drop `table` on the servers in use, so that each run loads into an empty target."""
    if pg:
        import psycopg

        with psycopg.connect(pg, autocommit=True) as connection:
            connection.execute(f"drop table if exists {table}")
    if maria:
        import sqlalchemy as sa

        from batchyard.engines import normalise_url

        engine = sa.create_engine(normalise_url(maria), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(f"drop table if exists {table}")
        engine.dispose()
