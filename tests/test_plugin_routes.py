"""Hooks a third-party plugin uses: API routes outside /webapps/ and dataset formats."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from conftest import create_project

from labelloop.formats import export_file, import_file

ROUTES_PLUGIN = Path(__file__).resolve().parent / "plugins" / "routes-plugin"


def test_plugin_api_routes_with_auth_methods_and_status(tmp_path, serve, run_cli):
    project = create_project(tmp_path / "p", {"plugin_dirs": [str(ROUTES_PLUGIN)]},
                             plugins=False)
    server = serve(project.dir, "--no-scheduler")
    r = server.get("/api/v1/hello/world", headers={"X-Labelloop-User": "zoe"})
    assert r.status == 200 and r.json() == {"hello": "world", "user": "zoe", "webapps": []}
    assert server.get("/api/v1/hello/world/").status == 200  # trailing slash
    r = server.post("/api/v1/open/echo", {"a": 1})
    assert r.status == 201 and r.json() == {"echo": {"a": 1}, "method": "POST"}
    r = server.get("/api/v1/open/echo")
    assert r.status == 405 and "does not accept GET" in r.json()["error"]
    r = server.post("/api/v1/open/echo", data=b"{nope", headers={"Content-Type":
                                                                  "application/json"})
    assert r.status == 400 and "malformed JSON" in r.json()["error"]
    assert server.get("/api/v1/unknown").status == 404

    token = run_cli(project.dir, "token", "add", "robot").stdout.strip()
    deadline = time.monotonic() + 5  # the server looks for new tokens every 0.5 s
    while server.get("/api/v1/hello/x").status != 401:
        assert time.monotonic() < deadline, "no token required 5 s after one was added"
        time.sleep(0.1)
    assert server.post("/api/v1/open/echo", {"b": 2}).status == 201  # auth=False
    basic = base64.b64encode(f"anything:{token}".encode()).decode()
    for header in (f"Bearer {token}", f"Token {token}", f"Basic {basic}"):
        r = server.get("/api/v1/hello/x", headers={"Authorization": header})
        assert r.status == 200 and r.json()["user"] == "robot", header
    bad = base64.b64encode(b"anything:wrong").decode()
    r = server.get("/api/v1/hello/x", headers={"Authorization": f"Basic {bad}"})
    assert r.status == 401 and "invalid token" in r.json()["error"]


def test_plugin_dataset_format(tmp_path):
    project = create_project(tmp_path / "p", {"plugin_dirs": [str(ROUTES_PLUGIN)]},
                             plugins=False)
    src = tmp_path / "in.words"
    src.write_text("alpha beta gamma")
    assert import_file(project, "w", src) == {"w": 3}
    out = tmp_path / "out.words"
    assert export_file(project, "w", out) == 3
    assert out.read_text() == "alpha beta gamma"
