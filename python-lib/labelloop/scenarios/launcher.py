"""Run processes forked from a warm parent, so that a scenario run does not import its
libraries again.

A scenario run is a process of its own (`python -m labelloop.cli ... scenario run NAME`): a
crash in a step can't take the server down, and a long training never holds the server's GIL.
But most of a small run's time went to its start: importing scikit-learn, skops, pandas and
SQLAlchemy took about 4.5 of the 7 CPU-seconds of a digits retrain (the every-n loop of the
demo). The `RunLauncher` of a scheduler keeps one *warm parent*: a single-threaded Python
process that imports those libraries once, then forks one child per run (what
multiprocessing's forkserver does). The libraries are the host's own and the ones plugins name
through the `register_run_imports` hook; a module that fails to import is left to the runs.

Nothing of Labelloop or of a plugin is imported before the fork: each run imports the host,
the plugins and their components itself, so it sees the code and project.json as they are
when it starts, as a fresh interpreter would. A child starts its own session
(`start_new_session`: a Ctrl-C meant for the server does not reach it, and the scheduler
signals its process group), reads /dev/null, writes to the scheduler process's stdout and
stderr, takes the environment, working directory and arguments of the request, and runs its
`-m` module or `-c` code as that interpreter would; it exits with the same code.

The first run of a launcher is a fresh interpreter: a scheduler that runs once (a test, a
one-off `scenario watch`) would pay for the warm parent's imports and use them once. The warm
parent starts with the second run (that run waits for the imports, as a fresh process would)
and every later run forks from it; it ends when the launcher is closed or its process ends
(its socket closes). A warm parent that died is replaced at the next run. Commands that are
not `python -m`/`-c` of the launcher's interpreter are started with `subprocess.Popen`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import LabelloopError

log = logging.getLogger("labelloop.scenarios")

# The host's own libraries, imported by every run.
HOST_IMPORTS = ("numpy", "pandas", "sqlalchemy", "sqlalchemy.dialects.sqlite",
                "sqlalchemy.dialects.postgresql", "alembic", "alembic.runtime.migration",
                "jsonschema", "click", "pluggy")



def run_imports(registry: Any) -> list[str]:
    """The modules the registry's plugins name through `register_run_imports`."""
    names: list[str] = []

    def register(module: str) -> None:
        if not isinstance(module, str) or not module:
            raise LabelloopError(f"register_run_imports: a module name, not {module!r}")
        names.append(module)

    registry.pm.hook.register_run_imports(register=register)
    return names


# The warm parent's program (`python -c`). argv: the socket's descriptor, the modules to
# import. Requests arrive on a SOCK_SEQPACKET socket as JSON {"argv", "env", "cwd"}; it
# answers {"pid"} (or {"error"}) at once and {"exit", "code"} when that child ends.
_PARENT = r'''
import gc, importlib, json, os, runpy, select, signal, socket, sys
gc.disable()
failed = []
for name in filter(None, sys.argv[2].split(",")):
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
# What the imports made goes to gc's permanent generation: a child's collections leave it
# alone, and its memory pages stay shared with this process (copy on write).
gc.freeze()
sock = socket.socket(fileno=int(sys.argv[1]))
sock.send(json.dumps({"ready": failed}).encode())
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

def child(req):
    os.setsid()
    sock.close()
    os.close(wake_r)
    os.close(wake_w)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    gc.enable()
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    flag, target, *args = req["argv"]
    sys.path[0] = os.getcwd()
    if flag == "-m":
        sys.argv = ["-m", *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        sys.argv = ["-c", *args]
        main = sys.modules["__main__"]
        for key in [k for k in vars(main) if not k.startswith("__")]:
            delattr(main, key)
        exec(compile(target, "<string>", "exec"), vars(main))

while True:
    ready = select.select([sock, wake_r], [], [])[0]
    if wake_r in ready:
        os.read(wake_r, 4096)
        reap()
    if sock not in ready:
        continue
    try:
        msg = sock.recv(1 << 20)
    except InterruptedError:
        continue
    if not msg:
        break
    req = json.loads(msg)
    try:
        pid = os.fork()
    except OSError as exc:
        sock.send(json.dumps({"error": str(exc)}).encode())
        continue
    if pid == 0:
        child(req)
        sys.exit(0)
    running.add(pid)
    sock.send(json.dumps({"pid": pid}).encode())
    reap()
'''


class WarmProcess:
    """A run forked by the warm parent: what the scheduler uses of `subprocess.Popen`."""

    def __init__(self, parent: _WarmParent, pid: int, args: list[str]):
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


class _WarmParent:
    """One warm parent process and what it said of its children."""

    def __init__(self, python: str, imports: list[str]):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = mine
        with theirs:
            self.proc = subprocess.Popen(
                [python, "-c", _PARENT, str(theirs.fileno()), ",".join(imports)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._answers: list[dict] = []
        self._exits: dict[int, int] = {}
        self._lost: set[int] = set()  # children still running when the parent went away
        self._pids: set[int] = set()
        self.alive = True
        self.ready: list[str] | None = None  # the imports that failed, once it has said
        threading.Thread(target=self._read, name="labelloop-run-launcher", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                msg = self._sock.recv(1 << 16)
            except OSError:
                msg = b""
            with self._cond:
                if not msg:
                    self.alive = False
                    self._lost = self._pids - set(self._exits)
                    self._cond.notify_all()
                    return
                data = json.loads(msg)
                if "exit" in data:
                    self._exits[data["exit"]] = data["code"]
                elif "ready" in data:
                    self.ready = data["ready"]
                else:
                    self._answers.append(data)
                self._cond.notify_all()

    def start(self, argv: list[str], env: dict[str, str], cwd: str) -> int:
        request = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
        with self._send_lock, self._cond:
            try:
                self._sock.send(request)
            except OSError as exc:
                raise OSError(f"the run launcher is gone ({exc})") from exc
            # The answer comes once the imports are done: the first run waits for them.
            self._cond.wait_for(lambda: self._answers or not self.alive, timeout=600)
            if not self._answers:
                raise OSError("the run launcher did not answer (it exited or hung while "
                              "importing the runs' libraries: see the server's log)")
            answer = self._answers.pop(0)
            if "error" in answer:
                raise OSError(f"the run launcher could not fork: {answer['error']}")
            self._pids.add(answer["pid"])
            return answer["pid"]

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or pid in self._lost, timeout=timeout)
            if pid in self._lost:  # not its child any more: wait while the process exists
                return _exit_of_orphan(pid, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        self._sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _exit_of_orphan(pid: int, timeout: float | None) -> int | None:
    """A run whose warm parent died: no parent reports its code. -9 once it is gone (its run
    record says how it ended: the scheduler closes it only if it stayed RUNNING), None while
    it runs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return -9
        except PermissionError:
            pass
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


class RunLauncher:
    """Starts run processes: `popen(argv, env)` for `[python, -m|-c, ...]` commands forks the
    warm parent from the second run on; the first run and other commands go to
    `subprocess.Popen`. `imports` gives the modules the
    warm parent imports (called when it starts)."""

    def __init__(self, python: str, imports: Callable[[], Iterable[str]] = lambda: (),
                 warm_from: int | None = 2):
        self.python = python
        self.warm_from = warm_from  # the first run that forks (None: none, as bench/ compares)
        self._imports = imports
        self._parent: _WarmParent | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        self.started = 0  # processes started

    def _warm_parent(self) -> _WarmParent:
        with self._lock:
            if self._parent is None or not self._parent.alive or \
                    self._parent.proc.poll() is not None:
                if self._parent is not None:
                    self._finalizer()  # reaps it
                    log.warning("the run launcher (pid %s) exited with code %s: starting "
                                "another", self._parent.proc.pid, self._parent.proc.returncode)
                try:
                    named = list(self._imports())
                except Exception:  # a plugin's mistake costs its runs the warm imports only
                    log.exception("register_run_imports failed: the runs import those "
                                  "modules themselves")
                    named = []
                imports = list(dict.fromkeys([*HOST_IMPORTS, *named]))
                self._parent = _WarmParent(self.python, imports)
                self._finalizer = weakref.finalize(self, self._parent.close)
            return self._parent

    def popen(self, argv: list[str], env: dict[str, str]) -> WarmProcess | subprocess.Popen:
        """Start `argv` (stdin /dev/null, its own session) with the environment `env`."""
        with self._lock:
            self.started += 1
            number = self.started
        fork = self.warm_from is not None and number >= self.warm_from and \
            len(argv) >= 3 and argv[0] == self.python and argv[1] in ("-m", "-c")
        if not fork:
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        parent = self._warm_parent()
        try:
            pid = parent.start(argv[1:], env, os.getcwd())
        except OSError:
            if parent.alive:
                raise
            # It died since the last run (its socket closed): once more with a new one.
            parent = self._warm_parent()
            pid = parent.start(argv[1:], env, os.getcwd())
        if parent.ready:
            log.warning("the run launcher could not import (the runs import these "
                        "themselves): %s", "; ".join(parent.ready))
            parent.ready = []
        return WarmProcess(parent, pid, argv)

    @property
    def pid(self) -> int | None:
        """The warm parent's process id, while it runs."""
        parent = self._parent
        return parent.proc.pid if parent is not None and parent.proc.poll() is None else None

    def close(self) -> None:
        """End the warm parent (runs it started go on, each in its own session)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._parent = None
            self._finalizer = None
