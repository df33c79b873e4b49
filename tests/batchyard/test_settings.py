"""The local-server settings, read before anything heavy is imported: defaults, and a bad
value as a one-line error naming its variable."""

from __future__ import annotations

import pytest

from batchyard.errors import ConfigurationError
from batchyard.local_server import use_early
from batchyard.settings import LocalServerSettings, local_server_settings


def test_defaults(monkeypatch):
    for name in ("BATCHYARD_LOCAL_SERVER", "BATCHYARD_SERVER_PORT", "BATCHYARD_SERVER_IDLE_TIMEOUT",
                 "BATCHYARD_SERVER_START_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    assert local_server_settings() == LocalServerSettings("start", 4200, 3600.0, 120.0)


@pytest.mark.parametrize("name, value, message", [
    ("BATCHYARD_LOCAL_SERVER", "always", "BATCHYARD_LOCAL_SERVER must be one of start, use, off, not 'always'"),
    ("BATCHYARD_SERVER_PORT", "http", "BATCHYARD_SERVER_PORT must be a number, not 'http'"),
    ("BATCHYARD_SERVER_PORT", "70000", "BATCHYARD_SERVER_PORT must be a port number, not 70000"),
    ("BATCHYARD_SERVER_IDLE_TIMEOUT", "-5", "BATCHYARD_SERVER_IDLE_TIMEOUT must be positive, not '-5'"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        local_server_settings()
    assert str(raised.value) == message


@pytest.mark.parametrize("argv, environ", [
    (["batchyard", "status", "b1"], {"BATCHYARD_LOCAL_SERVER": "start"}),  # no flow
    (["batchyard", "import", "x.csv"], {"BATCHYARD_LOCAL_SERVER": "off"}),
    (["batchyard", "import", "x.csv"], {"BATCHYARD_LOCAL_SERVER": "start",
                                        "PREFECT_API_URL": "http://prefect:4200/api"}),
    (["batchyard", "import", "x.csv"], {"BATCHYARD_LOCAL_SERVER": "use"}),  # none running
])
def test_when_a_command_neither_uses_nor_starts_the_local_server(tmp_path, monkeypatch, argv, environ):
    monkeypatch.setenv("BATCHYARD_LOCAL_SERVER", environ["BATCHYARD_LOCAL_SERVER"])
    env = {"PREFECT_HOME": str(tmp_path / "home"), **environ}
    assert use_early(argv, env) is None
    assert env.get("PREFECT_API_URL") == environ.get("PREFECT_API_URL")
    assert not (tmp_path / "home" / "batchyard-server" / "state.json").exists()
