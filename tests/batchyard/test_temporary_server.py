"""Ephemeral mode's early temporary server: when a command starts one, and when it must not."""

from __future__ import annotations

import pytest

from batchyard.temporary_server import runs_a_flow, server_configured


@pytest.mark.parametrize("argv, expected", [
    (["batchyard", "import", "users.csv", "--db", "sqlite:///x.db"], True),
    (["batchyard", "--json", "resume", "b1"], True),
    (["batchyard", "retry", "b1"], True),
    (["batchyard", "demo"], True),
    (["batchyard", "etl", "pipeline.yaml"], True),
    (["batchyard", "stream", "run", "clicks"], True),
    (["batchyard", "stream", "stop", "clicks"], False),
    (["batchyard", "status", "b1"], False),
    (["batchyard", "generate", "users.csv"], False),
    (["batchyard", "import", "--help"], False),
    (["batchyard"], False),
])
def test_only_flow_commands_start_a_server(argv, expected):
    assert runs_a_flow(argv) is expected


@pytest.mark.parametrize("files, environ, expected", [
    ({}, {}, False),
    ({}, {"PREFECT_API_URL": "http://prefect:4200/api"}, True),
    ({"home/profiles.toml": 'active = "team"\n[profiles.team]\n'
      'PREFECT_API_URL = "http://prefect:4200/api"\n'}, {}, True),
    ({"home/profiles.toml": 'active = "local"\n[profiles.local]\n[profiles.team]\n'
      'PREFECT_API_URL = "http://prefect:4200/api"\n'}, {}, False),
    ({"home/profiles.toml": '[profiles.team]\nPREFECT_API_URL = "http://prefect:4200/api"\n'},
     {"PREFECT_PROFILE": "team"}, True),
    ({"work/prefect.toml": '[api]\nurl = "http://prefect:4200/api"\n'}, {}, True),
    ({"work/pyproject.toml": '[tool.prefect.api]\nurl = "http://prefect:4200/api"\n'}, {}, True),
    ({"work/pyproject.toml": '[project]\nname = "x"\n'}, {}, False),
    ({"work/.env": "PREFECT_API_URL=http://prefect:4200/api\n"}, {}, True),
    ({"work/prefect.toml": "this is = = not toml"}, {}, True),
])
def test_a_configured_server_is_never_replaced(tmp_path, files, environ, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "work").mkdir(exist_ok=True)
    environ = {"PREFECT_HOME": str(tmp_path / "home"), **environ}
    assert server_configured(environ, tmp_path / "work") is expected
