"""A real Label Studio for the interop tests, and a Label Studio ML backend built on its SDK.

Both live in their own virtual environments in the user's cache, like pip's own
(`$LABELLOOP_TEST_CACHE`, else `$XDG_CACHE_HOME/labelloop-tests`, else
`~/.cache/labelloop-tests`), made on first use and reused by every checkout after, so a fresh
clone does not install Label Studio again:

- `label-studio/venv`: `label-studio` from PyPI (a few minutes the first time);
  `label-studio/data-template`: a migrated data directory, copied for each test session so
  that a start takes seconds instead of the migrations' minutes;
- `label-studio-ml/venv`: the `label-studio-ml` SDK.

Label Studio is bound to 127.0.0.1 (`--internal-host`) and told to accept ML backends and
webhooks on 127.0.0.1 (ML_BLOCK_LOCAL_IP, USE_DEFAULT_BANNED_SUBNETS, SSRF_PROTECTION_ENABLED).
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LS_VERSION = "1.23.2"
LS_ML_VERSION = "1.0.9"
# label-studio-ml 1.0.9 imports rq (its job queue) without declaring it.
LS_ML_REQUIREMENTS = (f"label-studio-ml=={LS_ML_VERSION}", "rq")
TOKEN = "0123456789abcdef0123456789abcdef01234567"
USER = "admin@example.com"
START_TIMEOUT = 420.0


def cache_dir() -> Path:
    if os.environ.get("LABELLOOP_TEST_CACHE"):
        return Path(os.environ["LABELLOOP_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "labelloop-tests"


def base_python() -> str:
    """A Python for the tools' venvs: 3.12 if there is one (Label Studio's tested version)."""
    candidates = [*sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
                  shutil.which("python3.12"), getattr(sys, "_base_executable", None),
                  sys.executable]
    for c in candidates:
        if c and os.path.exists(c) and subprocess.run(
                [c, "-c", "import venv"], capture_output=True).returncode == 0:
            return c
    return sys.executable


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def venv_with(name: str, *requirements: str) -> Path:
    """`<cache>/<name>/venv` with `requirements` installed (once; a marker says it's done)."""
    requirement = " ".join(requirements)
    root = cache_dir() / name
    venv = root / "venv"
    marker = venv / ".labelloop-installed"
    with _locked(root / ".lock"):
        if marker.exists() and marker.read_text().strip() == requirement:
            return venv
        if venv.exists() or venv.is_symlink():
            if venv.is_symlink():
                venv.unlink()
            else:
                shutil.rmtree(venv)
        subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
               "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True, timeout=1200)
        marker.write_text(requirement)
    return venv


def http_json(method: str, url: str, body: Any = None, token: str | None = TOKEN,
              timeout: float = 60) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Token {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode("utf-8", "replace")


@dataclass
class LabelStudio:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def api(self, method: str, path: str, body: Any = None, expect: tuple = (200, 201, 204)
            ) -> Any:
        status, answer = http_json(method, self.url + path, body)
        assert status in expect, f"Label Studio {method} {path}: {status} {answer}\n" \
                                 f"{self.log()[-3000:]}"
        return answer

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def ls_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELLOOP_", "DJANGO"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "ML_BLOCK_LOCAL_IP": "false", "USE_DEFAULT_BANNED_SUBNETS": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": "labelloop-test-1",
        "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LOCAL_FILES_SERVING_ENABLED": "true",
        # Two shared cores: Label Studio's 1 s / 3 s defaults are tight for any backend.
        "ML_TIMEOUT_HEALTH": "10", "ML_TIMEOUT_SETUP": "30",
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
    })
    return env


def _start(venv: Path, data_dir: Path, port: int, log_path: Path) -> LabelStudio:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host",
             "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ls_env(data_dir),
            cwd=str(data_dir))
    ls = LabelStudio(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"label-studio exited {proc.returncode}:\n{ls.log()[-4000:]}")
        try:
            status, _ = http_json("GET", ls.url + "/api/projects", token=TOKEN, timeout=5)
            if status == 200:
                return ls
        except OSError:
            pass
        time.sleep(1)
    ls.stop()
    raise RuntimeError(f"label-studio did not answer in {START_TIMEOUT}s:\n{ls.log()[-4000:]}")


def start_label_studio(tmp: Path, port: int) -> LabelStudio:
    """A fresh Label Studio (its data copied from the cached, migrated template)."""
    venv = venv_with("label-studio", f"label-studio=={LS_VERSION}")
    template = cache_dir() / "label-studio" / "data-template"
    with _locked(cache_dir() / "label-studio" / ".template-lock"):
        if not (template / ".ready").exists():
            shutil.rmtree(template, ignore_errors=True)
            template.mkdir(parents=True)
            ls = _start(venv, template, port, tmp / "label-studio-first.log")
            ls.stop()
            (template / ".ready").write_text(LS_VERSION)
    data = tmp / "ls-data"
    shutil.copytree(template, data)
    return _start(venv, data, port, tmp / "label-studio.log")
