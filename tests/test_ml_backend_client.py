"""An external Label Studio ML backend (built on the label-studio-ml SDK) as the model of the loop.

The ml-backend-notify step sends Labelloop's labels with START_TRAINING; the
ml-backend-predict recipe has the backend score the pool and writes the queries dataset that
the labeling webapp then serves, with the backend's model version on each suggestion.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port, wait_for
from labelstudio_env import LS_ML_REQUIREMENTS, http_json, venv_with

from labeling.demo import create_demo
from labelloop.errors import LabelloopError
from labelloop.flow import run_recipe
from labelloop.project import Project
from labelloop.scenarios import run_scenario

# Protocol tests against real services: run once (the SQLite run of make test); the database
# side of what they exercise (labels, webhooks, formats) is also tested on PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

HERE = Path(__file__).resolve().parent
WEBAPP = "label-texts"
PLUGIN = "ml-assisted-labeling"


@pytest.fixture(scope="module")
def sdk_backend(tmp_path_factory):
    venv = venv_with("label-studio-ml", *LS_ML_REQUIREMENTS)
    port = free_port()
    model_dir = tmp_path_factory.mktemp("sdk-models")
    log = model_dir / "backend.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(venv / "bin" / "python"),
                                 str(HERE / "ml_backends" / "keyword_backend.py"), str(port),
                                 str(model_dir)], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return http_json("GET", url + "/health", token=None, timeout=2)[0] == 200
        except OSError:
            return proc.poll() is not None
    wait_for(up, timeout=60, what="the SDK ML backend")
    assert proc.poll() is None, log.read_text()
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def _configure(project: Project, url: str) -> None:
    categories = list(project.config["webapps"][WEBAPP]["params"]["categories"])
    project.config["recipes"]["ml-predict"] = {
        "type": f"{PLUGIN}/ml-backend-predict",
        "inputs": {"unlabeled_samples": "unlabeled", "labels": "labels"},
        "outputs": {"queries": "queries"},
        "params": {"url": url, "categories": categories, "data_key": "text",
                   "id_column": "data_id", "batch_size": 50, "timeout": 60, "retries": 1}}
    project.config["scenarios"]["external-model"] = {
        "steps": [{"step": f"{PLUGIN}/ml-backend-notify",
                   "params": {"url": url, "categories": categories, "data_key": "text",
                              "wait_seconds": 180}},
                  {"recipe": "ml-predict"}]}
    project.save_config()


def _engine(project: Project):
    from labeling.api import LabelingBackend

    class Ctx:
        pass

    ctx = Ctx()
    ctx.project, ctx.webapp = project, WEBAPP
    ctx.config = project.config["webapps"][WEBAPP]["params"]
    return LabelingBackend(ctx, "text", background=False).engine


def test_sdk_backend_is_the_model_of_the_loop(tmp_path, sdk_backend):
    project = create_demo(tmp_path / "texts", "text", n=1000)
    _configure(project, sdk_backend)
    truth = dict(pd.read_csv(project.dir / "ground_truth.csv").values)
    engine = _engine(project)
    first = list(truth)[:24]
    for item in first:
        engine.label("erin", item, truth[item])

    run = run_scenario(project, "external-model")
    assert run["status"] == "SUCCESS", (run.get("error"), run.get("details"))
    notify = run["details"]["steps"][0]
    assert notify["status"] == "SUCCESS"
    runs = project.runs("step", limit=5) + project.runs("recipe", "ml-predict", limit=1)
    version = runs[-1]["details"]["model_version"]
    assert version not in (None, "INITIAL")  # the backend retrained on Labelloop's labels

    queries = project.dataset("queries").read()
    assert len(queries) == 400 - 24
    assert not set(queries["data_id"]) & set(first)
    assert queries["uncertainty"].is_monotonic_decreasing
    assert set(queries["model_version"]) == {version}
    accuracy = float((queries["prediction"] == queries["data_id"].map(truth)).mean())
    assert accuracy > 0.6, accuracy  # 4 topics: chance is 0.25

    # The webapp serves the backend's most uncertain items first, with its suggestions.
    engine.refresh(wait=True)
    batch = engine.batch("erin", 5)
    assert [i["id"] for i in batch["items"]] == queries["data_id"].head(5).tolist()
    assert batch["items"][0]["suggestion"]["label"] == queries["prediction"].iloc[0]

    # A second round: more labels, a new model version, new queries.
    more = [i for i in list(truth)[24:60] if i not in set(queries["data_id"].head(0))]
    for item in more:
        engine.label("erin", item, truth[item])
    # The SDK names a model after the second its training job started: a second training in
    # the same second as the first (a fast machine) would reuse the first one's name.
    while time.time() < int(version) + 1.05:
        time.sleep(0.05)
    run = run_scenario(project, "external-model")
    assert run["status"] == "SUCCESS", (run.get("error"), run.get("details"))
    queries2 = project.dataset("queries").read()
    assert set(queries2["model_version"]) != {version}, run["details"]
    assert len(queries2) == 400 - 60


class _Garbage(BaseHTTPRequestHandler):
    mode = "garbage"

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self._answer(200, b'{"status": "UP"}')

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/setup"):
            return self._answer(200, b'{"model_version": "x"}')
        if _Garbage.mode == "garbage":
            return self._answer(200, b"<html>oops</html>")
        if _Garbage.mode == "short":
            return self._answer(200, json.dumps({"results": []}).encode())
        return self._answer(503, b"busy")

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("mode, message", [
    ("down", r"is not answering after 2 attempt\(s\)"),
    ("garbage", r"answered something that is not JSON"),
    ("short", r"gave 0 results for 50 tasks"),
    ("503", r"predict is not answering after 2 attempt\(s\) \(HTTP 503"),
])
def test_backend_down_or_garbage_fails_clearly_and_keeps_previous_queries(tmp_path, mode,
                                                                          message):
    project = create_demo(tmp_path / "texts", "text", n=1000, check=False)
    server = None
    if mode == "down":
        url = f"http://127.0.0.1:{free_port()}"
    else:
        _Garbage.mode = mode
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
    _configure(project, url)
    before = pd.DataFrame({"data_id": ["text-0001"], "text": ["kept"], "uncertainty": [1.0]})
    project.dataset("queries").write(before)
    try:
        t0 = time.monotonic()
        with pytest.raises(LabelloopError, match=message):
            run_recipe(project, "ml-predict")
        assert time.monotonic() - t0 < 30
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    pd.testing.assert_frame_equal(project.dataset("queries").read(), before, check_dtype=False)
    assert project.runs("recipe", "ml-predict", limit=1)[0]["status"] == "FAILED"


def test_ml_backend_cli_round(tmp_path):
    # The recipe and the step are valid components of the plugin.
    out = subprocess.run([sys.executable, "-m", "labelloop.cli", "plugin", "validate",
                          str(HERE.parent)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
