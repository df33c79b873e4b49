"""The batch's write lock on MariaDB: appending chunks share it, an upserting chunk holds it
alone, and a chunk whose upgrade InnoDB breaks as a deadlock runs its transaction again.

Each test holds the lock from a second connection of its own (plain PyMySQL, as any other
client would) and watches the chunk's transaction in `information_schema.INNODB_TRX`.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pymysql
import pytest
from sqlalchemy.engine import make_url

from batchyard.engines import session
from batchyard.errors import is_deadlock
from batchyard.ingest.batch_lock import lock_batch
from batchyard.ingest.chunk import process_chunk
from batchyard.ingest.job import resolve_job
from batchyard.ingest.lifecycle import close_batch, open_batch, plan_batch
from batchyard.readers import SourceOptions
from tests.helpers import import_without_prefect, rows

CHUNK = 500


def users(path: Path, n: int, name: str = "Row") -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "age", "country", "signup_date", "balance"])
        for key in range(1, n + 1):
            writer.writerow([key, f"user{key}@example.com", f"{name} {key}", 30, "DE", "2020-01-01", "1.5"])
    return path


def connect(url: str) -> pymysql.Connection:
    parts = make_url(url)
    connection = pymysql.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                                 password=parts.password or "", database=parts.database)
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 30")
    return connection


def lock_sql(mode: str) -> str:
    return (f"SELECT attempt FROM batchyard_attempts WHERE batch_id = %s AND finished_at IS NULL "
            f"{mode}")


def waiting_transactions(connection: pymysql.Connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'")
        return cursor.fetchone()[0]


def wait_until(predicate, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)  # InnoDB refreshes INNODB_TRX only when unread for 0.1 s


def deadlocks(connection: pymysql.Connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        return int(cursor.fetchone()[1])


def started(tmp_path: Path, url: str, source: Path, batch: str):
    job = resolve_job(str(source), "users", url, None, batch)
    open_batch(job, CHUNK, SourceOptions())
    refs, _, _ = plan_batch(job, SourceOptions(), CHUNK)
    return job, refs


def test_appending_chunks_share_the_lock_and_an_upsert_waits_for_them(tmp_path, mariadb_url):
    job, refs = started(tmp_path, mariadb_url, users(tmp_path / "u.csv", CHUNK), "shared")
    other = connect(mariadb_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(lock_sql("LOCK IN SHARE MODE"), (job.batch_id,))
            assert cursor.fetchall() == ((1,),)
        # a chunk that appends new keys takes the lock shared: it commits beside the holder
        result = process_chunk(job, refs[0])
        assert (result.success, result.failed, result.ignored) == (CHUNK, 0, 0)
        # one that holds it alone waits until the shared holder commits
        taken = threading.Event()

        def exclusive():
            with session(mariadb_url, write=True) as connection:
                lock_batch(connection, job.batch_id, shared=False)
                taken.set()

        waiter = threading.Thread(target=exclusive)
        waiter.start()
        wait_until(lambda: waiting_transactions(other) == 1, "the exclusive lock waits")
        assert not taken.is_set()
        other.commit()
        waiter.join(30)
        assert taken.is_set()
    finally:
        other.close()
    assert close_batch(job)["success"] == CHUNK


def test_a_chunk_whose_upgrade_deadlocks_runs_its_transaction_again(tmp_path, mariadb_url):
    import_without_prefect(users(tmp_path / "first.csv", CHUNK), mariadb_url, CHUNK, batch_id="first")
    # every key exists: the chunk's append conflicts and it upgrades its shared lock to upsert
    job, refs = started(tmp_path, mariadb_url, users(tmp_path / "again.csv", CHUNK, "Again"), "again")
    other = connect(mariadb_url)
    before = deadlocks(other)
    outcome: dict = {}
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            # made the heavier transaction, InnoDB rolls back the chunk's when the cycle closes
            cursor.execute("CREATE TABLE ballast (n INT PRIMARY KEY)")
            cursor.execute("BEGIN")
            cursor.execute("INSERT INTO ballast SELECT seq FROM seq_1_to_20000")
            cursor.execute(lock_sql("LOCK IN SHARE MODE"), (job.batch_id,))
            chunk = threading.Thread(target=lambda: outcome.update(result=process_chunk(job, refs[0])))
            chunk.start()
            wait_until(lambda: waiting_transactions(other) == 1, "the chunk waits to upgrade")
            cursor.execute(lock_sql("FOR UPDATE"), (job.batch_id,))  # closes the cycle
            assert cursor.fetchall() == ((1,),)
            assert deadlocks(other) == before + 1
            wait_until(lambda: waiting_transactions(other) == 1, "the chunk's second transaction waits")
        other.commit()
        chunk.join(60)
    finally:
        other.close()
    result = outcome["result"]
    assert (result.success, result.failed, result.ignored) == (CHUNK, 0, 0)
    assert rows(mariadb_url, "SELECT COUNT(*), MIN(name), MAX(_batch_id) FROM users "
                             "WHERE name LIKE 'Again %%'") == [(CHUNK, "Again 1", "again")]
    final = close_batch(job)
    assert (final["status"], final["success"], final["failed"], final["ignored"]) == ("completed", CHUNK, 0, 0)


@pytest.mark.parametrize("code, expected", [(1213, True), (1205, False), (1062, False)])
def test_only_a_deadlock_is_run_again_at_once(code, expected):
    assert is_deadlock(pymysql.err.OperationalError(code, "message")) is expected


def test_with_no_open_attempt_the_lock_is_the_batch_rows_held_alone(tmp_path, mariadb_url):
    """A ledger whose batch has no open attempt (one written before attempts were kept): even
    an appending chunk then holds the batch row's lock alone."""
    job, _ = started(tmp_path, mariadb_url, users(tmp_path / "u.csv", CHUNK), "no-attempt")
    other = connect(mariadb_url)
    try:
        with other.cursor() as cursor:
            cursor.execute("UPDATE batchyard_attempts SET finished_at = NOW() WHERE batch_id = %s",
                           (job.batch_id,))
            other.commit()
        taken, release = threading.Event(), threading.Event()

        def appending():
            with session(mariadb_url, write=True) as connection:
                lock_batch(connection, job.batch_id, shared=True)
                taken.set()
                release.wait(30)

        holder = threading.Thread(target=appending)
        holder.start()
        assert taken.wait(30)
        with other.cursor() as cursor:
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
            cursor.execute("BEGIN")
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cursor.execute("SELECT batch_id FROM batchyard_batches WHERE batch_id = %s "
                               "LOCK IN SHARE MODE", (job.batch_id,))
            assert refused.value.args[0] == 1205  # lock wait timeout: held exclusively
            other.rollback()
        release.set()
        holder.join(30)
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT batch_id FROM batchyard_batches WHERE batch_id = %s "
                           "LOCK IN SHARE MODE", (job.batch_id,))
            assert cursor.fetchall() == ((job.batch_id,),)
            other.rollback()
    finally:
        release.set()
        other.close()
