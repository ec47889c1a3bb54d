"""An external Label Studio ML backend (the `label-studio-ml` SDK, on 127.0.0.1) answering
`RectangleLabels` as the model of the boxes loop: the ml-backend-predict recipe writes its
boxes with their scores into the queries dataset, its scores rank the pool, and the
image-boxes webapp serves the boxes as suggestions; the ml-backend-notify step sends it the
boxes drawn, as rectangles in percentages of each image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import free_port, wait_for
from labelstudio_env import LS_ML_REQUIREMENTS, http_json, venv_with

from labeling import demo
from labeling.boxes.demo import FOLDER, TRUTH_FILE, WEBAPP
from labelloop.flow import run_recipe
from labelloop.scenarios import run_scenario

# A protocol test against a real service: run once (the SQLite run of make test); the
# database side of what it exercises is tested on PostgreSQL by tests/test_boxes.py.
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

HERE = Path(__file__).resolve().parent
PLUGIN = "ml-assisted-labeling"


@pytest.fixture
def project(tmp_path):
    return demo.create_demo(tmp_path / "d", "boxes", n=5, scenes=12)


@pytest.fixture
def box_backend(project, tmp_path):
    venv = venv_with("label-studio-ml", *LS_ML_REQUIREMENTS)
    port = free_port()
    log = tmp_path / "backend.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(venv / "bin" / "python"),
                                 str(HERE / "ml_backends" / "box_backend.py"), str(port),
                                 str(tmp_path / "models"), str(project.dir / TRUTH_FILE)],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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


def test_rectanglelabels_backend_boxes_are_suggestions(project, box_backend):
    from labeling.api import LabelingBackend

    classes = list(project.config["webapps"][WEBAPP]["params"]["object_classes"])
    project.config["recipes"]["ml-predict"] = {
        "type": f"{PLUGIN}/ml-backend-predict",
        "inputs": {"unlabeled_samples": FOLDER, "labels": "labels"},
        "outputs": {"queries": "queries"},
        "params": {"url": box_backend, "categories": classes, "kind": "boxes",
                   "data_key": "image", "batch_size": 5, "timeout": 60, "retries": 1}}
    project.save_config()
    run = run_recipe(project, "ml-predict")
    assert run["status"] == "SUCCESS", run

    truth = json.loads((project.dir / TRUTH_FILE).read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    expected = {im["file_name"]: [] for im in truth["images"]}
    by_id = {im["id"]: im["file_name"] for im in truth["images"]}
    for a in truth["annotations"]:
        x, y, w, h = a["bbox"]
        expected[by_id[a["image_id"]]].append({"x": x, "y": y, "w": w, "h": h,
                                               "label": names[a["category_id"]]})
    queries = project.dataset("queries").read()
    assert len(queries) == 12 and set(queries["model_version"]) == {"boxes-1"}
    # The least sure box's 1 - score: images with several objects (0.6 boxes) first.
    many = [len(expected[p]) > 1 for p in queries["path"]]
    assert queries["uncertainty"].tolist() == [0.4 if m else pytest.approx(0.1) for m in many]
    assert many == sorted(many, reverse=True)
    for path, prediction in zip(queries["path"], queries["prediction"], strict=True):
        got = json.loads(prediction)
        assert len(got) == len(expected[path])
        for g in got:
            e = min(expected[path], key=lambda b: abs(b["x"] - g["x"]) + abs(b["y"] - g["y"]))
            assert g["label"] == e["label"] and g["score"] in (0.9, 0.6)
            assert all(abs(g[k] - e[k]) <= 0.01 for k in "xywh"), (g, e)

    class Ctx:
        pass

    ctx = Ctx()
    ctx.project, ctx.webapp = project, WEBAPP
    ctx.config = project.config["webapps"][WEBAPP]["params"]
    engine = LabelingBackend(ctx, "image", background=False, kind="boxes").engine
    engine.refresh(wait=True)
    items = engine.batch("ann", 3)["items"]
    assert [i["id"] for i in items] == queries["path"].head(3).tolist()
    suggestion = items[0]["suggestion"]
    assert suggestion["model_version"] == "boxes-1"
    top = json.loads(queries["prediction"].iloc[0])
    assert suggestion["boxes"] == sorted(top, key=lambda b: (b["y"], b["x"], b["h"], b["w"]))

    # Boxes drawn (the true ones) go to the backend with START_TRAINING; it finds them all.
    drawn = 0
    for item in items:
        engine.label("ann", item["id"], expected[item["id"]])
        drawn += len(expected[item["id"]])
    project.config["scenarios"]["external-detector"] = {"steps": [
        {"step": f"{PLUGIN}/ml-backend-notify",
         "params": {"url": box_backend, "categories": classes, "wait_seconds": 120}},
        {"recipe": "ml-predict"}]}
    project.save_config()
    run = run_scenario(project, "external-detector")
    assert run["status"] == "SUCCESS", (run.get("error"), run.get("details"))
    queries = project.dataset("queries").read()
    assert len(queries) == 12 - 3
    assert set(queries["model_version"]) == {f"boxes-matched-{drawn}"}
