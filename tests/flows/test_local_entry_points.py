"""`python flows/<flow>.py` from a fresh checkout does something real on local defaults and says
where the result is (issue 14). Each runs as its own process in an empty directory: the import
in ephemeral mode (a temporary Prefect server of its own, as after `./dev setup`), the others
against a real Prefect server to keep the suite short."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.helpers import cli_env, rows

pytestmark = pytest.mark.slow

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def run_script(tmp_path: Path, name: str, api: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(FLOWS / f"{name}.py")], cwd=tmp_path, env=cli_env(tmp_path, api),
                          capture_output=True, text=True, timeout=300)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def test_batch_import_makes_a_sample_and_imports_it_in_ephemeral_mode(tmp_path):
    done = run_script(tmp_path, "batch_import")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "wrote a sample of 1,000 users (some deliberately bad) to demo/users.csv"
    assert lines[1].endswith(": completed, 930 of 1,000 records loaded into table users of "
                             "sqlite:///demo/batchyard.db, 60 failed, 10 ignored")
    assert rows(f"sqlite:///{tmp_path / 'demo' / 'batchyard.db'}", "select count(*) from users") == [(930,)]
    assert lines[2].startswith(f"rejected records: {tmp_path}/demo/users.") and Path(lines[2].split(": ")[1]).exists()


def test_retry_failed_retries_the_newest_batch_with_failures(tmp_path, prefect_server):
    done = run_script(tmp_path, "retry_failed", prefect_server)
    assert done.returncode == 3, done.stderr[-3000:]  # the sample's bad records are still bad
    assert "60 failed records retried, 0 loaded, 60 still failed, 0 abandoned" in done.stdout
    assert "batchyard retry " in done.stdout and "--from FIXED.csv" in done.stdout
    assert rows(f"sqlite:///{tmp_path / 'demo' / 'batchyard.db'}",
                "select count(*) from batchyard_records where retry_count = 1") == [(60,)]


def test_etl_pipeline_loads_the_sample_into_a_local_warehouse(tmp_path, prefect_server):
    done = run_script(tmp_path, "etl_pipeline", prefect_server)
    assert done.returncode == 0, done.stderr[-3000:]
    warehouse = tmp_path / "demo" / "warehouse.duckdb"
    assert done.stdout.splitlines()[-1] == (f"pipeline local-users: 1,000 of 1,000 records loaded into duckdb "
                                            f"{warehouse} table users, 0 failed")
    with duckdb.connect(str(warehouse)) as connection:
        assert connection.execute("select count(*) from users").fetchone() == (1_000,)


def test_stream_window_aggregates_sample_events(tmp_path, prefect_server):
    done = run_script(tmp_path, "stream_window", prefect_server)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "wrote 300 sample events of the last 5 minutes to table events of sqlite:///demo/stream.db"
    db = f"sqlite:///{tmp_path / 'demo' / 'stream.db'}"
    (windows, counted), = rows(db, "select count(distinct window_start), sum(count) from stream_results")
    assert windows >= 4 and 200 <= counted <= 300
    assert f"stream job local: {windows} windows closed" in lines[1]
    assert f"{counted} events in" in lines[1] and "to table stream_results of sqlite:///demo/stream.db" in lines[1]
