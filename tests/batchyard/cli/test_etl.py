"""`batchyard etl PIPELINE.yaml`: the spec file runs the flow; errors are one line."""

from __future__ import annotations

import json

import duckdb
import pytest
from typer.testing import CliRunner

from batchyard.cli import app

pytestmark = pytest.mark.usefixtures("prefect_harness")

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_yaml_spec_runs_the_pipeline(tmp_path):
    (tmp_path / "in.csv").write_text("id,name\n1,a\n2,b\n3,c\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(f"""
pipeline_id: cli-demo
batch_size: 2
sources:
  - {{type: file, id: people, path: "{tmp_path / 'in.csv'}"}}
target: {{type: warehouse, path: "{tmp_path / 'wh.duckdb'}", table: people}}
""")
    result = invoke("etl", spec, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["pipeline_id"], summary["total_records"], summary["successful_records"],
            summary["failed_records"]) == ("cli-demo", 3, 3, 0)
    assert summary["sources"] == {"people": {"extracted": 3, "loaded": 3, "failed": 0}}
    with duckdb.connect(str(tmp_path / "wh.duckdb")) as connection:
        assert connection.execute("SELECT id, name FROM people ORDER BY id").fetchall() == [
            (1, "a"), (2, "b"), (3, "c")]
    text = invoke("etl", spec)
    assert text.exit_code == 0 and "pipeline cli-demo: 3 records, 3 loaded, 0 failed" in text.stdout


@pytest.mark.parametrize("content, message", [
    ("pipeline_id: x\nsources: []\ntarget: {type: warehouse, table: t}\n",
     "sources: List should have at least 1 item after validation, not 0"),
    ("pipeline_id: x\nsources: [{type: ftp, id: a}]\ntarget: {type: warehouse, table: t}\n",
     "sources.0: Input tag 'ftp' found using 'type' does not match any of the expected tags: "
     "'database', 'api', 'file'"),
    ("pipeline_id: [unclosed\n", "not valid YAML/JSON"),
])
def test_bad_spec_is_one_line(tmp_path, content, message):
    spec = tmp_path / "p.yaml"
    spec.write_text(content)
    result = invoke("etl", spec)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {spec}: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_failing_source_exits_1_with_the_reason(tmp_path):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({"pipeline_id": "x", "sources": [
        {"type": "file", "id": "missing", "path": str(tmp_path / "nothing-*.csv")}],
        "target": {"type": "warehouse", "path": str(tmp_path / "w.duckdb"), "table": "t"}}))
    result = invoke("etl", spec)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (f"error: extract failed, the run stops: source missing: no file matches "
                                     f"{tmp_path / 'nothing-*.csv'}")
