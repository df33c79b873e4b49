"""A full disk while spooling and while writing rejects: a small tmpfs of the test's own is the
work directory (or the rejects file's place). The run ends in one line saying where there was no
room and about how much it needed, nothing half-written is left, and once there is room again
the batch resumes and completes exactly.

Mounting needs root: the test skips otherwise, and fails under BATCHYARD_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from batchyard.demo import expected_counts, write_users
from flows.batch_import import batch_import
from tests.helpers import REQUIRE_SERVICES, rows, run_to_end


class Tmpfs:
    """A tmpfs mounted at `path`, of `size` (mount(8) syntax: 256k, 64m); remountable."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True)

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True,
                       capture_output=True)

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    mounted: list[Tmpfs] = []

    def mount(name: str, size: str) -> Tmpfs:
        if os.geteuid() != 0:
            reason = "mounting a tmpfs needs root"
            if REQUIRE_SERVICES:
                pytest.fail(f"{reason} (BATCHYARD_REQUIRE_SERVICES=1)")
            pytest.skip(reason)
        mounted.append(Tmpfs(tmp_path / name, size))
        return mounted[-1]

    yield mount
    for disk in mounted:
        disk.unmount()


def test_disk_full_while_spooling_then_resume_with_room(tmp_path, small_disk, monkeypatch):
    source = write_users(tmp_path / "users.csv", 20_000)  # about 1.4 MB
    work = small_disk("work", "256k")
    monkeypatch.setenv("BATCHYARD_WORK_DIR", str(work.path))
    db = f"sqlite:///{tmp_path / 'full.db'}"

    state = batch_import(source=str(source), db=db, chunk_size=5_000, batch_id="full-spool",
                         return_state=True)
    assert state.is_failed()
    [(status, code, error)] = rows(db, "select status, error_code, error from batchyard_batches")
    assert (status, code) == ("failed", "CONFIGURATION_ERROR")
    megabytes = -(-int(source.stat().st_size * 1.2) // (1 << 20))
    assert error.startswith(f"no space left on {work.path} while spooling {source} into "
                            f"{work.path / 'spool' / 'full-spool'} (needed about {megabytes} MB, ")
    assert error.endswith("free some space or set BATCHYARD_WORK_DIR, then resume the batch")
    assert "\n" not in error
    assert rows(db, "select count(*) from users") == [(0,)]
    assert work.used() == 0  # the partial spool is gone

    work.resize("64m")
    summary, state = run_to_end(batch_import, source=str(source), db=db, chunk_size=5_000,
                                batch_id="full-spool")
    want = expected_counts(20_000)
    assert state.is_completed()
    assert {k: summary[k] for k in want} == want
    assert rows(db, "select count(*), count(distinct id) from users") == [
        (want["success"], want["success"])]


def test_disk_full_while_writing_rejects_then_resume_with_room(tmp_path, small_disk):
    source = write_users(tmp_path / "users.csv", 10_000)  # 600 failed records, about 60 KB
    place = small_disk("rejects", "16k")
    rejects = place.path / "users.rejects.csv"
    db = f"sqlite:///{tmp_path / 'rejects.db'}"
    want = expected_counts(10_000)

    summary, state = run_to_end(batch_import, source=str(source), db=db, chunk_size=2_500,
                                batch_id="full-rejects", rejects_file=str(rejects))
    assert state.is_failed()
    assert (summary["status"], summary["success"], summary["failed"]) == (
        "failed", want["success"], want["failed"])
    [(code, error)] = rows(db, "select error_code, error from batchyard_batches")
    assert code == "CONFIGURATION_ERROR"
    assert error.startswith(f"no space left on {place.path} while writing the rejects file "
                            f"{rejects} (needed about 1 MB, 0 MB free)")
    assert not rejects.exists()  # nothing half-written
    assert rows(db, "select count(*) from users") == [(want["success"],)]  # what loaded, stays

    place.resize("4m")
    summary, state = run_to_end(batch_import, source=str(source), db=db, chunk_size=2_500,
                                batch_id="full-rejects", rejects_file=str(rejects))
    assert state.is_completed()
    assert {k: summary[k] for k in want} == want
    with rejects.open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == want["failed"]
    assert rows(db, "select count(*), count(distinct id) from users") == [
        (want["success"], want["success"])]
