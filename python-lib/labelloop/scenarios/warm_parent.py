"""The warm parent of labelloop.scenarios.launcher: imports libraries once, forks a child per
request. Run as `python -c <this file's text> OWNER_FD MODULES [SOCKET_PATH]` (never imported:
it must not import anything of Labelloop before a fork).

OWNER_FD: a SOCK_SEQPACKET socket to the process that started it; the warm parent ends when
that closes. MODULES: comma-separated modules to import. SOCKET_PATH: also listen there for
other processes (clients). Each request is JSON {"python", "argv": ["-m" | "-c", target,
*args], "env", "cwd", "session"} with 0 or 3 descriptors (stdin, stdout, stderr) attached.
Each client gets {"ready": [imports that failed]} first, then per request {"pid"}, {"error"}
or {"refused"} (the request needs another interpreter, or other PYTHON* variables, than the
ones its imports were made with), and {"exit", "code"} when that child ends.
"""

import gc
import importlib
import json
import os
import runpy
import select
import signal
import socket
import sys


def python_env(env):
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"}


def refusal(req):
    """Why this process can't be the request's interpreter, or None."""
    if req.get("python", sys.executable) != sys.executable:
        return f"it runs {sys.executable}, not {req['python']}"
    if python_env(req["env"]) != python_env(os.environ):
        return "the request's PYTHON* variables differ from its own"
    return None


def tell(client, data):
    try:
        client.send(json.dumps(data).encode())
    except OSError:
        pass


class WarmParent:
    def __init__(self, owner_fd, modules, path):
        self.owner = socket.socket(fileno=owner_fd)
        self.clients = [self.owner]
        self.path = path
        self.listener = None
        if path:
            # Listening before the imports (clients wait in the backlog), and before the
            # path appears: a client never finds a path that does not answer.
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self.listener.bind(path + ".new")
            self.listener.listen(64)
            os.replace(path + ".new", path)
        self.failed = []
        for name in filter(None, modules.split(",")):
            try:
                importlib.import_module(name)
            except Exception as exc:
                self.failed.append(f"{name}: {type(exc).__name__}: {exc}")
        # What the imports made goes to gc's permanent generation: a child's collections
        # leave it alone, and its memory pages stay shared with this process (copy on write).
        gc.freeze()
        tell(self.owner, {"ready": self.failed})
        self.wake_r, wake_w = os.pipe()
        self.wake_w = wake_w
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.running = {}  # pid -> the client that asked for it

    def reap(self):
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            tell(self.running.pop(pid), {"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def child(self, req, fds):
        """In the forked child: become the requested process (never returns normally)."""
        if req.get("session", True):
            os.setsid()
        for s in self.clients + ([self.listener] if self.listener else []):
            s.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if not fds:
            fds = [os.open(os.devnull, os.O_RDONLY)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
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
        sys.exit(0)

    def handle(self, client):
        try:
            msg, fds, _flags, _addr = socket.recv_fds(client, 1 << 20, 3)
        except InterruptedError:
            return
        except OSError:
            msg, fds = b"", []
        if not msg:
            self.clients.remove(client)
            client.close()
            if client is self.owner:
                if self.path:
                    os.unlink(self.path)
                sys.exit(0)
            return
        req = json.loads(msg)
        reason = refusal(req)
        pid = None
        if reason:
            tell(client, {"refused": reason})
        else:
            try:
                pid = os.fork()
            except OSError as exc:
                tell(client, {"error": str(exc)})
            if pid == 0:
                self.child(req, fds)
        for fd in fds:
            os.close(fd)
        if pid:
            self.running[pid] = client
            tell(client, {"pid": pid})

    def serve(self):
        while True:
            watched = self.clients + [self.wake_r] + ([self.listener] if self.listener else [])
            ready = select.select(watched, [], [])[0]
            if self.wake_r in ready:
                os.read(self.wake_r, 4096)
                self.reap()
            if self.listener is not None and self.listener in ready:
                try:
                    conn, _ = self.listener.accept()
                except OSError:
                    conn = None
                if conn is not None:
                    self.clients.append(conn)
                    tell(conn, {"ready": self.failed})
            for client in [c for c in ready if c in self.clients]:
                self.handle(client)
            self.reap()


if __name__ == "__main__":
    gc.disable()
    WarmParent(int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None).serve()
