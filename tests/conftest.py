"""Shared fixtures: the sample plugin, throwaway projects, the CLI, real `labelloop serve` processes.

- `sample_plugin_dir`: tests/plugins/sample-plugin (plugin id "sample").
- `make_project(name="project", config=None, plugins=True, key="TEST") -> Project`: a project
  in tmp_path; with `plugins`, project.json lists the sample plugin in `plugin_dirs` (so
  subprocesses find it too). `create_project(directory, ...)` is the same for any directory.
- `run_cli(project_dir, *args, env=None, check=True)`: `python -m labelloop.cli --project DIR
  ARGS` in a subprocess; returns CompletedProcess (text). With `check`, a non-zero exit fails
  the test showing the output. It and `serve` start their processes through `warm_launch`
  (forked from a parent that has imported the third-party libraries; see there).
- `serve(project_dir, *args, env=None)`: starts `labelloop serve --port <free> ARGS` on
  127.0.0.1, waits for /api/v1/health, returns a `ServerProcess` (.url .port .proc .log()
  .request() .get() .post() .stop()); every server is stopped after the test.
  `serve_module` is the same, shared by a test module.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import warm_launch

from labelloop.project import Project

# One free-port helper: the product's (`labelloop demo --port 0`), re-exported for the tests.
from labelloop.web import free_port  # noqa: F401

# The suite runs several pytest workers (and their servers and CLI subprocesses) on a few
# cores: one BLAS/OpenMP thread per process, or the small fits of the tests' models spin
# threads against each other (a scenario run took twice the CPU time with the default).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def pytest_configure(config):
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))
    _wait_for_function_polls_every(WAIT_POLL_MS)


# Chromium: Playwright's `wait_for_function` checks its condition on every animation frame
# unless told otherwise, and a page asked for frames gets them drawn and composited, 60 a
# second for as long as the test waits (measured: 0.4-1.5 CPU-s of Chromium per 5 s of
# waiting, against 0.02-0.03 s when checked every 50 ms; waits are long when the machine is
# loaded, so that cost grew with the load). The suite's waits check every 50 ms; a call that
# passes `polling` itself keeps it.
WAIT_POLL_MS = 50


def _wait_for_function_polls_every(ms: float) -> None:
    try:
        from playwright.sync_api import Frame, Page
    except ImportError:
        return
    for cls in (Page, Frame):
        method = cls.wait_for_function
        if getattr(method, "_polls_every", None) is not None:
            continue

        def wait_for_function(self, expression, *, arg=None, polling=None, timeout=None,
                              _method=method):
            return _method(self, expression, arg=arg, timeout=timeout,
                           polling=ms if polling is None else polling)

        wait_for_function._polls_every = ms
        wait_for_function.__doc__ = method.__doc__
        cls.wait_for_function = wait_for_function


ROOT = Path(__file__).resolve().parents[1]

# The browser tests' Chromium: Debian's headless shell (package chromium-headless-shell, built
# from the same Chromium as the chromium package; the "old" headless mode that Playwright
# itself runs headless). It draws the same pages without the full browser's window machinery:
# measured on test_webapps_browser, 35 CPU-s of Chromium against 59 for /usr/bin/chromium.
# LABELLOOP_TEST_CHROMIUM names another binary (e.g. /usr/bin/chromium).
CHROMIUM = Path(os.environ.get("LABELLOOP_TEST_CHROMIUM", "/usr/bin/chromium-headless-shell"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM} (`make test` installs Debian's "
                                  "chromium-headless-shell)")
SAMPLE_PLUGIN = ROOT / "tests" / "plugins" / "sample-plugin"
START_TIMEOUT = 60.0


# With LABELLOOP_TEST_POSTGRES (a server URL such as postgresql+psycopg://postgres@127.0.0.1:5432/),
# every project the tests create gets a database of its own on that server (make test-postgres).
TEST_POSTGRES = os.environ.get("LABELLOOP_TEST_POSTGRES", "")
_pg_databases = itertools.count()


def new_database_url(empty: bool = False) -> str | None:
    """A fresh PostgreSQL database for one test project, or None on SQLite.

    It is a copy of this process' template database (`CREATE DATABASE ... TEMPLATE`), which
    `Project.init` made once with every migration history of a test project at its head: the
    same tables as a new project's, for 0.03 CPU-s instead of the 0.2 that running the
    migrations again cost each project. `empty=True` (tests marked `empty_database`, such as
    the migration tests) gives an empty database, which the project's own init migrates.
    """
    if not TEST_POSTGRES:
        return None
    import sqlalchemy as sa

    global _template
    name = f"lltest_{os.getpid()}_{next(_pg_databases)}"
    admin = sa.create_engine(TEST_POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if not empty and _template is None:
                _template = _make_template(conn)
            template = "" if empty else f" TEMPLATE {_template}"
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}{template}")
    finally:
        admin.dispose()
    return _database_url(name)


_template: str | None = None
_PROJECT_INIT = Project.init.__func__  # the unpatched init (the fixture below wraps it)


def _database_url(name: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(TEST_POSTGRES).set(database=name).render_as_string(
        hide_password=False)


def _make_template(conn) -> str:
    """Create and migrate this process' template database (see `new_database_url`)."""
    import tempfile

    name = f"lltest_{os.getpid()}_template"
    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
    conn.exec_driver_sql(f"CREATE DATABASE {name}")
    with tempfile.TemporaryDirectory() as tmp:
        project = _PROJECT_INIT(Project, Path(tmp) / "template", key="TEMPLATE",
                                database_url=_database_url(name),
                                config={"plugin_dirs": [str(SAMPLE_PLUGIN)]})
        project.engine.dispose(close=True)  # a template takes no connection while copied
    return name


def pytest_collection_modifyitems(config, items):
    # Slow tests first, then the browser tests, so that pytest-xdist's workers do not end on
    # one long test (the runs pass --no-loadscope-reorder, which keeps this order).
    items.sort(key=lambda item: (item.get_closest_marker("slow") is None,
                                 item.get_closest_marker("browser") is None))
    if TEST_POSTGRES:
        skip = pytest.mark.skip(reason="SQLite-only (SQLite itself, or no database); this run is on PostgreSQL")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    warm_launch.close()


@pytest.fixture(autouse=True)
def _projects_on_test_postgres(monkeypatch, request):
    """On PostgreSQL runs, every project a test creates in this process gets its own database;
    after the test, the idle connections of their pools are closed (a project a module fixture
    keeps reconnects when used again), so a worker's hundreds of projects do not hold the
    server's connections until they are collected."""
    if not TEST_POSTGRES:
        yield
        return
    init = Project.init.__func__
    made: list[Project] = []
    empty = request.node.get_closest_marker("empty_database") is not None

    def init_on_postgres(cls, directory, *args, database_url=None, **kwargs):
        project = init(cls, directory, *args,
                       database_url=database_url or new_database_url(empty=empty), **kwargs)
        made.append(project)
        return project

    monkeypatch.setattr(Project, "init", classmethod(init_on_postgres))
    yield
    for project in made:
        engine = project.__dict__.get("engine")  # only a pool that was made
        if engine is not None:
            engine.dispose(close=True)


def create_project(directory: Path, config: dict | None = None, plugins: bool = True,
                   key: str = "TEST") -> Project:
    """A new project in `directory`; `plugins` adds the sample plugin to its plugin_dirs."""
    cfg = json.loads(json.dumps(config or {}))  # never mutate the caller's dict
    if plugins:
        cfg["plugin_dirs"] = [*cfg.get("plugin_dirs", []), str(SAMPLE_PLUGIN)]
    return Project.init(directory, key=key, config=cfg)


def labelloop_command(*args: str) -> list[str]:
    """The command line of the labelloop CLI with this interpreter."""
    return [sys.executable, "-m", "labelloop.cli", *args]


CONFIG_VARS = ("LABELLOOP_PROJECT", "LABELLOOP_DATABASE_URL", "LABELLOOP_PLUGIN_PATH",
               "LABELLOOP_LOAD_PLUGINS", "LABELLOOP_BUILTIN_PLUGIN", "LABELLOOP_TRUSTED_TYPES",
               "LABELLOOP_DEBUG")


@pytest.fixture
def clean_env(monkeypatch):
    """No Labelloop setting leaks in from the environment the tests run in."""
    for var in CONFIG_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sample_plugin_dir() -> Path:
    return SAMPLE_PLUGIN


@pytest.fixture
def make_project(tmp_path):
    def make(name: str = "project", config: dict | None = None, plugins: bool = True,
             key: str = "TEST") -> Project:
        return create_project(tmp_path / name, config, plugins, key)

    return make


@pytest.fixture(scope="session")
def project_factory():
    """`create_project` for fixtures of wider scope than a test."""
    return create_project


def _run_cli(project_dir: Path | str, *args: str, env: dict | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
    proc = warm_launch.run(["--project", str(project_dir), *args], timeout=timeout,
                           env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        pytest.fail(f"labelloop {' '.join(args)} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def run_cli():
    return _run_cli


@dataclass
class Response:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # let tests see 302s
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http(method: str, url: str, json_body: Any = None, data: bytes | None = None,
         headers: dict | None = None, timeout: float = 30) -> Response:
    """One HTTP request; any status comes back as a Response (redirects are not followed)."""
    headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return Response(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.headers, exc.read())


def webapp_call(conn: Any, user: str, webapp: str, method: str, path: str,
                body: Any = None) -> tuple[int, Any]:
    """One JSON API call of `user` on a kept-open http.client connection (the load tests'
    annotator threads): `(status, decoded body)`."""
    headers = {"X-Labelloop-User": user}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body), "application/json"
    conn.request(method, f"/api/v1/webapps/{webapp}/{path}", body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read() or b"null")


@dataclass
class ServerProcess:
    """A running `labelloop serve`."""

    url: str
    port: int
    proc: Any  # subprocess.Popen, or warm_launch.WarmProcess (the same methods)
    project_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        return http(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class ServerManager:
    """Starts servers (retrying on a port race) and stops them all at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.servers: list[ServerProcess] = []

    def start(self, project_dir: Path | str, *args: str, env: dict | None = None,
              timeout: float = START_TIMEOUT) -> ServerProcess:
        args = tuple(str(a) for a in args)
        host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
        url_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        for attempt in range(3):
            port = free_port()
            log_path = self.log_dir / f"serve-{port}.log"
            with open(log_path, "wb") as log_file:
                proc = warm_launch.popen(
                    ["--project", str(project_dir), "serve", "--port", str(port), *args],
                    stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
            server = ServerProcess(f"http://{url_host}:{port}", port, proc, Path(project_dir),
                                   log_path)
            self.servers.append(server)
            if self._wait_ready(server, timeout):
                return server
            server.stop()
            if "Address already in use" in server.log() and attempt < 2:
                continue
            pytest.fail(f"labelloop serve did not start (exit {proc.returncode}):\n{server.log()}")
        raise AssertionError("unreachable")

    @staticmethod
    def _wait_ready(server: ServerProcess, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(server.url + "/api/v1/health", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.1)
        return False

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture
def serve(tmp_path):
    manager = ServerManager(tmp_path)
    yield manager.start
    manager.stop_all()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory):
    manager = ServerManager(tmp_path_factory.mktemp("servers"))
    yield manager.start
    manager.stop_all()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll `predicate()` until it returns something truthy (returned); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def poll():
    """`wait_for` as a fixture: poll(predicate, timeout=30, what="...")."""
    return wait_for
