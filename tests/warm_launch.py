"""Start `python -m labelloop.cli ...` processes for the tests from a warm parent.

Why: the suite starts hundreds of CLI and `labelloop serve` processes, and most of each one's
CPU time went to importing the same third-party libraries (Bokeh, pandas, SQLAlchemy: about
1.6 of a server's 2.6 CPU-seconds to its first answer). Each pytest worker keeps one *warm
parent*: a single-threaded Python process that imports those libraries once and then forks a
child per command (what multiprocessing's forkserver and gunicorn's preload do). The child
takes the caller's stdin/stdout/stderr, working directory, environment and arguments and runs
`labelloop.cli` as `python -m` does (`runpy`, `__main__`), then exits like that interpreter:
its exit code, or minus the signal that ended it. Nothing of Labelloop is imported before the
fork: the product's own modules, plugins and their import errors are as in a fresh process.

A command whose environment changes a `PYTHON*` variable (another `PYTHONPATH`...) can't use
the warm parent (its imports were made with the old one) and gets a fresh interpreter, as does
every command when `LABELLOOP_TEST_FRESH_PROCESSES=1`. Tests whose subject is the start itself
start their processes with `subprocess` and keep fresh interpreters: the wheel, the entry
points and console script, signals while starting. `labelloop demo` (test_demo, the spans
demo, the end-to-end loop) goes through `popen`/`run` here: its start is not what they test.

`launcher().popen(args, ...)` returns a `WarmProcess` with what the tests use of `Popen`
(`pid`, `returncode`, `poll`, `wait`, `terminate`, `kill`, `send_signal`); `launcher().run`
mirrors `subprocess.run(..., capture_output=True, text=True)`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

# Imported by the warm parent before it forks: third-party libraries only.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "sqlalchemy", "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql", "psycopg", "alembic", "alembic.runtime.migration",
    "jsonschema", "click", "pluggy", "tornado.web", "tornado.httpserver", "bokeh.models",
    "bokeh.application", "bokeh.server.server", "bokeh.embed", "PIL.Image",
    # scikit-learn and skops (which imports every estimator): recipes, reports and servers
    # that load a model. One BLAS thread (tests/conftest.py), so no thread is lost by a fork.
    "sklearn.linear_model", "sklearn.pipeline", "sklearn.model_selection", "skops.io",
)

# The warm parent's program (run with `python -c`, so that sys.path[0] is the working
# directory as with `python -m`). Requests arrive on a SOCK_SEQPACKET socket, each a JSON
# object with the stdin/stdout/stderr descriptors attached; it answers {"pid"} at once and
# {"exit", "code"} when that child ends.
_PARENT = r'''
import gc, importlib, json, os, runpy, select, signal, socket, sys
gc.disable()
for name in sys.argv[2].split(","):
    try:
        importlib.import_module(name)
    except ImportError:
        pass
# What the imports made goes to gc's permanent generation: a child's collections then leave
# those objects alone, and their memory pages stay shared with this process (copy on write).
gc.freeze()
sock = socket.socket(fileno=int(sys.argv[1]))
wake_r, wake_w = os.pipe()
os.set_blocking(wake_w, False)
signal.set_wakeup_fd(wake_w)
signal.signal(signal.SIGCHLD, lambda *a: None)
signal.signal(signal.SIGINT, signal.SIG_IGN)
running = set()

def reap():
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        running.discard(pid)
        sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())

def child(req, fds):
    gc.enable()
    sock.close()
    os.close(wake_r)
    os.close(wake_w)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.path[0] = os.getcwd()
    sys.argv = ["-m", *req["args"]]
    runpy.run_module("labelloop.cli", run_name="__main__", alter_sys=True)

while True:
    ready = select.select([sock, wake_r], [], [])[0]
    if wake_r in ready:
        os.read(wake_r, 4096)
        reap()
    if sock not in ready:
        continue
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
    except InterruptedError:
        continue
    if not msg:
        break
    req = json.loads(msg)
    pid = os.fork()
    if pid == 0:
        child(req, fds)
        sys.exit(0)
    for fd in fds:
        os.close(fd)
    running.add(pid)
    sock.send(json.dumps({"pid": pid}).encode())
    reap()
'''


def _fresh_only(env: dict[str, str]) -> bool:
    if os.environ.get("LABELLOOP_TEST_FRESH_PROCESSES") == "1":
        return True
    return any(env.get(k) != os.environ.get(k) for k in set(env) | set(os.environ)
               if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED")


class WarmProcess:
    """A child of the warm parent, as much of `subprocess.Popen` as the tests use."""

    def __init__(self, parent: WarmParent, pid: int, args: list[str]):
        self._parent = parent
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._parent.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self._parent.exit_code(self.pid, timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class WarmParent:
    """One warm parent process of this pytest worker, and what it said of its children."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = mine
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _PARENT, str(theirs.fileno()), ",".join(PRELOAD)],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        theirs.close()
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._alive = True
        threading.Thread(target=self._read, name="warm-parent", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                msg = self._sock.recv(1 << 16)
            except OSError:
                msg = b""
            with self._cond:
                if not msg:
                    self._alive = False
                    self._cond.notify_all()
                    return
                data = json.loads(msg)
                if "pid" in data:
                    self._pids.append(data["pid"])
                else:
                    self._exits[data["exit"]] = data["code"]
                self._cond.notify_all()

    def start(self, args: list[str], stdio: tuple[int, int, int], env: dict[str, str],
              cwd: str) -> int:
        request = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
        with self._send_lock, self._cond:
            socket.send_fds(self._sock, [request], list(stdio))
            if not self._cond.wait_for(lambda: self._pids or not self._alive, timeout=60):
                raise RuntimeError("the warm parent did not answer")
            if not self._pids:
                raise RuntimeError("the warm parent is gone")
            return self._pids.pop(0)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or not self._alive, timeout=timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()


_parent: WarmParent | None = None
_parent_lock = threading.Lock()


def _warm_parent() -> WarmParent:
    global _parent
    with _parent_lock:
        if _parent is None or _parent._proc.poll() is not None:
            _parent = WarmParent()
        return _parent


def close() -> None:
    """End this worker's warm parent (it ends by itself when the worker's end closes its socket;
    waiting for it here also counts its children's CPU time in the worker's)."""
    global _parent
    with _parent_lock:
        if _parent is not None:
            _parent.close()
            _parent = None


def popen(args: list[str], stdout: Any = None, stderr: Any = None,
          env: dict[str, str] | None = None, cwd: str | None = None) -> Any:
    """`labelloop ARGS` started like `subprocess.Popen([python, -m, labelloop.cli, *ARGS],
    stdin=DEVNULL, stdout=..., stderr=...)` (files or `subprocess.STDOUT` for stderr)."""
    env = dict(os.environ if env is None else env)
    cwd = cwd or os.getcwd()
    if _fresh_only(env):
        return subprocess.Popen([sys.executable, "-m", "labelloop.cli", *args], stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    with open(os.devnull, "rb") as devnull:
        out = stdout.fileno() if stdout is not None else 1
        err = out if stderr == subprocess.STDOUT else (stderr.fileno() if stderr else 2)
        pid = _warm_parent().start(list(args), (devnull.fileno(), out, err), env, cwd)
    return WarmProcess(_warm_parent(), pid, args)


def run(args: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess:
    """`labelloop ARGS` to its end, its output captured as text (`subprocess.run` with
    `capture_output=True, text=True, stdin=DEVNULL`)."""
    env = dict(os.environ if env is None else env)
    command = [sys.executable, "-m", "labelloop.cli", *args]
    if _fresh_only(env):
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with open(os.devnull, "rb") as devnull:
            pid = _warm_parent().start(list(args), (devnull.fileno(), out_w, err_w), env,
                                       cwd or os.getcwd())
    finally:
        os.close(out_w)
        os.close(err_w)
    proc = WarmProcess(_warm_parent(), pid, command)
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
    return subprocess.CompletedProcess(command, proc.returncode, text[out_r], text[err_r])
