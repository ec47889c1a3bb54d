"""`labelloop serve`: a real server on 127.0.0.1 — webapps, the JSON API, identity, limits."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import zlib
from pathlib import Path

import pytest

from labelloop.project import Project
from labelloop.scenarios import ScenarioLock

SAMPLE_PLUGIN = Path(__file__).parent / "plugins" / "sample-plugin"


def write_var(name: str, value: str = "done", fail: bool = False) -> dict:
    return {"step": "sample/write-variable", "params": {"name": name, "value": value, "fail": fail}}


CONFIG = {
    "webapps": {"notes": {"type": "sample/notes", "params": {"greeting": "Hi"}},
                "broken": {"type": "sample/notes", "params": {"fail_on_start": True}}},
    "scenarios": {
        "ok": {"steps": [write_var("ok_ran", "yes")]},
        "bad": {"steps": [write_var("bad_1"), write_var("x", fail=True), write_var("bad_3")]},
        "locked": {"steps": [write_var("locked_ran")]},
        "flagged": {"triggers": [{"type": "sample/flag-file", "params": {"filename": "GO"}}],
                    "steps": [write_var("flag_ran", "yes")]},
    },
}


@pytest.fixture(scope="module")
def server(project_factory, tmp_path_factory, serve_module):
    base = tmp_path_factory.mktemp("served")
    # a copy of the sample plugin with a resource/ directory, to serve its files
    plugin = base / "sample-plugin"
    shutil.copytree(SAMPLE_PLUGIN, plugin, ignore=shutil.ignore_patterns("__pycache__"))
    (plugin / "resource").mkdir()
    (plugin / "resource" / "notes.css").write_text("h1 { color: teal; }\n")
    (plugin / "resource" / ".secret").write_text("hidden\n")
    project = project_factory(base / "project", {**CONFIG, "plugin_dirs": [str(plugin)]},
                              plugins=False)
    return serve_module(project.dir, "--period", "0.2", "--max-body", "65536")


def bob(extra: dict | None = None) -> dict:
    return {"X-Labelloop-User": "bob", **(extra or {})}


def wait_run_end(server, scenario: str, run_id: int, poll) -> dict:
    def ended():
        run = server.get(f"/api/v1/scenarios/{scenario}/runs/{run_id}").json()
        return run if run["status"] != "RUNNING" else None

    return poll(ended, timeout=60, what=f"run {run_id} of {scenario} to end")


def test_health(server):
    resp = server.get("/api/v1/health")
    assert resp.status == 200 and resp.json() == {"status": "ok"}
    assert resp.headers["Content-Type"].startswith("application/json")


def test_openapi_describes_every_route_and_is_valid(server):
    doc = server.get("/api/v1/openapi.json").json()
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)
    paths = doc["paths"]
    for path in ("/api/v1/health", "/api/v1/webapps", "/api/v1/scenarios",
                 "/api/v1/scenarios/{scenario}/run", "/api/v1/scenarios/{scenario}/runs"):
        assert path in paths
    notes = paths["/api/v1/webapps/notes/notes"]
    body_schema = notes["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["text"]
    assert notes["post"]["summary"] == "Add a note for the caller"
    assert [p["name"] for p in notes["get"]["parameters"]] == ["limit"]
    assert "/api/v1/webapps/notes/hello" in paths
    assert "broken" in doc["info"]["description"]  # a webapp that failed is named, not hidden


def test_webapps_list_merges_describe(server):
    apps = {a["id"]: a for a in server.get("/api/v1/webapps").json()}
    notes = apps["notes"]
    assert notes["type"] == "sample/notes" and notes["data_type"] == "text"
    assert notes["categories"] == ["todo", "done"] and notes["greeting"] == "Hi"
    assert "configured to fail" in apps["broken"]["error"]


def test_webapp_page_loads_with_the_user(server):
    resp = server.get("/webapps/notes?user=carol")
    assert resp.status == 200
    assert "bokeh" in resp.text.lower() and "Bokeh.embed" in resp.text
    # make_document ran for this session and saw its user
    visitors = server.get("/api/v1/webapps/notes/visitors").json()["visitors"]
    assert "carol" in visitors
    assert server.get("/webapps/notes", headers=bob()).status == 200
    assert "bob" in server.get("/api/v1/webapps/notes/visitors").json()["visitors"]


def test_broken_webapp_page_shows_an_error_and_the_server_keeps_running(server):
    assert server.get("/webapps/broken").status == 200  # the error is in the document
    resp = server.get("/api/v1/webapps/broken/hello")
    assert resp.status == 503 and "configured to fail" in resp.json()["error"]
    assert server.get("/api/v1/health").status == 200


def test_resource_files_are_served_safely(server):
    resp = server.get("/resource/sample/notes.css")
    assert resp.status == 200 and resp.text == "h1 { color: teal; }\n"
    assert resp.headers["Content-Type"].startswith("text/css")
    assert server.get("/resource/sample/.secret").status == 404
    assert server.get("/resource/sample/missing.css").status == 404
    assert server.get("/resource/nope/notes.css").status == 404
    assert server.get("/resource/sample/../plugin.json").status == 404
    assert server.get("/resource/sample/%2e%2e/plugin.json").status == 404


def test_routes_round_trip_json_per_user(server):
    hello = server.get("/api/v1/webapps/notes/hello?a=1&a=2&b=x", headers=bob()).json()
    assert hello["greeting"] == "Hi, bob!"
    assert hello["query"] == {"a": ["1", "2"], "b": "x"}
    assert hello["api_prefix"] == "/api/v1/webapps/notes"
    assert hello["resource_url"] == "/resource/sample"
    resp = server.post("/api/v1/webapps/notes/notes", {"text": "first", "category": "todo"},
                       headers=bob())
    assert resp.status == 200 and resp.json() == {"count": 1, "user": "bob"}
    server.post("/api/v1/webapps/notes/notes", {"text": "second"}, headers=bob())
    notes = server.get("/api/v1/webapps/notes/notes?limit=1", headers=bob()).json()
    assert notes == {"notes": [{"text": "second", "category": None}], "user": "bob"}
    assert server.get("/api/v1/webapps/notes/notes").json() == {"notes": [], "user": "anonymous"}
    assert server.get("/api/v1/webapps/notes/notes/count", headers=bob()).json() == {"count": 2}


@pytest.mark.parametrize("method,path,body,status,message", [
    ("POST", "/api/v1/webapps/notes/notes", b'{"text": ', 400, "malformed JSON"),
    ("POST", "/api/v1/webapps/notes/notes", b'{"txt": "x"}', 400, "'text' is required"),
    ("POST", "/api/v1/webapps/notes/notes", b'{"text": ""}', 400, "invalid payload at text"),
    ("POST", "/api/v1/webapps/notes/notes", b'[1, 2]', 400, "invalid payload"),
    ("POST", "/api/v1/webapps/notes/notes", b'\xff\xfe', 400, "malformed JSON"),
    ("GET", "/api/v1/webapps/notes/notes?limit=abc", None, 400, 'expected an integer, got a string "abc"'),
    ("GET", "/api/v1/webapps/notes/notes?limit=0", None, 400, "at limit: must be between 1 and 100, got 0"),
    ("GET", "/api/v1/webapps/nope/hello", None, 404, "unknown webapp 'nope'"),
    ("GET", "/api/v1/webapps/notes/nope", None, 404, "has no route GET 'nope'"),
    ("DELETE", "/api/v1/webapps/notes/hello", None, 405, "does not accept DELETE"),
    ("GET", "/api/v1/webapps/notes/missing", None, 404, "no such note"),
    ("GET", "/api/v1/nothing/here", None, 404, "no API route"),
    ("GET", "/api/v1/scenarios/nope/runs", None, 404, "unknown scenario 'nope'"),
    ("GET", "/api/v1/scenarios/ok/runs?limit=x", None, 400, "must be an integer"),
    ("GET", "/api/v1/scenarios/ok/runs/999999", None, 404, "no run with id"),
    ("POST", "/api/v1/scenarios/nope/run", None, 404, "unknown scenario"),
    ("GET", "/api/v1/scenarios/ok/run", None, 405, ""),
])
def test_bad_input_gets_a_json_4xx(server, method, path, body, status, message):
    resp = server.request(method, path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status, resp.text
    assert message in resp.json()["error"]


def test_percent_encoded_user_header_carries_non_latin1_names(server):
    # An HTTP header can't carry "李雷" as is, so the page sends the name percent-encoded.
    headers = {"X-Labelloop-User": "%E6%9D%8E%E9%9B%B7"}
    resp = server.post("/api/v1/webapps/notes/notes", {"text": "hi"}, headers=headers)
    assert resp.status == 200 and resp.json()["user"] == "李雷"


def test_bad_user_header_is_a_400(server):
    resp = server.get("/api/v1/webapps", headers={"X-Labelloop-User": "x" * 500})
    assert resp.status == 400 and "invalid user name" in resp.json()["error"]


def test_unexpected_error_is_a_short_500_and_logged(server):
    resp = server.get("/api/v1/webapps/notes/boom")
    assert resp.status == 500
    error = resp.json()["error"]
    assert "RuntimeError" in error and "Traceback" not in error
    assert "sample backend exploded" in server.log()


def test_body_over_the_limit_is_a_413(server):
    big = json.dumps({"text": "x" * 70000}).encode()
    resp = server.request("POST", "/api/v1/webapps/notes/notes", data=big,
                          headers={"Content-Type": "application/json"})
    assert resp.status == 413 and "larger than 65536 bytes" in resp.json()["error"]
    assert server.get("/api/v1/webapps/notes/notes/count").json() == {"count": 0}


def test_a_slow_handler_does_not_block_other_requests(server):
    done = threading.Event()

    def slow():
        server.get("/api/v1/webapps/notes/sleep?seconds=3")
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert server.get("/api/v1/health").status == 200
        assert server.get("/api/v1/webapps/notes/hello").status == 200
        assert not done.is_set()  # both answered while the slow handler was still sleeping
    finally:
        thread.join()


def test_scenario_run_from_the_api(server, poll):
    resp = server.post("/api/v1/scenarios/ok/run", headers={"X-Labelloop-User": "dave"})
    assert resp.status == 202, resp.text
    started = resp.json()
    assert started["status"] == "RUNNING" and started["scenario"] == "ok"
    run = wait_run_end(server, "ok", started["run_id"], poll)
    assert run["status"] == "SUCCESS", run
    assert run["details"]["trigger"] == {"kind": "api", "by": "dave"}
    assert Project.open(server.project_dir).variables.get("ok_ran") == "yes"
    runs = server.get("/api/v1/scenarios/ok/runs").json()
    assert runs[0]["id"] == started["run_id"]


def test_failing_step_is_recorded_with_its_error(server, poll):
    run_id = server.post("/api/v1/scenarios/bad/run").json()["run_id"]
    run = wait_run_end(server, "bad", run_id, poll)
    assert run["status"] == "FAILED"
    assert "step 2" in run["error"] and "failing on purpose" in run["error"]
    assert run["details"]["failed_step"]["index"] == 1
    assert [s["status"] for s in run["details"]["steps"]] == ["SUCCESS", "FAILED"]
    listed = {s["id"]: s for s in server.get("/api/v1/scenarios").json()}
    assert listed["bad"]["last_run"]["status"] == "FAILED"


def test_lock_refuses_a_concurrent_run(server, poll):
    project = Project.open(server.project_dir)
    lock = ScenarioLock(project, "locked", owner="test-process")
    assert lock.acquire("running")
    try:
        resp = server.post("/api/v1/scenarios/locked/run")
        assert resp.status == 409
        assert "already running" in resp.json()["error"] and "test-process" in resp.json()["error"]
        listed = {s["id"]: s for s in server.get("/api/v1/scenarios").json()}
        assert listed["locked"]["running"]["owner"] == "test-process"
    finally:
        lock.release()
    resp = server.post("/api/v1/scenarios/locked/run")
    assert resp.status == 202
    assert wait_run_end(server, "locked", resp.json()["run_id"], poll)["status"] == "SUCCESS"


def test_scheduler_runs_a_scenario_when_its_trigger_fires(server, poll):
    (server.project_dir / "GO").touch()
    project = Project.open(server.project_dir)
    runs = poll(lambda: [r for r in project.runs("scenario", "flagged") if r["status"] != "RUNNING"],
                timeout=60, what="the flag trigger to start a run")
    assert runs[0]["status"] == "SUCCESS"
    assert runs[0]["details"]["trigger"]["key"] == "0:sample/flag-file"
    assert not (server.project_dir / "GO").exists()
    scenarios = {s["id"]: s for s in server.get("/api/v1/scenarios").json()}
    assert scenarios["flagged"]["triggers"][0]["fire_count"] == 1


# ---------------------------------------------------------------- with tokens
def _session_payload(page: str) -> dict:
    """The payload of the Bokeh session token embedded in a page."""
    token = page.split('"token":"', 1)[1].split('"', 1)[0]
    part = token.split(".")[0]
    payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    packed = payload.pop("__bk__zlib_", None)
    if packed:
        data = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
        payload.update(json.loads(zlib.decompress(data)))
    return payload


def test_tokens_are_required_once_configured(make_project, run_cli, serve):
    project = make_project(config={"webapps": {"notes": {"type": "sample/notes"}}})
    token = run_cli(project.dir, "token", "add", "alice").stdout.strip()
    srv = serve(project.dir, "--no-scheduler")
    assert srv.get("/api/v1/health").status == 200  # public, for load balancers and tests
    resp = srv.get("/api/v1/webapps")
    assert resp.status == 401 and "requires a token" in resp.json()["error"]
    resp = srv.get("/api/v1/webapps", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401 and "invalid token" in resp.json()["error"]
    # the claimed header means nothing when tokens are configured
    auth = {"Authorization": f"Bearer {token}", "X-Labelloop-User": "mallory"}
    assert srv.get("/api/v1/webapps/notes/hello", headers=auth).json()["greeting"] == \
        "Hello, alice!"
    assert srv.post("/api/v1/scenarios/none/run", headers={}).status == 401

    # pages: redirected to /login, which sets the cookie and drops the token from the address
    resp = srv.get("/webapps/notes")
    assert resp.status == 302 and resp.headers["Location"].startswith("/login?next=")
    resp = srv.get(f"/webapps/notes?x=1&token={token}")
    assert resp.status == 302
    resp = srv.get(resp.headers["Location"])
    assert resp.status == 302 and resp.headers["Location"] == "/webapps/notes?x=1"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    cookie_header = {"Cookie": cookie.split(";")[0]}
    page = srv.get("/webapps/notes?x=1", headers=cookie_header)
    assert page.status == 200
    payload = _session_payload(page.text)
    assert payload["labelloop_user"] == "alice"
    assert token not in json.dumps(payload)  # the secret never reaches the page's script
    assert srv.get("/login?token=wrong&next=/webapps/notes").status == 401
    assert srv.get("/login?token=" + token + "&next=https://evil.example/").headers[
        "Location"] == "/"

    # the cookie works for the API too, but data-changing requests must be JSON (no CSRF)
    assert srv.get("/api/v1/webapps", headers=cookie_header).status == 200
    resp = srv.request("POST", "/api/v1/webapps/notes/notes", data=b"text=x",
                       headers={**cookie_header,
                                "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 401 and "Content-Type: application/json" in resp.json()["error"]
    resp = srv.post("/api/v1/webapps/notes/notes", {"text": "x"}, headers=cookie_header)
    assert resp.json() == {"count": 1, "user": "alice"}


def test_non_loopback_without_tokens_is_refused(make_project, run_cli):
    project = make_project()
    proc = run_cli(project.dir, "serve", "--host", "0.0.0.0", "--port", "0", check=False,
                   timeout=60)
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0" in proc.stderr and "--insecure" in proc.stderr
