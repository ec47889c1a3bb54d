"""Labelloop against a real Label Studio (installed by tests/labelstudio_env.py).

Label Studio runs on 127.0.0.1 in its own virtual environment; Labelloop's server answers it
as an ML backend at /api/v1/ml-backends/<webapp>, with a Labelloop token as the Basic-auth
password Label Studio sends.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest
from conftest import free_port, wait_for
from labelstudio_env import start_label_studio

from labeling.demo import create_demo
from labeling.interop.labelstudio import make_label_config
from labelloop.project import Project

# Protocol tests against real services: run once (the SQLite run of make test); the database
# side of what they exercise (labels, webhooks, formats) is also tested on PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

WEBAPP = "label-texts"
N = 6  # labels between two retrains


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    ls = start_label_studio(tmp_path_factory.mktemp("label-studio"), free_port())
    yield ls
    ls.stop()


def _choices(label: str) -> list[dict]:
    return [{"from_name": "topic", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}]


def test_labelloop_is_the_ml_backend_of_a_real_label_studio(tmp_path, serve, run_cli,
                                                             label_studio):
    ls = label_studio
    project = create_demo(tmp_path / "texts", "text", n=N)
    token = run_cli(project.dir, "token", "add", "label-studio").stdout.strip()
    server = serve(project.dir, "--period", "0.3")
    auth = {"Authorization": f"Bearer {token}"}
    assert server.get(f"/api/v1/webapps/{WEBAPP}/config", headers=auth).status == 200
    truth = dict(pd.read_csv(project.dir / "ground_truth.csv").values)
    pool = project.dataset("unlabeled").read()
    categories = list(project.config["webapps"][WEBAPP]["params"]["categories"])
    config = make_label_config(categories, "text", "text").replace('name="label"',
                                                                    'name="topic"')

    # A Label Studio project with a Choices config and 40 of the pool's texts as tasks.
    lsp = ls.api("POST", "/api/projects", {"title": "Labelloop texts", "label_config": config})
    pid = lsp["id"]
    sample = pool.head(40)
    ls.api("POST", f"/api/projects/{pid}/import",
           [{"data": {"text": r.text, "data_id": r.data_id}} for r in sample.itertuples()])
    tasks = ls.api("GET", f"/api/tasks?project={pid}&page_size=100")["tasks"]
    assert len(tasks) == 40
    by_item = {t["data"]["data_id"]: t["id"] for t in tasks}

    # Connect Labelloop: Label Studio checks health and setup when the backend is added.
    backend_url = f"{server.url}/api/v1/ml-backends/{WEBAPP}"
    ml = ls.api("POST", "/api/ml", {
        "url": backend_url, "project": pid, "title": "Labelloop",
        "auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio",
        "basic_auth_pass": token})
    assert ml["state"] == "CO", ml  # CONNECTED
    # Label Studio added a webhook <backend>/webhook for all events; it needs the credentials.
    hooks = ls.api("GET", f"/api/webhooks?project={pid}")
    (hook,) = [h for h in hooks if h["url"] == f"{backend_url}/webhook"]
    basic = base64.b64encode(f"label-studio:{token}".encode()).decode()
    ls.api("PATCH", f"/api/webhooks/{hook['id']}", {"headers": {"Authorization": f"Basic {basic}"}})
    # Without credentials Labelloop refuses the protocol.
    assert server.get(f"/api/v1/ml-backends/{WEBAPP}/health").status == 401

    def annotate(items: list[str]) -> None:
        for item in items:
            ls.api("POST", f"/api/tasks/{by_item[item]}/annotations",
                   {"result": _choices(truth[item]), "ground_truth": False})

    def versions() -> list[int]:
        return [v["version"] for v in Project.open(project.dir).model("classifier").versions()]

    def predictions() -> list[dict]:
        ls.api("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
               {"selectedItems": {"all": True, "excluded": []}})
        return ls.api("GET", f"/api/predictions?project={pid}")

    # Annotations made in Label Studio arrive in Labelloop as labels, by Label Studio's user.
    items = list(sample["data_id"])
    annotate(items[:N + 1])
    wait_for(lambda: _metadata(project, N + 1) is not None, timeout=60,
             what="the Label Studio annotations in Labelloop's metadata")
    metadata = _metadata(project, N + 1)
    assert set(metadata["data_id"]) == set(items[:N + 1])
    assert (metadata["label"] == metadata["data_id"].map(truth)).all()
    assert set(metadata["annotator"]) == {"label-studio:1"}
    # ... and the every-n-labelings scenario retrains the model.
    wait_for(lambda: versions() == [1], timeout=120, what="the first retrain")

    # Label Studio stores predictions of the new model version, scored by uncertainty.
    first = predictions()
    assert len(first) == 40
    assert {p["model_version"] for p in first} == {"1"}
    assert all(0 <= p["score"] <= 1 for p in first)
    assert all(p["result"][0]["value"]["choices"][0] in categories for p in first)
    assert all(p["result"][0]["from_name"] == "topic" and p["result"][0]["to_name"] == "text"
               for p in first)

    # More annotations: another retrain, and Label Studio takes the new version's predictions.
    annotate(items[N + 1:2 * N + 2])
    wait_for(lambda: _metadata(project, 2 * N + 2) is not None, timeout=60, what="the second batch")
    wait_for(lambda: versions()[-1:] == [2], timeout=120, what="the second retrain")
    second = [p for p in predictions() if p["model_version"] == "2"]
    assert len(second) == 40
    scores = {p["task"]: p["score"] for p in second}
    assert scores != {p["task"]: p["score"] for p in first}

    # An update in Label Studio changes the label; unknown events are answered 200.
    task = by_item[items[0]]
    (ann,) = ls.api("GET", f"/api/tasks/{task}/annotations")
    other = next(c for c in categories if c != truth[items[0]])
    ls.api("PATCH", f"/api/annotations/{ann['id']}", {"result": _choices(other)})
    wait_for(lambda: _label_of(project, items[0]) == other, timeout=30, what="the update")


def _metadata(project: Project, n: int):
    ds = Project.open(project.dir).dataset("metadata")
    if not ds.exists():
        return None
    frame = ds.read()
    return frame if len(frame) >= n else None


def _label_of(project: Project, item: str) -> str | None:
    frame = Project.open(project.dir).dataset("labels").read()
    rows = frame[frame["data_id"] == item]
    return None if rows.empty else rows["label"].iloc[-1]


def test_setup_refuses_a_label_config_with_other_categories(tmp_path, serve):
    project = create_demo(tmp_path / "texts", "text", n=N)
    server = serve(project.dir, "--no-scheduler")
    config = make_label_config(["spam", "ham"], "text", "text")
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/setup", {"project": "1.1", "schema": config})
    assert r.status == 400 and "'spam', 'ham' are not categories" in r.json()["error"]
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/webhook", {"action": "PROJECT_UPDATED"})
    assert r.status == 200 and r.json()["status"] == "ignored"
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/webhook", {
        "action": "ANNOTATION_CREATED", "task": {"id": 3, "data": {"text": "not in the pool"}},
        "annotation": {"id": 1, "completed_by": 1, "result": _choices("sports")}})
    assert r.status == 404 and "task 3 matches no item" in r.json()["error"]
    r = server.get("/api/v1/ml-backends/nope/health")
    assert r.status == 404 and "unknown webapp 'nope'" in r.json()["error"]
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/predict", {"tasks": "x"})
    assert r.status == 400 and "'tasks' list" in r.json()["error"]
    # Before any training there is no prediction to give.
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/predict",
                    {"tasks": [{"id": 1, "data": {"text": "x"}}], "label_config": None})
    assert r.status == 200 and r.json() == {"results": []}

    # Created, then deleted in Label Studio: a label, then a skip by the same annotator.
    pool = project.dataset("unlabeled").read()
    task = {"id": 8, "data": {"text": pool["text"].iloc[3]}}
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/webhook", {
        "action": "ANNOTATION_CREATED", "task": task,
        "annotation": {"id": 77, "completed_by": 4, "result": _choices("sports")}})
    assert r.status == 201 and r.json()["item"] == pool["data_id"].iloc[3]
    r = server.post(f"/api/v1/ml-backends/{WEBAPP}/webhook", {
        "action": "ANNOTATION_DELETED", "task": task,
        "annotation": {"id": 77, "completed_by": 4, "result": _choices("sports")}})
    assert r.status == 201
    meta = Project.open(project.dir).dataset("metadata").read()
    assert meta[["data_id", "status", "annotator"]].values.tolist() == [
        [pool["data_id"].iloc[3], "SKIPPED", "label-studio:4"]]
    metrics = server.get(f"/api/v1/ml-backends/{WEBAPP}/metrics").json()
    assert metrics["stats"]["skipped"] == 1 and metrics["model_version"] is None


def test_round_trip_label_studio_to_labelloop_to_label_studio(tmp_path, make_project,
                                                               label_studio):
    from labelloop.formats import export_file, import_file

    ls = label_studio
    config = make_label_config(["cat", "dog"], "text", "text")
    a = ls.api("POST", "/api/projects", {"title": "round trip A", "label_config": config})["id"]
    texts = {"t1": "a cat on a mat", "t2": "a dog in the fog", "t3": "a cat or a dog?"}
    ls.api("POST", f"/api/projects/{a}/import",
           [{"data": {"text": t, "key": k}} for k, t in texts.items()])
    tasks = {t["data"]["key"]: t for t in
             ls.api("GET", f"/api/tasks?project={a}&page_size=10")["tasks"]}
    truth = {"t1": "cat", "t2": "dog"}
    for key, label in truth.items():
        ls.api("POST", f"/api/tasks/{tasks[key]['id']}/annotations",
               {"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                            "value": {"choices": [label]}}]})
    ls.api("POST", "/api/predictions", {
        "task": tasks["t3"]["id"], "model_version": "external-3", "score": 0.55,
        "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                    "value": {"choices": ["dog"]}}]})
    exported = ls.api("GET", f"/api/projects/{a}/export?exportType=JSON&download_all_tasks=true")
    src = tmp_path / "from-label-studio.json"
    src.write_text(json.dumps(exported))

    project = make_project(plugins=False)
    counts = import_file(project, "items", src, options={"labels": "labels",
                                                          "metadata": "metadata",
                                                          "predictions": "queries"})
    # (Label Studio's JSON export lists prediction ids, not predictions: none to import.)
    assert counts == {"items": 3, "labels": 2, "metadata": 2}
    labels = project.dataset("labels").read()
    assert dict(zip(labels["key"], labels["label"], strict=True)) == truth
    assert sorted(labels["task_id"].astype(int)) == sorted(tasks[k]["id"] for k in truth)
    meta = project.dataset("metadata").read()
    assert set(meta["annotator"]) == {"label-studio:1"}
    # Its task API gives the predictions themselves: suggestions with their model version.
    (t3,) = [t for t in ls.api("GET", f"/api/tasks?project={a}&fields=all")["tasks"]
             if t["data"]["key"] == "t3"]
    src.write_text(json.dumps([t3]))
    import_file(project, "items3", src, options={"predictions": "queries"})
    queries = project.dataset("queries").read()
    assert queries["model_version"].tolist() == ["external-3"]
    assert queries["prediction"].tolist() == ["dog"]
    assert queries["uncertainty"].round(6).tolist() == [0.45]

    out = tmp_path / "to-label-studio.json"
    export_file(project, "labels", out, "label-studio", {"metadata": "metadata"})
    b = ls.api("POST", "/api/projects", {"title": "round trip B", "label_config": config})["id"]
    ls.api("POST", f"/api/projects/{b}/import", json.loads(out.read_text()))
    back = ls.api("GET", f"/api/projects/{b}/export?exportType=JSON")
    got = {t["data"]["key"]: t["annotations"] for t in back}
    assert {k: [x["value"]["choices"][0] for x in anns[0]["result"]] for k, anns in got.items()} \
        == {k: [v] for k, v in truth.items()}
    assert {anns[0]["completed_by"] for anns in got.values()} == {1}
    # Labelloop kept Label Studio's task and annotation ids; B's task data carries them back.
    assert {t["data"]["key"]: t["id"] for t in json.loads(out.read_text())} == \
        {k: tasks[k]["id"] for k in truth}
