"""A non-editable install works: the wheel carries the host, the plugin's library and its tree.

The wheel is built from this checkout and installed (without dependencies) into a fresh virtual
environment whose only view of the dependencies is this environment's site-packages, appended
after its own. Nothing of the checkout is on that environment's path, so what runs is what the
wheel installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import free_port, wait_for

from labelloop.plugins import COMPONENT_DIRS

ROOT = Path(__file__).resolve().parents[1]

# Packaging, not the database: once, on the SQLite run.
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]


def _plugin_components(root: Path) -> set[str]:
    """`kind/id` of every component directory of the plugin tree at `root`."""
    found = set()
    for kind, (dirname, descriptor, _code, _fn) in COMPONENT_DIRS.items():
        for d in (root / dirname).glob(f"*/{descriptor}"):
            found.add(f"{kind}/{d.parent.name}")
    return found


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, the wheel's path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp / "dist"), str(ROOT)],
        capture_output=True, text=True, cwd=tmp)
    assert build.returncode == 0, build.stdout + build.stderr
    wheel = next((tmp / "dist").glob("labelloop-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                          capture_output=True, text=True, cwd=tmp)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    # The dependencies come from this environment, after the venv's own site-packages; a
    # directory named in a .pth file has its own .pth files ignored, so this environment's
    # editable install of the checkout stays out of sight.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py, wheel, tmp


def _run(py: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LABELLOOP_") and k != "PYTHONPATH"}
    return subprocess.run([str(py), *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_wheel_carries_every_component_of_the_plugin(wheel_env):
    _py, wheel, _tmp = wheel_env
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    prefix = "labelloop/builtin_plugin/"
    packed = {n[len(prefix):] for n in names if n.startswith(prefix)}
    assert "plugin.json" in packed
    expected = _plugin_components(ROOT)
    assert expected
    for comp in expected:
        kind, cid = comp.split("/")
        dirname, descriptor, code, _fn = COMPONENT_DIRS[kind]
        assert f"{dirname}/{cid}/{descriptor}" in packed, comp
        assert f"{dirname}/{cid}/{code}" in packed, comp
    # The page's assets and the plugin's library travel too; no checkout clutter does.
    assert any(n.startswith("resource/") and n.endswith(".js") for n in packed)
    assert any(n.startswith("labeling/") and n.endswith(".py") for n in names)
    assert not any("__pycache__" in n for n in names)


def test_installed_wheel_lists_the_plugin_and_builds_the_demo(wheel_env):
    py, _wheel, tmp = wheel_env
    where = _run(py, "-c", "import labelloop, labeling; print(labelloop.__file__); "
                 "print(labeling.__file__)", cwd=tmp)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(tmp / "venv") in line and str(ROOT) not in line, where.stdout

    listed = _run(py, "-m", "labelloop.cli", "plugin", "list", cwd=tmp)
    assert listed.returncode == 0, listed.stderr
    for comp in _plugin_components(ROOT):
        kind, cid = comp.split("/")
        assert f"ml-assisted-labeling/{cid}" in listed.stdout, (comp, listed.stdout)

    demo = _run(py, "-m", "labelloop.cli", "demo", "--no-serve", cwd=tmp)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    project = json.loads((tmp / "demo-project" / "project.json").read_text())
    assert project["webapps"], project

    # The page is served from the installed copy: its template and assets are in the wheel.
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LABELLOOP_") and k != "PYTHONPATH"}
    server = subprocess.Popen(
        [str(py), "-m", "labelloop.cli", "--project", str(tmp / "demo-project"), "serve",
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(base + "/api/v1/health")[0] == 200, timeout=60,
                 what="the wheel's server")
        webapp = next(iter(project["webapps"]))
        status, page = _get(f"{base}/webapps/{webapp}")
        assert status == 200 and b"ll-app" in page
        assert _get(f"{base}/resource/ml-assisted-labeling/labeling.js")[0] == 200
        status, body = _get(f"{base}/api/v1/webapps/{webapp}/batch?size=1")
        assert status == 200 and json.loads(body)["items"], body[:200]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""
