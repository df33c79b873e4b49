"""Commands that do what they say (issue 14): read-only commands create nothing, resume of a
completed batch, cancel, and the small things (choices, what was typed, rules, exit codes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from batchyard.demo import write_users
from batchyard.engines import session
from batchyard.ingest import ledger
from tests.helpers import refuse_ids, rows

pytestmark = pytest.mark.usefixtures("prefect_harness")

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


READ_ONLY = [["status", "b1"], ["list"], ["metrics"], ["errors", "b1"], ["profile", "b1"],
             ["schema", "show", "t"], ["schema", "diff", "t"], ["schema", "history", "t"]]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: "-".join(c[:-1]) or c[0])
def test_read_only_commands_create_no_database_file(tmp_path, command):
    path = tmp_path / "typo.db"
    result = invoke(*command, "--db", f"sqlite:///{path}")
    assert (result.exit_code, result.stderr) == (1, f"error: no such database: sqlite:///{path}\n")
    assert not path.exists()


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: "-".join(c[:-1]) or c[0])
def test_read_only_commands_create_no_ledger(db_url, command):
    with session(db_url, write=True) as current:
        current.sql("CREATE TABLE mine (id INTEGER)")
    result = invoke(*command, "--db", db_url)
    shown = db_url.replace("postgresql://", "postgresql+psycopg://") if db_url.startswith("postgresql") else db_url
    assert (result.exit_code, result.stderr) == (1, f"error: no batchyard ledger in {shown}\n")
    with session(db_url) as current:
        assert current.describe("batchyard_batches") is None and current.describe("mine") is not None


def test_resume_of_a_completed_batch_prints_it_and_exits_0_every_time(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 20, bad=False)
    assert invoke("import", source, "--db", sqlite_url, "--batch-id", "done-1").exit_code == 0
    for _ in range(2):
        again = invoke("resume", "done-1", "--db", sqlite_url, "--json")
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert (summary["status"], summary["success"], summary["attempts"]) == ("completed", 20, 1)
        assert "--fresh" not in again.output


def test_cancel_a_failed_batch_then_resume_it(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("BATCHYARD_CHUNK_RETRIES", "0")
    source = write_users(tmp_path / "users.csv", 200, bad=False)
    refuse_ids(tmp_path, sqlite_url, 101, 200)
    failed = invoke("import", source, "--db", sqlite_url, "--chunk-size", "100", "--batch-id", "c-1")
    assert failed.exit_code == 3
    stop = invoke("stop", "c-1", "--db", sqlite_url)
    assert (stop.exit_code, stop.stderr) == (1, (
        "error: batch c-1 is failed, not running: nothing to stop; cancel it with: batchyard cancel c-1, "
        "or resume it with: batchyard resume c-1\n"))
    cancelled = invoke("cancel", "c-1", "--db", sqlite_url)
    assert cancelled.exit_code == 0
    assert cancelled.stdout == "batch c-1 is cancelled (100 of 200 records loaded); resume it with: batchyard resume c-1\n"
    assert rows(sqlite_url, "select status from batchyard_batches where batch_id = 'c-1'") == [("cancelled",)]
    assert invoke("cancel", "c-1", "--db", sqlite_url).exit_code == 0  # already cancelled: stays so
    rows(sqlite_url, "drop trigger maintenance")
    resumed = invoke("resume", "c-1", "--db", sqlite_url, "--json")
    assert resumed.exit_code == 0
    assert (json.loads(resumed.stdout)["status"], json.loads(resumed.stdout)["success"]) == ("completed", 200)
    refused = invoke("cancel", "c-1", "--db", sqlite_url)
    assert (refused.exit_code, refused.stderr) == (1, "error: batch c-1 already completed: nothing to cancel\n")


def test_cancel_a_pending_batch_and_one_whose_process_is_gone_but_not_a_live_one(sqlite_url):
    from batchyard.ingest.lease import owner_id

    with session(sqlite_url, write=True) as current:
        ledger.ensure_ledger(current)
        for batch_id in ("p-1", "dead-1", "live-1"):
            ledger.create_batch(current, batch_id=batch_id, source="s.csv", schema_name="users",
                                target_table="users", chunk_size=10, options="{}")
        ledger.start_batch(current, "dead-1", None, "gone-host:1:0", None)
        ledger.start_batch(current, "live-1", None, owner_id(), None)
        current.execute(ledger.batches.update().where(ledger.batches.c.batch_id == "dead-1")
                        .values(heartbeat_at=ledger.now().replace(year=2020)))
    assert invoke("cancel", "p-1", "--db", sqlite_url).exit_code == 0
    assert invoke("cancel", "dead-1", "--db", sqlite_url).exit_code == 0
    live = invoke("cancel", "live-1", "--db", sqlite_url)
    assert live.exit_code == 1
    assert re.fullmatch(r"error: batch live-1 is running \(pid \d+ on .+\): stop it with: batchyard stop live-1\n",
                        live.stderr)
    assert rows(sqlite_url, "select batch_id, status from batchyard_batches order by 1") == [
        ("dead-1", "cancelled"), ("live-1", "running"), ("p-1", "cancelled")]
    assert rows(sqlite_url, "select batch_id, kind, status from batchyard_attempts order by 1") == [
        ("dead-1", "import", "crashed"), ("live-1", "import", "running")]


@pytest.mark.parametrize(("args", "message"), [
    (["list", "--status", "bogus"],
     "error: unknown status 'bogus': use pending, running, completed, failed, cancelled"),
    (["status", "b1", "--db", "users.db"],
     "error: not a database URL: 'users.db' (use mariadb://... or postgresql://... or sqlite://..., e.g. sqlite:///path/to/file.db)"),
    (["list", "--db", "postgresql://bob:secret@db-host:fivefour/x"],
     "error: not a database URL: 'postgresql://bob:***@db-host:fivefour/x' (use mariadb://... or postgresql://... or sqlite://..., "
     "e.g. sqlite:///path/to/file.db)"),
    (["import", "{users}", "--batch-id", "my batch"],
     "error: invalid batch id 'my batch': use letters, digits, hyphens and underscores, starting with a "
     "letter or digit, at most 64"),
    (["import", "{users}", "--max-parallel", "0"], "error: --max-parallel must be at least 1, not 0"),
    (["resume", "b1", "--max-parallel", "0"], "error: --max-parallel must be at least 1, not 0"),
    (["retry", "b1", "--max-retries", "0"], "error: --max-retries must be at least 1, not 0"),
    (["import", "{book}"], "error: {book}: the first sheet, 'Empty', is empty (sheets: Empty, Data); pass --sheet NAME"),
])
def test_bad_options_are_one_line_with_exit_1(tmp_path, args, message):
    from openpyxl import Workbook

    users = write_users(tmp_path / "users.csv", 3, bad=False)
    book = Workbook()
    book.active.title = "Empty"
    book.create_sheet("Data").append(["id", "email"])
    book.save(tmp_path / "book.xlsx")
    values = {"users": users, "book": tmp_path / "book.xlsx"}
    result = invoke(*[a.format(**values) for a in args])
    assert (result.exit_code, result.stderr) == (1, message.format(**values) + "\n")
    assert "secret" not in result.output


def test_a_batch_id_with_hyphens_is_accepted(tmp_path, sqlite_url):
    source = write_users(tmp_path / "users.csv", 5, bad=False)
    result = invoke("import", source, "--db", sqlite_url, "--batch-id", "nightly-2026-01-02", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["batch_id"] == "nightly-2026-01-02"


def test_help_shows_no_type_for_plain_flags():
    shown = invoke("import", "--help").stdout
    assert "--json" in shown and "--fresh" in shown and "<bool>" not in shown
    assert "<int>" in shown  # options that take a value still say which


def test_the_readme_lists_every_exit_code():
    from batchyard.cli import common

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    codes = {v for k, v in vars(common).items() if k.startswith("EXIT_")}
    assert codes == {0, 1, 2, 3}
    section = readme[readme.index("### Exit codes"):][:1500]
    for code in codes:
        assert f"\n- `{code}`" in section, code
