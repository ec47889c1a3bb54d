"""Start `python -m labelloop.cli ...` processes for the tests from a warm parent.

Why: the suite starts hundreds of CLI and `labelloop serve` processes, and most of each one's
CPU time went to importing the same third-party libraries (Bokeh, pandas, SQLAlchemy: about
1.6 of a server's 2.6 CPU-seconds to its first answer). Each pytest worker keeps one *warm
parent*, the product's (labelloop.scenarios.launcher, the one scenario runs fork from): a
single-threaded Python process that imports those libraries once and then forks a child per
command. The child takes the caller's stdin/stdout/stderr, working directory, environment and
arguments and runs `labelloop.cli` as `python -m` does, then exits like that interpreter: its
exit code, or minus the signal that ended it. Nothing of Labelloop is imported before the
fork: the product's own modules, plugins and their import errors are as in a fresh process.

The warm parent also listens on a Unix socket named in LABELLOOP_RUN_LAUNCHER for every
process the tests start: the scenario runs of the tests' servers fork from it too, from their
first run on (scikit-learn and skops are among its imports), instead of each server starting
a warm parent of its own.

A command whose environment changes a `PYTHON*` variable (another `PYTHONPATH`...) is refused
by the warm parent (its imports were made with the old one) and gets a fresh interpreter, as
does every command when `LABELLOOP_TEST_FRESH_PROCESSES=1`. Tests whose subject is the start
itself start their processes with `subprocess` and keep fresh interpreters: the wheel, the
entry points and console script, signals while starting. `labelloop demo` (test_demo, the
spans demo, the end-to-end loop) goes through `popen`/`run` here: its start is not what they
test.

`popen(args, ...)` returns a `labelloop.scenarios.launcher.WarmProcess` with what the tests use
of `Popen` (`pid`, `returncode`, `poll`, `wait`, `terminate`, `kill`, `send_signal`); `run`
mirrors `subprocess.run(..., capture_output=True, text=True)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from labelloop.plugins import PluginRegistry
from labelloop.scenarios.launcher import SHARED_ENV, RunLauncher, run_imports

# Imported by the warm parent before it forks: third-party libraries only. Those the scenario
# runs use (scikit-learn, skops: also recipes, reports and servers that load a model) come
# from the built-in plugin's `register_run_imports`. One BLAS thread (tests/conftest.py), so
# no thread is lost by a fork.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "sqlalchemy", "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql", "psycopg", "alembic", "alembic.runtime.migration",
    "jsonschema", "click", "pluggy", "tornado.web", "tornado.httpserver", "bokeh.models",
    "bokeh.application", "bokeh.server.server", "bokeh.embed", "PIL.Image",
)


def _imports() -> list[str]:
    return [*PRELOAD, *run_imports(PluginRegistry(load_entry_points=False))]


_launcher: RunLauncher | None = None
_lock = threading.Lock()


def launcher() -> RunLauncher:
    """This pytest worker's launcher; its warm parent starts with the first command."""
    global _launcher
    with _lock:
        if _launcher is None:
            path = os.path.join(tempfile.mkdtemp(prefix="labelloop-warm-"), "launcher.sock")
            os.environ[SHARED_ENV] = path  # every process started from now on
            _launcher = RunLauncher(sys.executable, _imports, listen=path)
        return _launcher


def close() -> None:
    """End this worker's warm parent (it ends by itself when the worker's end closes its socket;
    waiting for it here also counts its children's CPU time in the worker's)."""
    global _launcher
    with _lock:
        if _launcher is not None:
            _launcher.close()
            _launcher = None


def _start(args: list[str], stdio: tuple[int, int, int], env: dict[str, str] | None,
           cwd: str | None) -> Any:
    warm = launcher()
    env = dict(os.environ if env is None else env)
    env.setdefault(SHARED_ENV, warm.listen)
    command = [sys.executable, "-m", "labelloop.cli", *args]
    if os.environ.get("LABELLOOP_TEST_FRESH_PROCESSES") == "1":
        return subprocess.Popen(command, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2],
                                env=env, cwd=cwd)
    return warm.popen(command, env, cwd=cwd, stdio=stdio, new_session=False)


def popen(args: list[str], stdout: Any = None, stderr: Any = None,
          env: dict[str, str] | None = None, cwd: str | None = None) -> Any:
    """`labelloop ARGS` started like `subprocess.Popen([python, -m, labelloop.cli, *ARGS],
    stdin=DEVNULL, stdout=..., stderr=...)` (files or `subprocess.STDOUT` for stderr)."""
    with open(os.devnull, "rb") as devnull:
        out = stdout.fileno() if stdout is not None else 1
        err = out if stderr == subprocess.STDOUT else (stderr.fileno() if stderr else 2)
        return _start(list(args), (devnull.fileno(), out, err), env, cwd)


def run(args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`labelloop ARGS` to its end, its output captured as text (`subprocess.run` with
    `capture_output=True, text=True, stdin=DEVNULL`)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with open(os.devnull, "rb") as devnull:
            proc = _start(list(args), (devnull.fileno(), out_w, err_w), env, cwd)
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        with open(fd, "rb", closefd=True) as f:
            chunks[fd].append(f.read())

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in chunks]
    for reader in readers:
        reader.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        proc.wait(timeout)
        for reader in readers:
            reader.join(None if deadline is None else max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
    text = {fd: b"".join(parts).decode("utf-8", "replace") for fd, parts in chunks.items()}
    return subprocess.CompletedProcess(proc.args, proc.returncode, text[out_r], text[err_r])
