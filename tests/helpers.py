"""Helpers shared by the tests: where things run, and the real services they talk to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="batchyard-tests-"))
POSTGRES_URL = os.environ.get("BATCHYARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("BATCHYARD_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("BATCHYARD_REQUIRE_SERVICES") == "1"


def server_available(url: str) -> str | None:
    """None when the database server at `url` answers, else the reason it does not."""
    import sqlalchemy as sa

    from batchyard.engines import normalise_url

    try:
        engine = sa.create_engine(normalise_url(url))
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        engine.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


def postgres_available() -> str | None:
    """None when PostgreSQL answers at POSTGRES_URL, else the reason it does not."""
    return server_available(POSTGRES_URL)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(tmp_path: Path, api: str | None = None, **extra: str) -> dict:
    """Environment for running the real `batchyard` command in a subprocess."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "BATCHYARD_PAUSE"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               BATCHYARD_WORK_DIR=str(tmp_path / "work"))
    if api:  # no warm process left behind each command (tests/batchyard/test_warm.py has its own)
        env.update(PREFECT_API_URL=api, BATCHYARD_WARM="off")
    env.update(extra)
    return env


def batchyard_command() -> str:
    import sys

    return str(Path(sys.executable).with_name("batchyard"))


def rows(url: str, sql: str, params: tuple = ()) -> list[tuple]:
    """Query a target database the way batchyard itself does (ADBC for SQLite: one SQLite
    library per process)."""
    from batchyard.engines import session

    with session(url, write=True) as current:
        return [tuple(r) for r in current.sql(sql, params)]


def fix_rejects(rejects: str | Path, fixed: Path, fix) -> Path:
    """Copy a rejects file as a user correcting it would: `fix(record)` edits each row."""
    import csv

    with Path(rejects).open() as handle, fixed.open("w", newline="") as out:
        reader = csv.DictReader(handle)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames)
        writer.writeheader()
        for record in reader:
            fix(record)
            writer.writerow(record)
    return fixed


def latest_artifact(key: str) -> dict:
    """The newest artifact with this key, as the API returns it (what the UI shows)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch() -> list[dict]:
        async with get_client() as client:
            response = await client._client.post(
                "/artifacts/filter",
                json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
            response.raise_for_status()
            return response.json()

    found = asyncio.run(fetch())
    assert found, f"no artifact {key}"
    return found[0]


def refuse_ids(tmp_path: Path, url: str, first: int, last: int) -> None:
    """A trigger in an empty `users` target that refuses ids first..last, as a maintenance rule
    would: the chunk holding them fails at the database until `drop trigger maintenance`."""
    from batchyard.demo import write_users
    from flows.batch_import import batch_import

    batch_import(str(write_users(tmp_path / "one.csv", 1, bad=False)), db=url)  # the table
    rows(url, "delete from users")
    rows(url, "create trigger maintenance before insert on users "
              f"when new.id between {first} and {last} begin select raise(abort, 'maintenance'); end")


def import_without_prefect(path, db: str, chunk_size: int = 3, schema: str = "users",
                           batch_id: str | None = None, **options) -> dict:
    """The batch-import steps the flow's tasks call, without Prefect: open, spool, every chunk
    in order, close. Returns the batch's summary (the invariant checked)."""
    from batchyard.errors import SourceError
    from batchyard.ingest.chunk import process_chunk
    from batchyard.ingest.job import resolve_job
    from batchyard.ingest.lifecycle import close_batch, fail_batch, open_batch, plan_batch
    from batchyard.ingest.summary import summary
    from batchyard.readers import SourceOptions

    job = resolve_job(str(path), schema, db, None, batch_id)
    opts = SourceOptions(**{k: v for k, v in options.items() if v is not None})
    open_batch(job, chunk_size, opts)
    try:
        chunks, _, _ = plan_batch(job, opts, chunk_size)
    except SourceError as exc:
        fail_batch(job, str(exc), exc.code)
        raise
    for ref in chunks:
        process_chunk(job, ref)
    result = summary(close_batch(job))
    assert result["total"] == result["success"] + result["failed"] + result["ignored"]
    return result


def run_to_end(flow, *args, **kwargs) -> tuple[dict, object]:
    """Run a flow to its final state: the summary it reports (its result, or the one a Failed
    or Cancelled run carries in its `RunNotCompleted`) and the state itself."""
    state = flow(*args, return_state=True, **kwargs)
    result = state.result(raise_on_failure=False)
    return getattr(result, "summary", result), state


def recorded_state(state):
    """The flow run's state as the Prefect API has it (what the UI and automations see)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def fetch():
        async with get_client() as client:
            return (await client.read_flow_run(state.state_details.flow_run_id)).state

    return asyncio.run(fetch())


class FlakyPostgres:
    """A PostgreSQL login role the test can cut off (every session of it ended, new ones
    refused) and let back in: a database that is unavailable for a while, for real."""

    ROLE = "batchyard_flaky"

    def __init__(self, postgres_url: str):
        import sqlalchemy as sa

        from batchyard.engines import normalise_url

        self.admin = sa.create_engine(normalise_url(postgres_url), isolation_level="AUTOCOMMIT")
        self._sql(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{self.ROLE}') "
            f"THEN CREATE ROLE {self.ROLE} LOGIN; END IF; END $$",
            f"ALTER ROLE {self.ROLE} CONNECTION LIMIT -1",
            f"GRANT ALL ON SCHEMA public TO {self.ROLE}",
            f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {self.ROLE}")
        self.url = normalise_url(postgres_url).set(username=self.ROLE).render_as_string(False)

    def _sql(self, *statements: str) -> None:
        with self.admin.connect() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)

    def cut(self) -> None:
        self._sql(f"ALTER ROLE {self.ROLE} CONNECTION LIMIT 0",
                  f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{self.ROLE}'")

    def restore(self) -> None:
        self._sql(f"ALTER ROLE {self.ROLE} CONNECTION LIMIT -1")
