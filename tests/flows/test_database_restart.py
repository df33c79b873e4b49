"""PostgreSQL restarts in the middle of a batch: a cluster of the test's own (`initdb` into a
temporary directory, its own port on 127.0.0.1) is restarted (`pg_ctl restart -m fast`) while a
chunk holds its transaction open and the next ones wait on the batch's lock. Every connection
drops; the chunk tasks retry, and the batch completes with exact counts, or fails resumably and
the resume completes exactly.

initdb refuses to run as root: as root the cluster belongs to the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from batchyard.demo import expected_counts, write_users
from flows.batch_import import batch_import
from tests.flows.test_transient_faults import task_run_counts
from tests.helpers import REQUIRE_SERVICES, free_port, rows, run_to_end


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:`port`."""

    def __init__(self):
        self.bin = postgres_bin()
        self.home = Path(tempfile.mkdtemp(prefix="batchyard-pg-"))
        self.data, self.port = self.home / "data", free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        self.pg_ctl("start")

    def run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def pg_ctl(self, action: str, *args: str) -> None:
        options = (f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=60")
        self.run("pg_ctl", action, "-D", str(self.data), "-l", str(self.home / "log"), "-w",
                 "-o", options, *args)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def started_at(self) -> str:
        return str(rows(self.url, "select pg_postmaster_start_time()")[0][0])

    def stop(self) -> None:
        try:
            self.pg_ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def cluster():
    if postgres_bin() is None:
        if REQUIRE_SERVICES:
            pytest.fail("initdb is required (BATCHYARD_REQUIRE_SERVICES=1): not found")
        pytest.skip("no initdb on this machine")
    own = Cluster()
    yield own
    from batchyard.engines.base import dispose_engines

    dispose_engines()
    own.stop()


@pytest.mark.slow
def test_database_restart_mid_batch_completes_exactly(tmp_path, cluster, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "6")
    monkeypatch.setenv("BATCHYARD_RETRY_DELAYS", "[0.5, 1, 1, 2, 2, 2]")
    marker = tmp_path / "held"
    monkeypatch.setenv("BATCHYARD_PAUSE_AT", "chunk-loaded:4")  # inside its transaction
    monkeypatch.setenv("BATCHYARD_PAUSE_FILE", str(marker))
    from batchyard import faults

    faults._hits.clear()
    source = write_users(tmp_path / "users.csv", 12_000)
    before = cluster.started_at()
    outcome: dict = {}

    def run() -> None:
        outcome["summary"], outcome["state"] = run_to_end(
            batch_import, str(source), db=cluster.url, chunk_size=1_000, max_parallel=3,
            batch_id="restarted")

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 120
    while not marker.exists():
        assert time.time() < deadline and worker.is_alive(), "the batch never reached chunk 4"
        time.sleep(0.05)
    cluster.pg_ctl("restart", "-m", "fast")
    marker.unlink()
    worker.join(300)
    monkeypatch.delenv("BATCHYARD_PAUSE_AT")
    assert cluster.started_at() != before  # it did restart

    summary, state = outcome["summary"], outcome["state"]
    if not state.is_completed():  # failed resumably: the resume must complete exactly
        assert summary["status"] == "failed"
        summary, state = run_to_end(batch_import, str(source), db=cluster.url, chunk_size=1_000,
                                    batch_id="restarted")
    want = expected_counts(12_000)
    assert state.is_completed()
    assert {k: summary[k] for k in want} == want
    assert rows(cluster.url, "select count(*), count(distinct id) from users") == [
        (want["success"], want["success"])]
    assert rows(cluster.url, "select status, count(*) from batchyard_records group by 1 "
                             "order by 1") == [("failed", want["failed"]), ("ignored", want["ignored"])]
    assert max(task_run_counts(str(outcome["state"].state_details.flow_run_id))) > 1  # retried
