"""End to end against real parts: a `prefect server start` (its database on PostgreSQL when one is
reachable), the work pool and queues, `prefect deploy --all`, a process worker, a batch import
run through its deployment, the stream-window schedule running on its own, and a headless
Chromium looking at the runs in the UI. Everything started here is stopped here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from batchyard.demo import expected_counts, write_users
from batchyard.engines import session
from batchyard.ingest.summary import batch_summary
from tests.helpers import POSTGRES_URL, REQUIRE_SERVICES, cli_env, free_port, postgres_available

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BIN = Path(sys.executable).parent


def api_call(api: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{api}{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def wait_for(what: str, check, timeout: float, logs: list[Path]):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@pytest.fixture(scope="module")
def server_database():
    """A fresh PostgreSQL database for the server, dropped at the end; SQLite without PostgreSQL."""
    if postgres_available() is not None:
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL is required (BATCHYARD_REQUIRE_SERVICES=1)")
        yield None
        return
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"prefect_e2e_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg",
                                                        database="postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, server_database):
    """Server, pool and queues, deployments and a worker, from a copy of the project (so that the
    flows' relative SQLite files land in a temporary directory, not in the checkout)."""
    base = tmp_path_factory.mktemp("e2e")
    project = base / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "test-artifacts", "*.db", "__pycache__", "demo", ".ruff_cache"))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = cli_env(base, api, BATCHYARD_HOME=str(project), PREFECT_WORKER_QUERY_SECONDS="2",
                  PREFECT_WORKER_PREFETCH_SECONDS="5")
    server_env = dict(env, PREFECT_HOME=str(base / "server-home"), PREFECT_UI_API_URL=api,
                      PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5")
    if server_database:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = server_database
    logs = {name: base / f"{name}.log" for name in ("server", "worker")}
    started: list[subprocess.Popen] = []

    def start(name, args, environment):
        handle = logs[name].open("w")
        process = subprocess.Popen(args, env=environment, cwd=project, stdout=handle,
                                   stderr=subprocess.STDOUT)
        started.append(process)
        return process

    def run(*args, timeout=300):
        done = subprocess.run(args, env=env, cwd=project, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done.stdout

    try:
        server = start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                  "--port", str(port)], server_env)

        def healthy():
            if server.poll() is not None:
                pytest.fail(f"prefect server exited: {logs['server'].read_text()[-3000:]}")
            try:
                return api_call(api, "/health")
            except OSError:
                return None

        wait_for("the server", healthy, 180, [logs["server"]])
        pool_output = run(str(BIN / "python"), "-m", "deployments.pool")
        run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "batchyard",
                         "--type", "process"], env)
        yield {"api": api, "port": port, "project": project, "base": base, "env": env,
               "run": run, "logs": list(logs.values()), "pool_output": pool_output,
               "database": server_database}
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def flow_run(api, run_id):
    return api_call(api, f"/flow_runs/{run_id}")


def finished(api, run_id, logs):
    def check():
        current = flow_run(api, run_id)
        if current["state"]["type"] in ("FAILED", "CRASHED", "CANCELLED"):
            pytest.fail(f"flow run {run_id} ended {current['state']['name']}: "
                        f"{current['state'].get('message')}\n"
                        + "\n".join(p.read_text()[-3000:] for p in logs if p.exists()))
        return current if current["state"]["type"] == "COMPLETED" else None

    return check


def test_pool_queues_and_deployments(stack):
    api = stack["api"]
    queues = api_call(api, "/work_pools/batchyard/queues/filter", {})
    assert sorted((q["priority"], q["name"]) for q in queues) == [(1, "high"), (2, "default"), (3, "low")]
    assert api_call(api, "/work_pools/batchyard")["type"] == "process"
    deployments = {d["name"]: d for d in api_call(api, "/deployments/filter", {})}
    assert sorted(deployments) == ["batch-import", "batch-import-high", "batch-import-low",
                                   "etl-pipeline", "retry-failed", "stream-window"]
    assert {n: deployments[n]["work_queue_name"] for n in deployments} == {
        "batch-import": "default", "batch-import-high": "high", "batch-import-low": "low",
        "etl-pipeline": "low", "retry-failed": "default", "stream-window": "high"}
    stream = deployments["stream-window"]
    assert stream["global_concurrency_limit"]["limit"] == 1
    assert stream["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert [s["schedule"]["interval"] for s in stream["schedules"]] == [60.0]
    assert [(s["schedule"]["cron"], s["active"]) for s in deployments["etl-pipeline"]["schedules"]] == [
        ("0 2 * * *", False)]  # paused until its source block exists
    if stack["database"]:  # the server really keeps its state in the PostgreSQL database
        import sqlalchemy as sa

        engine = sa.create_engine(stack["database"].replace("+asyncpg", "+psycopg"))
        with engine.connect() as connection:
            names = connection.exec_driver_sql("SELECT name FROM deployment ORDER BY name").scalars()
            assert list(names) == sorted(deployments)
        engine.dispose()


@pytest.fixture(scope="module")
def batch_run(stack):
    """A batch import sent to the `low` queue through its deployment, run by the worker."""
    source = write_users(stack["base"] / "users.csv", 2_000)
    db = f"sqlite:///{stack['base'] / 'e2e.db'}"
    out = stack["run"](str(BIN / "prefect"), "deployment", "run", "batch-import/batch-import-low",
                       "--param", f"source={source}", "--param", f"db={db}",
                       "--param", "chunk_size=500", "--param", "batch_id=e2e-1")
    run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
    current = wait_for("the batch import run", finished(stack["api"], run_id, stack["logs"]), 240,
                       stack["logs"])
    return {"id": run_id, "run": current, "db": db}


def test_batch_import_through_a_deployment_and_a_worker(stack, batch_run):
    assert batch_run["run"]["work_queue_name"] == "low"
    summary = batch_summary(batch_run["db"], "e2e-1")
    expected = expected_counts(2_000)
    assert {k: summary[k] for k in ("status", "total", "success", "failed", "ignored")} == {
        "status": "completed", "total": 2_000, "success": expected["success"],
        "failed": expected["failed"], "ignored": expected["ignored"]}
    with session(batch_run["db"]) as current:
        assert current.sql("SELECT count(*) FROM users").rows == [(expected["success"],)]
    artifacts = api_call(stack["api"], "/artifacts/filter",
                         {"artifacts": {"flow_run_id": {"any_": [batch_run["id"]]}}})
    assert {a["key"] for a in artifacts} >= {"batch-e2e-1-progress", "batch-e2e-1-counts"}


@pytest.fixture(scope="module")
def stream_run(stack):
    """The first stream-window run that the interval schedule created and the worker completed."""
    api = stack["api"]

    def completed_scheduled_run():
        runs = api_call(api, "/flow_runs/filter", {
            "flows": {"name": {"any_": ["stream-window"]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "sort": "START_TIME_ASC"})
        return runs[0] if runs else None

    return wait_for("a scheduled stream-window run to complete", completed_scheduled_run, 240,
                    stack["logs"])


def test_stream_window_schedule_runs_on_its_own(stack, stream_run):
    api = stack["api"]
    assert stream_run["auto_scheduled"] is True
    assert stream_run["work_queue_name"] == "high"
    assert stream_run["parameters"]["job"]["name"] == "events"
    artifacts = {a["key"]: a for a in api_call(api, "/artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [stream_run["id"]]}}})}
    progress = artifacts["stream-events-progress"]
    assert progress["type"] == "progress" and progress["data"] == 100.0
    windows = json.loads(artifacts["stream-events-windows"]["data"])
    assert len(windows) >= 1 and all(w["committed"] for w in windows)
    assert progress["description"].startswith(f"Stream events: {len(windows)} of at most 1000 windows")
    with session(f"sqlite:///{stack['project'] / 'stream.db'}") as current:
        committed = current.sql("SELECT count(*), max(window_end) FROM batchyard_stream_windows").rows
        watermark = current.sql("SELECT watermark FROM batchyard_stream_state WHERE job = 'events'").rows
    assert committed[0][0] >= len(windows)
    assert watermark == [(committed[0][1],)]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if REQUIRE_SERVICES:
            pytest.fail("chromium is required (BATCHYARD_REQUIRE_SERVICES=1): ./dev test installs it")
        pytest.skip("no chromium: ./dev test installs it as root (apt-get install chromium)")
    return found


class Browser:
    """Headless Chromium driven over the DevTools protocol: open a page, click, read, screenshot."""

    def __init__(self, base: Path):
        from websockets.sync.client import connect

        port = free_port()
        self.process = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={base / 'chromium'}", "--window-size=1440,1100",
             f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, HOME=str(base)))
        pages = wait_for("chromium", lambda: self._pages(port), 60, [])
        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = 0

    @staticmethod
    def _pages(port):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as response:
                return [p for p in json.loads(response.read()) if p.get("type") == "page"]
        except OSError:
            return None

    def call(self, method: str, **params):
        self.ids += 1
        self.socket.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text_when(self, predicate, timeout: float = 60) -> str:
        deadline = time.time() + timeout
        text = ""
        while time.time() < deadline:
            text = self.evaluate("document.body ? document.body.innerText : ''") or ""
            if predicate(text):
                return text
            time.sleep(0.5)
        return text

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


CLICK_TAB = """(() => {
  const tab = [...document.querySelectorAll('button, [role=tab], li, a')]
    .find(e => e.textContent.trim() === 'Artifacts');
  if (tab) { tab.click(); return true; }
  return false;
})()"""


@pytest.mark.parametrize("which", ["batch", "stream"])
def test_the_ui_shows_the_run_and_its_progress_artifact(stack, batch_run, stream_run, which):
    run = {"batch": batch_run["run"], "stream": stream_run}[which]
    key = {"batch": "batch-e2e-1-progress", "stream": "stream-events-progress"}[which]
    ARTIFACTS.mkdir(exist_ok=True)
    browser = Browser(stack["base"] / which)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"http://127.0.0.1:{stack['port']}/runs/flow-run/{run['id']}")
        page = browser.text_when(lambda text: run["name"] in text and "Completed" in text)
        browser.screenshot(ARTIFACTS / f"e2e-{which}-flow-run.png")
        assert run["name"] in page and "Completed" in page
        assert "Could not connect" not in page and "Can't connect" not in page
        assert wait_for("the Artifacts tab", lambda: browser.evaluate(CLICK_TAB), 60, [])
        tab = browser.text_when(lambda text: key in text)
        browser.screenshot(ARTIFACTS / f"e2e-{which}-artifacts.png")
        (ARTIFACTS / f"e2e-{which}-artifacts.txt").write_text(tab)
        assert key in tab
    finally:
        browser.close()
    assert (ARTIFACTS / f"e2e-{which}-flow-run.png").stat().st_size > 10_000
