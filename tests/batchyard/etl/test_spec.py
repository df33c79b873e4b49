"""Pipeline specs: YAML and JSON, one-line refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from batchyard.errors import ConfigurationError
from batchyard.etl.spec import load_spec

GOOD = {
    "pipeline_id": "p1",
    "sources": [{"type": "database", "id": "db", "url": "sqlite:///x.db", "table": "t", "cursor_column": "id"},
                {"type": "api", "id": "api", "url": "http://127.0.0.1/x", "pagination": {"style": "link"}},
                {"type": "file", "id": "f", "path": "in/*.csv"}],
    "target": {"type": "database", "table": "out", "primary_key": ["id"]},
    "write_disposition": "merge",
}


@pytest.mark.parametrize("suffix, dump", [(".json", json.dumps), (".yaml", yaml.safe_dump)])
def test_spec_loads(tmp_path, suffix, dump):
    path = tmp_path / f"p{suffix}"
    path.write_text(dump(GOOD))
    spec = load_spec(path)
    assert [s.type for s in spec.sources] == ["database", "api", "file"]
    assert (spec.target.url, spec.batch_size, spec.version, spec.sources[1].pagination.style) == (
        "sqlite:///batchyard.db", 10_000, "1.0", "link")


@pytest.mark.parametrize("change, message", [
    ({"sources": GOOD["sources"] + [{"type": "file", "id": "f", "path": "y"}]}, "source id(s) used twice: f"),
    ({"target": {"type": "database", "table": "out"}}, "write_disposition merge needs target.primary_key"),
    ({"target": {"type": "file", "path": "o", "primary_key": ["id"]}}, "a file target cannot merge"),
    ({"target": {"type": "database", "table": "out; drop", "primary_key": ["id"]}}, "invalid table name"),
    ({"sources": [{"type": "database", "id": "d", "url": "sqlite:///x.db"}]}, "give exactly one of table and query"),
    ({"sources": [{"type": "api", "id": "a"}]}, "give url or block"),
    ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
])
def test_spec_refusals(tmp_path, change, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(ConfigurationError) as error:
        load_spec(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(ConfigurationError, match="No such file or directory"):
        load_spec(tmp_path / "none.yaml")
