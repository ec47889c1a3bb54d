"""Run processes forked from a warm parent, so that a scenario run does not import its
libraries again.

A scenario run is a process of its own (`python -m labelloop.cli ... scenario run NAME`): a
crash in a step can't take the server down, and a long training never holds the server's GIL.
But most of a small run's time went to its start: importing scikit-learn, skops, pandas and
SQLAlchemy took about 4.5 of the 7 CPU-seconds of a digits retrain (the every-n loop of the
demo). The `RunLauncher` of a scheduler keeps a *warm parent*: a single-threaded Python
process that imports those libraries once, then forks one child per run (what
multiprocessing's forkserver does). The libraries are the host's own and the ones plugins name
through the `register_run_imports` hook; a module that fails to import is left to the runs.

Nothing of Labelloop or of a plugin is imported before the fork: each run imports the host,
the plugins and their components itself, so it sees the code and project.json as they are
when it starts, as a fresh interpreter would. A child starts its own session (a Ctrl-C meant
for the server does not reach it, and the scheduler signals its process group), reads
/dev/null and writes to the stdout and stderr of the process that asked for it (the
descriptors travel with the request), takes that process' environment, working directory and
the arguments, and runs its `-m` module or `-c` code as that interpreter would; it exits with
the same code.

Own or shared:

- By default a launcher starts a warm parent of its own, at its second run: a scheduler that
  runs once (a one-off `scenario watch`) would pay for the imports and use them once, so the
  first run is a fresh interpreter; the second waits for the imports, as a fresh process would,
  and every later run forks. The warm parent ends when the launcher is closed or its process
  ends (its socket closes); one that died is replaced at the next run.
- With `LABELLOOP_RUN_LAUNCHER=PATH`, the launchers of every process given it (several
  `labelloop serve` of one machine) fork their runs from the warm parent listening on the Unix
  socket PATH, from the first run on: `labelloop scenario launcher --socket PATH` keeps one.
  Where PATH does not answer, a launcher falls back to its own warm parent.

Commands that are not `python -m`/`-c` of the launcher's interpreter are started with
`subprocess.Popen`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import LabelloopError

log = logging.getLogger("labelloop.scenarios")

# The host's own libraries, imported by every run.
HOST_IMPORTS = ("numpy", "pandas", "sqlalchemy", "sqlalchemy.dialects.sqlite",
                "sqlalchemy.dialects.postgresql", "alembic", "alembic.runtime.migration",
                "jsonschema", "click", "pluggy")

SHARED_ENV = "LABELLOOP_RUN_LAUNCHER"


def run_imports(registry: Any) -> list[str]:
    """The modules the registry's plugins name through `register_run_imports`."""
    names: list[str] = []

    def register(module: str) -> None:
        if not isinstance(module, str) or not module:
            raise LabelloopError(f"register_run_imports: a module name, not {module!r}")
        names.append(module)

    registry.pm.hook.register_run_imports(register=register)
    return names


# The warm parent's program: warm_parent.py, run as `python -c` (its text), so that nothing
# of Labelloop is imported and sys.path[0] is the working directory, as with `python -m`.
PARENT_PROGRAM = Path(__file__).parent / "warm_parent.py"


class WarmProcess:
    """A process forked by the warm parent: what the scheduler uses of `subprocess.Popen`."""

    def __init__(self, parent: _Connection, pid: int, args: list[str]):
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


class Refused(Exception):
    """The warm parent can't be this command's interpreter (`popen` starts a fresh one)."""


class _Connection:
    """A connection to a warm parent (its own process when `proc` is set), and what the
    parent said of the children it forked for this connection."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen | None = None):
        self._sock = sock
        self.proc = proc
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._answers: list[dict] = []
        self._exits: dict[int, int] = {}
        self._lost: set[int] = set()  # children still running when the parent went away
        self._pids: set[int] = set()
        self.alive = True
        self.failed_imports: list[str] | None = None  # once it has said
        threading.Thread(target=self._read, name="labelloop-run-launcher", daemon=True).start()

    @classmethod
    def start(cls, python: str, imports: list[str], listen: str | None = None) -> _Connection:
        """A new warm parent of this process (listening on `listen` too, if given)."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            proc = subprocess.Popen(
                [python, "-c", PARENT_PROGRAM.read_text(), str(theirs.fileno()), ",".join(imports),
                 *([listen] if listen else [])], pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL)
        return cls(mine, proc)

    @classmethod
    def connect(cls, path: str) -> _Connection:
        """The warm parent listening on `path` (OSError when none answers)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock)

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
                    self.failed_imports = data["ready"]
                else:
                    self._answers.append(data)
                self._cond.notify_all()

    def usable(self) -> bool:
        return self.alive and (self.proc is None or self.proc.poll() is None)

    def fork(self, python: str, argv: list[str], env: dict[str, str], cwd: str,
             stdio: tuple[int, int, int] | None = None, session: bool = True) -> int:
        """Fork a child running `python argv...` (`["-m"|"-c", target, *args]`); its pid."""
        request = json.dumps({"python": python, "argv": argv, "env": env, "cwd": cwd,
                              "session": session}).encode()
        with self._send_lock, self._cond:
            try:
                socket.send_fds(self._sock, [request], list(stdio or ()))
            except OSError as exc:
                raise OSError(f"the run launcher is gone ({exc})") from exc
            # The answer comes once the imports are done: the first run waits for them.
            self._cond.wait_for(lambda: self._answers or not self.alive, timeout=600)
            if not self._answers:
                raise OSError("the run launcher did not answer (it exited or hung while "
                              "importing the runs' libraries: see the server's log)")
            answer = self._answers.pop(0)
            if "refused" in answer:
                raise Refused(answer["refused"])
            if "error" in answer:
                raise OSError(f"the run launcher could not fork: {answer['error']}")
            self._pids.add(answer["pid"])
            return answer["pid"]

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or pid in self._lost, timeout=timeout)
            if pid not in self._lost:
                return self._exits.get(pid)
        return _exit_of_orphan(pid, timeout)  # not its child any more: wait while it exists

    def close(self) -> None:
        # shutdown, not only close: the reader thread's recv holds the socket open until it
        # returns, and the warm parent ends only when it sees the end of its owner's socket.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self.proc is not None:
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
    """Starts run processes. `popen(argv, env)` forks `[python, -m|-c, ...]` commands from the
    warm parent (from the `warm_from`-th process on, or the first with a shared one); the
    processes before and other commands go to `subprocess.Popen`.

    `imports` gives the modules an own warm parent imports (called when it starts); `shared`
    the socket path of a warm parent to use (default: $LABELLOOP_RUN_LAUNCHER; "": none, an
    own one); `listen` makes the own warm parent listen on that path for other processes
    too."""

    def __init__(self, python: str = sys.executable,
                 imports: Callable[[], Iterable[str]] = lambda: (), warm_from: int | None = 2,
                 shared: str | None = None, listen: str | None = None):
        self.python = python
        self.warm_from = warm_from  # the first process that forks (None: none, as bench/ does)
        self.shared = shared if shared is not None else os.environ.get(SHARED_ENV) or None
        self.listen = listen
        self._imports = imports
        self._parent: _Connection | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        self.started = 0  # processes started

    def _connection(self) -> _Connection:
        with self._lock:
            if self._parent is not None and self._parent.usable():
                return self._parent
            if self._finalizer is not None:
                self._finalizer()  # reaps a warm parent that died
                log.warning("the run launcher exited: starting another")
            self._parent = None
            if self.shared and self.listen is None:
                try:
                    self._parent = _Connection.connect(self.shared)
                except OSError as exc:
                    log.warning("%s=%s: no run launcher answers there (%s); starting one of "
                                "this process", SHARED_ENV, self.shared, exc)
                    self.shared = None
            if self._parent is None:
                try:
                    named = list(self._imports())
                except Exception:  # a plugin's mistake costs its runs the warm imports only
                    log.exception("register_run_imports failed: the runs import those "
                                  "modules themselves")
                    named = []
                imports = list(dict.fromkeys([*HOST_IMPORTS, *named]))
                self._parent = _Connection.start(self.python, imports, self.listen)
            self._finalizer = weakref.finalize(self, self._parent.close)
            return self._parent

    def popen(self, argv: list[str], env: dict[str, str], cwd: str | None = None,
              stdio: tuple[int, int, int] | None = None,
              new_session: bool = True) -> WarmProcess | subprocess.Popen:
        """Start `argv` with the environment `env` in `cwd` (default: here): stdin /dev/null
        and this process' stdout and stderr, or the three descriptors `stdio`; its own
        session unless `new_session` is false."""
        with self._lock:
            self.started += 1
            number = self.started
        first = 1 if (self.shared or self.listen) else self.warm_from
        fork = first is not None and number >= first and len(argv) >= 3 and \
            argv[0] == self.python and argv[1] in ("-m", "-c")
        cwd = cwd or os.getcwd()
        if fork:
            try:
                return self._fork(argv, env, cwd, stdio, new_session)
            except Refused as exc:
                log.info("a fresh interpreter for %s: the run launcher refused (%s)",
                         argv[:3], exc)
        stdin, stdout, stderr = stdio or (subprocess.DEVNULL, None, None)
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin, stdout=stdout,
                                stderr=stderr, start_new_session=new_session)

    def _fork(self, argv: list[str], env: dict[str, str], cwd: str,
              stdio: tuple[int, int, int] | None, new_session: bool) -> WarmProcess:
        parent = self._connection()
        with open(os.devnull, "rb") as devnull:
            # This process' stdout and stderr: a shared warm parent's are another's.
            stdio = stdio or (devnull.fileno(), 1, 2)
            try:
                pid = parent.fork(argv[0], argv[1:], env, cwd, stdio, new_session)
            except Refused:
                raise
            except OSError:
                if parent.usable():
                    raise
                # It died since the last run (its socket closed): once more with a new one.
                parent = self._connection()
                pid = parent.fork(argv[0], argv[1:], env, cwd, stdio, new_session)
        if parent.failed_imports:
            log.warning("the run launcher could not import (the runs import these "
                        "themselves): %s", "; ".join(parent.failed_imports))
            parent.failed_imports = []
        return WarmProcess(parent, pid, argv)

    @property
    def pid(self) -> int | None:
        """The process id of this launcher's own warm parent, while it runs."""
        parent = self._parent
        return parent.proc.pid if parent is not None and parent.proc is not None and \
            parent.proc.poll() is None else None

    def close(self) -> None:
        """Close the connection, ending an own warm parent (runs it started go on, each in
        its own session)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._parent = None
            self._finalizer = None


def keep_launcher(path: str, imports: Iterable[str], python: str = sys.executable) -> None:
    """Run a warm parent listening on `path` until this process is interrupted."""
    launcher = RunLauncher(python, lambda: imports, listen=path)
    parent = launcher._connection()
    try:
        parent.proc.wait()
    finally:
        launcher.close()
