"""Ephemeral mode's early temporary server: when a command starts one, and when it must not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    ({}, {"PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}, True),
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


FALLBACK = """
import json
from batchyard import temporary_server as early
from batchyard.prefect_runtime import shutdown

early.start_early(["batchyard", "import", "users.csv"])
early_port = early._port
early._started.kill()  # as if its port had been taken before it bound it
early._started.wait()
early.hand_to_prefect()

from prefect import flow
from prefect.server.api.server import SubprocessASGIServer

@flow
def answer() -> int:
    return 42

result = answer()
port = SubprocessASGIServer().port
shutdown()
print(json.dumps({"result": result, "early_port": early_port, "port": port}))
"""


@pytest.mark.slow
def test_a_failed_early_server_leaves_prefect_to_start_its_own(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               # the start-up time a batchyard command gives a temporary server (Prefect's 20 s
               # default ran out once under a full suite's load)
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")
    done = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True,
                          env=env, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["result"] == 42 and seen["port"] != seen["early_port"]
    assert "Starting temporary server" in done.stderr  # Prefect's own start-up message
