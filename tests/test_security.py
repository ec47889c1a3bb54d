"""Security and robustness (issue 11): one test per defect D1-D7 and the smaller items of 8.

Each test drives the real thing (a `labelloop serve` on 127.0.0.1, the CLI in a subprocess,
SQLite, real files) and failed before the fix.
"""

from __future__ import annotations

import errno
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import wait_for
from PIL import Image
from sqlalchemy import event as sa_event
from test_webapps_browser import browser, page_for  # noqa: F401 - the browser fixtures

from labeling.engine import LabelingEngine
from labeling.settings import parse_settings
from labelloop.errors import ConfigError
from labelloop.project import Project, start_run
from labelloop.scenarios import ScenarioLock, get_run, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_PLUGIN = ROOT / "tests" / "plugins" / "sample-plugin"
CATS = {"cat": None, "dog": None}

SLOW_PLUGIN = {
    "plugin.json": {"id": "slow", "version": "1.0.0",
                    "meta": {"label": "Slow components (tests)"}},
    "python-steps/wait/step.json": {
        "meta": {"label": "Wait"},
        "params": [{"name": "seconds", "type": "DOUBLE", "defaultValue": 30}]},
    "python-steps/wait/step.py": "import time\n\n\ndef run(ctx):\n"
                                 "    time.sleep(ctx.config['seconds'])\n",
    "custom-recipes/nap/recipe.json": {
        "meta": {"label": "Wait"}, "kind": "PYTHON", "inputRoles": [], "outputRoles": [],
        "params": [{"name": "seconds", "type": "DOUBLE", "defaultValue": 30}]},
    "custom-recipes/nap/recipe.py": "import pathlib\nimport time\n\n\ndef run(ctx):\n"
                                     "    pathlib.Path(ctx.project.dir, 'STARTED').touch()\n"
                                     "    time.sleep(ctx.config['seconds'])\n",
}


def write_plugin(directory: Path) -> Path:
    for rel, content in SLOW_PLUGIN.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return directory


def labeling_config(**extra) -> dict:
    return {"unlabeled": "pool", "categories": CATS, "id_column": "k", **extra}


@pytest.fixture(scope="module")
def site(tmp_path_factory, project_factory, serve_module):
    """One server: two tabular labeling webapps (one allows relabeling), the sample notes
    webapp and a scenario."""
    base = tmp_path_factory.mktemp("security")
    project = project_factory(base / "project", {
        "webapps": {
            "app": {"type": "ml-assisted-labeling/tabular-labeling",
                    "params": labeling_config(labels_ds="labels", metadata_ds="metadata")},
            "review": {"type": "ml-assisted-labeling/tabular-labeling",
                       "params": labeling_config(labels_ds="r_labels", metadata_ds="r_metadata",
                                                 allow_relabel=True)},
            "notes": {"type": "sample/notes"}},
        "scenarios": {"ok": {"steps": [{"step": "sample/write-variable",
                                        "params": {"name": "ran", "value": "yes"}}]}},
    })
    project.dataset("pool", create=True).write(pd.DataFrame({"k": np.arange(20)}))
    return project, serve_module(project.dir, "--no-scheduler")


def as_user(user: str) -> dict:
    return {"X-Labelloop-User": user}


# ------------------------------------------------------------------------------ D1
def test_d1_removing_the_last_token_never_switches_authentication_off(make_project, run_cli,
                                                                      serve):
    project = make_project(config={"webapps": {"notes": {"type": "sample/notes"}},
                                   "scenarios": {"ok": {"steps": []}}})
    token = run_cli(project.dir, "token", "add", "alice").stdout.strip()
    srv = serve(project.dir, "--host", "0.0.0.0", "--no-scheduler")
    auth = {"Authorization": f"Bearer {token}"}
    assert srv.get("/api/v1/webapps", headers=auth).status == 200
    removed = run_cli(project.dir, "token", "remove", "alice")
    assert "removed 1 token" in removed.stdout
    # the running server still requires tokens: anonymous and the revoked token are refused
    assert srv.get("/api/v1/webapps").status == 401
    assert srv.get("/api/v1/webapps", headers=auth).status == 401
    assert srv.post("/api/v1/scenarios/ok/run", {}).status == 401
    assert srv.get("/api/v1/webapps/notes/hello", headers=as_user("mallory")).status == 401


def test_d1_a_token_added_while_running_turns_tokens_on_and_is_logged(make_project, run_cli,
                                                                     serve):
    project = make_project(config={"webapps": {"notes": {"type": "sample/notes"}}})
    srv = serve(project.dir, "--no-scheduler")
    assert srv.get("/api/v1/webapps").status == 200
    token = run_cli(project.dir, "token", "add", "alice").stdout.strip()
    # The server looks for new tokens every TOKEN_CHECK_SECONDS (0.5 s), not on every request.
    deadline = time.monotonic() + 5
    while srv.get("/api/v1/webapps").status != 401:
        assert time.monotonic() < deadline, "anonymous requests still pass 5 s after a token"
        time.sleep(0.1)
    assert srv.get("/api/v1/webapps", headers={"Authorization": f"Bearer {token}"}).status == 200
    assert "now requires a token" in srv.log()


def test_d1_a_new_token_is_looked_for_at_most_every_half_second(make_project):
    from labelloop.web.auth import TOKEN_CHECK_SECONDS, Identity, add_token

    project = make_project()
    now = [100.0]
    identity = Identity(project.engine, clock=lambda: now[0])
    statements = []

    def count(_conn, _cursor, statement, *_args):
        if "ll_tokens" in statement:
            statements.append(statement)

    sa_event.listen(project.engine, "before_cursor_execute", count)
    try:
        for _ in range(50):
            assert identity.required() is False
        assert statements == []  # no lookup inside the interval
        add_token(project, "alice")
        statements.clear()
        assert identity.required() is False  # still inside the interval
        now[0] += TOKEN_CHECK_SECONDS
        assert identity.required() is True
        assert len(statements) == 1
        now[0] += 10 * TOKEN_CHECK_SECONDS
        assert identity.required() is True  # for good: no more lookups
        assert len(statements) == 1
    finally:
        sa_event.remove(project.engine, "before_cursor_execute", count)


# ------------------------------------------------------------------------------ D2
def test_d2_cross_site_writes_and_foreign_hosts_are_refused(site):
    project, srv = site
    for path, body in (("/api/v1/webapps/notes/notes", b'{"text": "forged"}'),
                       ("/api/v1/scenarios/ok/run", b"{}")):
        resp = srv.request("POST", path, data=body, headers={"Content-Type": "text/plain"})
        assert resp.status == 403 and "application/json" in resp.json()["error"]
        resp = srv.request("POST", path, data=body, headers={
            "Content-Type": "application/json", "Origin": "https://evil.example"})
        assert resp.status == 403 and "Origin" in resp.json()["error"]
        resp = srv.request("POST", path, data=body, headers={
            "Content-Type": "application/json", "Host": "evil.example"})
        assert resp.status == 403 and "Host" in resp.json()["error"]
    resp = srv.get("/api/v1/webapps", headers={"Host": f"evil.example:{srv.port}"})
    assert resp.status == 403  # DNS rebinding: a read under a foreign name is refused too
    assert srv.get("/api/v1/webapps/notes/notes/count").json() == {"count": 0}
    # the same origin (what the pages send) and non-browser clients still work
    resp = srv.post("/api/v1/webapps/notes/notes", {"text": "ok"},
                    headers={"Origin": srv.url, **as_user("ann")})
    assert resp.status == 200
    assert srv.get("/api/v1/webapps", headers={"Host": f"localhost:{srv.port}"}).status == 200


# ------------------------------------------------------------------------------ D3
def test_d3_two_annotators_one_item_is_a_409_with_who_and_when(site):
    project, srv = site
    item = srv.get("/api/v1/webapps/app/batch?size=1", headers=as_user("alice")).json()[
        "items"][0]["id"]
    resp = srv.post("/api/v1/webapps/app/labels", {"id": item, "label": "cat"},
                    headers=as_user("alice"))
    assert resp.status == 200
    for route, body in (("labels", {"id": item, "label": "dog"}), ("skips", {"id": item})):
        resp = srv.post(f"/api/v1/webapps/app/{route}", body, headers=as_user("bob"))
        assert resp.status == 409, resp.text
        answer = resp.json()
        assert answer["answered_by"] == "alice" and answer["answered_at"]
        assert "already answered by alice" in answer["error"]
    labels = project.dataset("labels").read()
    assert labels[labels["k"] == int(item)]["label"].tolist() == ["cat"]
    history = srv.get("/api/v1/webapps/app/annotations", headers=as_user("alice")).json()
    assert [a["id"] for a in history["annotations"]] == [item]
    # her own answer she may change
    resp = srv.post("/api/v1/webapps/app/labels", {"id": item, "label": "dog"},
                    headers=as_user("alice"))
    assert resp.status == 200


def test_d3_allow_relabel_records_a_new_annotation_and_keeps_the_history(site):
    project, srv = site
    item = srv.get("/api/v1/webapps/review/batch?size=1", headers=as_user("alice")).json()[
        "items"][0]["id"]
    assert srv.post("/api/v1/webapps/review/labels", {"id": item, "label": "cat"},
                    headers=as_user("alice")).status == 200
    resp = srv.post("/api/v1/webapps/review/labels", {"id": item, "label": "dog"},
                    headers=as_user("bob"))
    assert resp.status == 200, resp.text
    stats = resp.json()["stats"]
    assert stats["labeled"] == 1 and stats["per_label"] == {"cat": 0, "dog": 1}
    labels = project.dataset("r_labels").read()
    assert labels[labels["k"] == int(item)]["label"].tolist() == ["dog"]  # one current label
    meta = project.dataset("r_metadata").read()
    assert sorted(meta[meta["data_id"] == item]["annotator"]) == ["alice", "bob"]
    for user, label in (("alice", "cat"), ("bob", "dog")):
        history = srv.get("/api/v1/webapps/review/annotations", headers=as_user(user)).json()
        assert [(a["id"], a["label"]) for a in history["annotations"]] == [(item, label)]


# ------------------------------------------------------------------------------ D4
def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def test_d4_folder_items_that_cannot_be_shown_are_set_aside(tmp_path):
    project = Project.init(tmp_path / "proj")
    project.declare("folders", "images")
    folder = project.folder("images")
    for i in range(6):
        folder.write_bytes(f"{i}.png", _png(i * 40))
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(1))
    root = folder.path
    (root / "0.png").unlink()
    (root / "0.png").symlink_to(outside)  # a link leading out of the folder
    (root / "1.png").write_bytes(b"not an image at all")  # cannot be decoded
    unreadable = root / "2.png"
    unreadable.chmod(0)
    cfg = parse_settings({"unlabeled": "images", "categories": CATS, "labels_ds": "labels",
                          "metadata_ds": "metadata"}, "image", "pics", project)
    engine = LabelingEngine(project, cfg, check_interval=0, background=False)
    try:
        served = engine.batch("ann", size=20)
        ids = {item["id"] for item in served["items"]}
        bad = {"0.png", "1.png"} | (set() if os.access(unreadable, os.R_OK) else {"2.png"})
        assert ids == {f"{i}.png" for i in range(6)} - bad
        stats = served["stats"]
        assert stats["set_aside"] == len(bad)
        assert stats["remaining"] == 6 - len(bad)
        assert "set aside" in stats["warnings"][0] and "escapes folder" in stats["warnings"][0] \
            or "escapes" in " ".join(stats["warnings"])
        assert any("set aside" in w for w in engine.config()["warnings"])
        # their reservations are gone and they are never served again, to anyone
        assert {i["id"] for i in engine.batch("other", size=20)["items"]} == set()
        for item in served["items"]:
            engine.label("ann", item["id"], "cat")
        assert engine.batch("ann", size=20)["done"] is True
    finally:
        unreadable.chmod(0o644)


# ------------------------------------------------------------------------------ D5
def test_d5_a_scenario_lock_whose_process_is_gone_is_taken_over_at_once(make_project, run_cli):
    project = _slow_project(make_project)
    proc = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                             str(project.dir), "scenario", "run", "slow"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (project.dir / "STARTED").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.kill()  # kill -9: no heartbeat stops, the lock would stay for its 60 s TTL
    proc.wait()
    project = Project.open(project.dir)
    lock = ScenarioLock(project, "slow")
    holder = lock.holder()
    assert holder is not None and f":{proc.pid}:" in holder["owner"]
    t0 = time.monotonic()
    assert lock.acquire("running")
    assert time.monotonic() - t0 < 5
    old = get_run(project, holder["run_id"])
    assert old["status"] == "FAILED" and "process is gone" in old["error"]
    recipe_runs = project.runs("recipe", "wait", limit=5)
    assert recipe_runs and all(r["status"] == "FAILED" for r in recipe_runs)
    lock.release()


# ------------------------------------------------------------------------------ D6
def test_d6_oversized_integers_and_deep_nesting_are_4xx(site):
    project, srv = site
    resp = srv.get("/api/v1/webapps/app/annotations?before=9223372036854775808",
                   headers=as_user("ann"))
    assert resp.status == 400 and "out of range" in resp.json()["error"]
    resp = srv.get("/api/v1/webapps/app/annotations?before=" + "9" * 40, headers=as_user("ann"))
    assert resp.status == 400
    resp = srv.get("/api/v1/scenarios/ok/runs/" + "9" * 30)
    assert resp.status == 404
    resp = srv.get("/api/v1/scenarios/ok/runs/9223372036854775808")
    assert resp.status == 404
    resp = srv.request("POST", "/api/v1/webapps/notes/notes", data=b"[" * 200_000,
                       headers={"Content-Type": "application/json"})
    assert resp.status == 413 or (resp.status == 400 and "nested" in resp.json()["error"])
    resp = srv.request("POST", "/api/v1/webapps/notes/notes", data=b"[" * 60_000,
                       headers={"Content-Type": "application/json"})
    assert resp.status == 400 and "nested" in resp.json()["error"]
    resp = srv.post("/api/v1/webapps/app/labels", {"id": "1", "label": "cat",
                                                   "comment": None, "x": 10 ** 30},
                    headers=as_user("ann"))
    assert resp.status == 400


def test_d6_a_real_fault_gives_a_500_with_a_request_id_that_is_logged(site):
    project, srv = site
    resp = srv.get("/api/v1/webapps/notes/boom")
    assert resp.status == 500
    request_id = resp.json()["request_id"]
    assert request_id in resp.json()["error"] and resp.headers["X-Request-Id"] == request_id
    assert f"request {request_id}" in srv.log()


# ------------------------------------------------------------------------------ D7
def _slow_project(make_project, seconds: float = 60) -> Project:
    project = make_project(config={
        "recipes": {"wait": {"type": "slow/nap", "params": {"seconds": seconds}}},
        "scenarios": {"slow": {"steps": [{"recipe": "wait"}]}}})
    write_plugin(project.dir / "slow-plugin")
    project.config["plugin_dirs"].append(str(project.dir / "slow-plugin"))
    project.save_config()
    return Project.open(project.dir)


def _wait_started(project: Project, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 60
    while not (project.dir / "STARTED").exists():
        assert time.monotonic() < deadline and (proc is None or proc.poll() is None)
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_d7_an_interrupted_scenario_ends_failed_with_its_recipe_run(make_project, sig):
    project = _slow_project(make_project)
    proc = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                             str(project.dir), "scenario", "run", "slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_started(project, proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err
    run = project.runs("scenario", "slow", limit=1)[0]
    assert run["status"] == "FAILED" and "interrupted" in run["error"]
    recipe = project.runs("recipe", "wait", limit=1)[0]
    assert recipe["status"] == "FAILED" and recipe["error"] == "interrupted"


def test_d7_stopping_the_server_ends_its_scenario_runs(make_project, serve):
    project = _slow_project(make_project)
    srv = serve(project.dir, "--no-scheduler")
    run_id = srv.post("/api/v1/scenarios/slow/run", {}).json()["run_id"]
    _wait_started(project)
    pid = get_run(project, run_id)["details"]["pid"]
    assert os.getpgid(pid) != os.getpgid(srv.proc.pid)  # its own process group
    srv.proc.send_signal(signal.SIGINT)
    srv.proc.wait(timeout=30)
    run = get_run(project, run_id)
    assert run["status"] == "FAILED" and "interrupted" in run["error"]
    assert project.runs("recipe", "wait", limit=1)[0]["status"] == "FAILED"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_d7_ctrl_c_on_scenario_watch_ends_its_runs(make_project):
    project = _slow_project(make_project)
    project.config["scenarios"]["slow"]["triggers"] = [
        {"type": "labelloop/periodic", "params": {"seconds": 0.2}}]
    project.save_config()
    proc = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                             str(project.dir), "scenario", "watch", "--period", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_started(project, proc)
    run = project.runs("scenario", "slow", limit=1)[0]
    pid = get_run(project, run["id"])["details"]["pid"]
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    run = get_run(project, run["id"])
    assert run["status"] == "FAILED" and "interrupted" in run["error"]
    assert project.runs("recipe", "wait", limit=1)[0]["status"] == "FAILED"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_d7_a_port_in_use_is_one_error_line(make_project, run_cli):
    project = make_project()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli(project.dir, "serve", "--port", str(port), "--no-scheduler",
                       check=False, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "--port" in errors[0]


def test_d7_ctrl_c_while_starting_is_one_error_line(make_project):
    project = make_project()
    for delay in (0.3, 1.0):
        proc = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                                 str(project.dir), "serve", "--port", "0", "--no-scheduler"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        assert proc.returncode != 0 or "Error:" not in err


# ------------------------------------------------------------------------------ 8
def test_8_a_body_over_64_mib_is_a_json_413(site):
    project, srv = site
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.putrequest("POST", "/api/v1/webapps/notes/notes")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(65 * 1024 * 1024))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413
    assert "larger than" in json.loads(resp.read())["error"]
    conn.close()


def test_8_405_says_which_methods_are_allowed(site):
    project, srv = site
    resp = srv.request("DELETE", "/api/v1/webapps/app/batch")
    assert resp.status == 405 and resp.headers["Allow"] == "GET"
    resp = srv.request("PUT", "/api/v1/health")
    assert resp.status == 405 and resp.headers["Allow"] == "GET"
    resp = srv.request("GET", "/api/v1/scenarios/ok/run")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


def test_8_openapi_requires_bodies_and_lists_categories_and_scenarios(site):
    project, srv = site
    doc = srv.get("/api/v1/openapi.json").json()
    labels = doc["paths"]["/api/v1/webapps/app/labels"]["post"]
    assert labels["requestBody"]["required"] is True
    schema = labels["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["cat", "dog"]
    run = doc["paths"]["/api/v1/scenarios/{scenario}/run"]["post"]
    assert run["parameters"][0]["schema"]["enum"] == ["ok"]
    before = [p for p in doc["paths"]["/api/v1/webapps/app/annotations"]["get"]["parameters"]
              if p["name"] == "before"][0]
    assert before["schema"]["maximum"] == 2 ** 63 - 1


def test_8_pages_cannot_be_framed(site):
    project, srv = site
    for path in ("/webapps/notes", "/login", "/api/v1/health"):
        resp = srv.get(path)
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]


def test_8_user_names_do_not_alias(site):
    project, srv = site

    def user_of(raw: bytes) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.putrequest("GET", "/api/v1/webapps/notes/hello")
        conn.putheader("X-Labelloop-User", raw)
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        return resp.status, body.get("greeting") or body["error"]

    assert user_of(b"100%25") == (200, "Hello, 100%!")
    status, error = user_of(b"100%")
    assert status == 400 and "%25" in error
    assert user_of("Zoë".encode()) == (200, "Hello, Zoë!")  # raw UTF-8 bytes
    assert user_of(b"Zo%C3%AB") == (200, "Hello, Zoë!")
    status, error = user_of("Zoë".encode("latin-1"))
    assert status == 400 and "UTF-8" in error


def test_8_settings_bounds_are_refused_clearly(tmp_path):
    project = Project.init(tmp_path / "p")
    project.dataset("pool", create=True).write(pd.DataFrame({"k": [1, 2]}))
    from labelloop.web.webapps import webapp_config

    # Checked once, by the webapp's declared params (the host's validate_config).
    base = {"unlabeled": "pool", "categories": CATS, "labels_ds": "l", "metadata_ds": "m"}

    def check(**params):
        webapp_config("w", {"type": "ml-assisted-labeling/tabular-labeling",
                            "params": {**base, **params}}, project.registry)

    with pytest.raises(ConfigError, match="reservation_seconds.* between 1 and 86400"):
        check(reservation_seconds=1e308)
    for size in (0, -3):
        with pytest.raises(ConfigError, match=f"batch_size.* between 1 and 500, got {size}"):
            check(batch_size=size)


def test_8_a_trigger_count_of_minus_one_is_refused_once_not_every_tick(make_project, caplog):
    from labelloop.scenarios import Scheduler

    project = make_project(config={"scenarios": {"loop": {
        "triggers": [{"type": "ml-assisted-labeling/every-n-labelings",
                      "params": {"i_labeling_count": -1}}], "steps": []}}})
    with caplog.at_level("ERROR", logger="labelloop.scenarios"):
        scheduler = Scheduler(project, period=0.1)
        for _ in range(3):
            scheduler.tick()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert 1 <= len(errors) <= 2, [r.getMessage() for r in errors]
    assert any("i_labeling_count" in r.getMessage() for r in errors)


def test_run_records_of_a_dead_run_process_are_closed_with_its_recipe_runs(make_project):
    """The scheduler's reaper closes a crashed run's inner recipe runs too (D7)."""
    project = make_project(config={"scenarios": {"ok": {"steps": []}}})
    run_id = start_run(project.engine, "scenario", "ok", {})
    inner = start_run(project.engine, "recipe", "r", {"trigger": f"scenario ok (run {run_id})"})
    from labelloop.scenarios import close_interrupted_runs

    assert close_interrupted_runs(project, run_id, "interrupted") == 2
    assert get_run(project, inner)["status"] == "FAILED"
    assert run_scenario(project, "ok")["status"] == "SUCCESS"


# ------------------------------------------------------------------------------ pages
@pytest.mark.browser
def test_page_shows_who_answered_first_and_set_aside_items(tmp_path, serve,
                                                           page_for):  # noqa: F811
    """D3 and D4 as an annotator sees them: a 409 banner naming the other annotator, and the
    warning about an image that can't be shown while the others are served."""
    from test_webapps_browser import item_id, make_labeling_project, open_page

    directory = tmp_path / "project"
    project = make_labeling_project(directory, "image", n=6)
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(3))
    files = project.folder("files").path / "img"
    (files / "000.png").unlink()
    (files / "000.png").symlink_to(outside)
    server = serve(directory, "--no-scheduler")
    page = page_for("bob")
    open_page(page, server.url + "/webapps/app")
    page.wait_for_function("() => { const b = document.getElementById('ll-warnings');"
                           " return b && !b.hidden && b.textContent.includes('set aside'); }")
    assert "escapes folder" in page.inner_text("#ll-warnings")
    shown = item_id(page)
    assert shown != "img/000.png"
    # alice answers the item on bob's screen first (e.g. after his reservation ran out)
    resp = server.post("/api/v1/webapps/app/labels", {"id": shown, "label": "cat"},
                       headers=as_user("alice"))
    assert resp.status == 200
    page.keyboard.press("2")
    page.wait_for_function("() => { const b = document.getElementById('ll-banner');"
                           " return b && !b.hidden && b.textContent.includes('alice'); }")
    assert "already answered by alice" in page.inner_text("#ll-banner")
    labels = Project.open(directory).dataset("labels").read()
    assert labels["label"].tolist() == ["cat"]


# ------------------------------------------------------------------ issue 25, item 10
def _post_raw(srv, path: str, body: str | bytes, user: str = "ann"):
    data = body.encode() if isinstance(body, str) else body
    return srv.request("POST", path, data=data,
                       headers={"Content-Type": "application/json", **as_user(user)})


def test_25_an_integer_of_over_4300_digits_is_a_400_in_any_json_body(site):
    """Python refuses to parse such an integer (ValueError): a 400 like other bad JSON."""
    project, srv = site
    huge = "7" * 5000
    runs = len(project.runs("scenario", "ok", limit=100))
    for path, body in (("/api/v1/webapps/app/labels", f'{{"id": "1", "label": {huge}}}'),
                       ("/api/v1/webapps/notes/notes", f'{{"text": "x", "n": [{huge}]}}'),
                       ("/api/v1/ml-backends/app/predict", f'{{"tasks": {huge}}}'),
                       ("/api/v1/scenarios/ok/run", f'{{"why": {huge}}}')):
        resp = _post_raw(srv, path, body, "digits")
        assert resp.status == 400, (path, resp.status, resp.text)
        assert "an integer has more than 4300 digits" in resp.json()["error"], path
    assert len(project.runs("scenario", "ok", limit=100)) == runs  # the run never started
    assert srv.get("/api/v1/webapps/notes/notes/count", headers=as_user("digits")).json() == {
        "count": 0}


def test_25_a_lone_surrogate_is_refused_at_validation_and_nothing_is_written(site):
    """`"\\ud800"` is valid JSON but not text: refused with where it is, before any write."""
    project, srv = site
    user = "surrogates"
    item = srv.get("/api/v1/webapps/app/batch?size=1", headers=as_user(user)).json()[
        "items"][0]["id"]
    for route, body, where in (
            ("labels", '{"id": "\\ud800", "label": "cat"}', "/id"),
            ("labels", f'{{"id": "{item}", "label": "cat", "comment": "a\\udfffb"}}', "/comment"),
            ("skips", '{"id": "\\udbff"}', "/id"),
            ("skips", f'{{"id": "{item}", "comment": "\\ud800"}}', "/comment"),
            ("release", f'{{"ids": ["{item}", "\\ud800"]}}', "/ids/1"),
            ("labels", f'{{"id": "{item}", "label": "cat", "\\ud800": 1}}', "/")):
        resp = _post_raw(srv, f"/api/v1/webapps/app/{route}", body, user)
        assert resp.status == 400, (route, body, resp.text)
        error = resp.json()["error"]
        assert f"JSON body at {where}: " in error and "surrogate" in error, error
    assert srv.get("/api/v1/webapps/app/annotations",
                   headers=as_user(user)).json()["annotations"] == []
    # A character beyond U+FFFF spelt as its surrogate pair is text like any other.
    resp = _post_raw(srv, "/api/v1/webapps/app/labels",
                     f'{{"id": "{item}", "label": "cat", "comment": "ok \\ud83d\\ude00"}}', user)
    assert resp.status == 200, resp.text
    (answer,) = srv.get("/api/v1/webapps/app/annotations",
                        headers=as_user(user)).json()["annotations"]
    assert (answer["id"], answer["comment"]) == (item, "ok \U0001F600")


def _websocket_handshake(port: int, path: str, host: str, token: str) -> int:
    """The status of a Bokeh websocket handshake sent as a browser on `http://host` would."""
    import base64

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                      f"Sec-WebSocket-Protocol: bokeh, {token}\r\n\r\n").encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_25_pages_login_static_files_and_the_websocket_refuse_a_foreign_host(site):
    """DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends Host (and Origin)
    evil.example. Every route refuses it, the Bokeh websocket included: Tornado accepts a
    websocket whose Origin equals its Host without asking Bokeh's origin check."""
    import re

    project, srv = site
    page = srv.get("/webapps/notes")
    assert page.status == 200
    token = re.search(r'"token":\s*"([^"]+)"', page.text).group(1)
    own, evil = f"127.0.0.1:{srv.port}", f"evil.example:{srv.port}"
    paths = ("/webapps/notes", "/webapps/notes/autoload.js?bokeh-autoload-element=x", "/login",
             "/logout", "/static/js/bokeh.min.js", "/", "/api/v1/health")
    for path in paths:
        assert srv.get(path, headers={"Host": own}).status in (200, 302), path
        resp = srv.get(path, headers={"Host": evil, "Origin": f"http://{evil}"})
        assert resp.status == 403, (path, resp.status)
        assert "Host 'evil.example" in resp.text and "DNS-rebinding" in resp.text, path
    assert srv.request("POST", "/login", data=b"token=x", headers={"Host": evil}).status == 403
    assert srv.get("/api/v1/health", headers={"Host": evil}).json()["error"].startswith(
        "request refused: Host")
    assert _websocket_handshake(srv.port, "/webapps/notes/ws", own, token) == 101
    assert _websocket_handshake(srv.port, "/webapps/notes/ws", evil, token) == 403


def _fill_disk(path: Path) -> None:
    """Write `path` until the file system has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB file system (tmpfs) to fill; the test is skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mount: {mount.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)  # lazily: the test's own
    # connections to the database there close when their engine is collected


def _empty_the_wal(project: Project) -> None:
    """What the WAL file holds would be reused by the next writes (SQLite restarts it once
    checkpointed); emptied, every write must grow it, as on a disk long full."""
    with project.engine.connect() as conn:
        wait_for(lambda: conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
                 == 0, what="the WAL emptied")
    assert (project.dir / "labelloop.db-wal").stat().st_size == 0


@pytest.mark.sqlite_only  # the database file is on the small disk (PostgreSQL's is not)
def test_25_a_full_disk_is_a_507_nothing_written_and_the_server_recovers(
        small_disk, project_factory, serve):
    server = None
    try:
        project = project_factory(small_disk / "project", {"webapps": {"app": {
            "type": "ml-assisted-labeling/tabular-labeling",
            "params": labeling_config(labels_ds="labels", metadata_ds="metadata")}}})
        project.dataset("pool", create=True).write(pd.DataFrame({"k": np.arange(20)}))
        server = serve(project.dir, "--no-scheduler")
        items = [i["id"] for i in server.get("/api/v1/webapps/app/batch?size=3",
                                             headers=as_user("ann")).json()["items"]]
        _empty_the_wal(project)
        _fill_disk(small_disk / "filler")
        for route, body in (("labels", {"id": items[0], "label": "cat"}),
                            ("skips", {"id": items[1]})):
            resp = server.post(f"/api/v1/webapps/app/{route}", body, headers=as_user("ann"))
            assert resp.status == 507, resp.text
            assert resp.json()["error"].startswith("the disk is full: nothing was written")
        (small_disk / "filler").unlink()
        # The same server goes on: the answers refused are given again, and kept.
        for route, body in (("labels", {"id": items[0], "label": "cat"}),
                            ("skips", {"id": items[1]})):
            resp = server.post(f"/api/v1/webapps/app/{route}", body, headers=as_user("ann"))
            assert resp.status == 200, resp.text
        history = server.get("/api/v1/webapps/app/annotations", headers=as_user("ann")).json()
        assert sorted((a["id"], a["status"]) for a in history["annotations"]) == sorted(
            [(items[0], "LABELED"), (items[1], "SKIPPED")])
        assert "Traceback" not in server.log()
    finally:
        if server is not None:
            server.stop()


@pytest.mark.sqlite_only
def test_25_a_queue_rebuild_that_finds_the_disk_full_says_so_and_follows_once_freed(
        small_disk, caplog, monkeypatch):
    """The background builder meets the full disk (CI once saw it mid-index): one line in the
    log, no thread dies with a traceback, the old order serves, and the new ranking is
    switched in a few seconds after space is freed."""
    from test_engine_live import make_engine, pool_frame, sessions_seen, write_queries

    from labelloop.project import ManualClock

    died: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    project = Project.init(small_disk / "project")
    pool = pool_frame(300)
    project.dataset("pool", create=True).write(pool)
    first = write_queries(project, pool, 1, version="v1")
    clock = ManualClock()
    e = make_engine(project, clock=clock)
    assert e.batch("a", 1)["items"][0]["id"] == first[0]
    second = write_queries(project, pool, 2, version="v2")
    _empty_the_wal(project)
    _fill_disk(small_disk / "filler")
    e.background = True
    with caplog.at_level("WARNING", logger="labeling"):
        e.refresh()
        e.wait_idle()
    assert died == []
    stopped = [r for r in caplog.records if "preparing the queue of rows" in r.getMessage()]
    assert stopped and all(r.exc_info is None for r in stopped), caplog.text
    assert "the disk is full" in stopped[0].getMessage()
    assert e.config()["session"] == 1  # the old order is still the one served
    (small_disk / "filler").unlink()
    e.refresh()
    e.wait_idle()
    assert e.config()["session"] == 1  # not retried in a loop ...
    clock.advance(6)
    e.refresh()
    e.wait_idle()
    assert sessions_seen(e, "b") == (2, 2, 2)  # ... but seconds later, once there is space
    assert e.batch("c", 1)["items"][0]["id"] in second[:3]
    assert died == []


def test_25_disk_full_is_told_apart_from_other_database_errors():
    """What PostgreSQL says when its disk is full (SQLSTATE 53100), as SQLAlchemy raises it,
    beside SQLite's error (tested for real above) and a file write's ENOSPC."""
    import sqlite3

    import psycopg
    import sqlalchemy as sa

    from labelloop.errors import DiskFullError, disk_full

    pg = sa.exc.OperationalError("INSERT ...", {}, psycopg.errors.DiskFull(
        "could not extend file: No space left on device"))
    sqlite = sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError(
        "database or disk is full"))
    for exc in (pg, sqlite, OSError(errno.ENOSPC, "No space left on device")):
        assert isinstance(disk_full(exc), DiskFullError) and disk_full(exc).status == 507
    for exc in (sa.exc.OperationalError("SELECT", {}, sqlite3.OperationalError(
            "database is locked")), OSError(errno.EACCES, "Permission denied"), ValueError()):
        assert disk_full(exc) is None
