"""The text-spans webapp as a Label Studio ML backend, over HTTP (a real `labelloop serve`):
a `<Labels>` config, span annotations recorded from the webhook, span predictions with the
model version and the text's uncertainty as the score.

Label Studio itself is not needed: the requests are the ones its ML-backend protocol sends
(tests/test_labelstudio.py drives a real Label Studio for the classification webapps).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import wait_for

from labeling import demo
from labeling.interop.labelstudio import make_label_config
from labeling.spans.demo_data import ENTITY_TYPES
from labeling.spans.formats import span_results
from labelloop.project import Project

WEBAPP = "label-entities"
BASE = f"/api/v1/ml-backends/{WEBAPP}"
CONFIG = make_label_config(list(ENTITY_TYPES), "text", "text", kind="spans")


def task(pool: pd.DataFrame, k: int, task_id: int) -> dict:
    row = pool.iloc[k]
    return {"id": task_id, "data": {"text": row["text"], "data_id": row["data_id"]}}


def annotation(ann_id: int, spans: list[dict], text: str, user: int = 3) -> dict:
    return {"id": ann_id, "completed_by": user,
            "result": span_results(spans, text, "label", "text")}


def stored(project: Project) -> dict[str, list[dict]]:
    reopened = Project.open(project.dir)
    if not reopened.dataset("labels").exists():
        return {}
    labels = reopened.dataset("labels").read()
    return {i: json.loads(v) for i, v in zip(labels["data_id"], labels["label"], strict=True)}


def test_spans_through_the_label_studio_ml_backend_routes(tmp_path, serve):
    project = demo.create_demo(tmp_path / "d", demo.SPANS, n=20)
    server = serve(project.dir, "--no-scheduler")
    pool = project.dataset("unlabeled").read()
    truth = {i: json.loads(v) for i, v in pd.read_csv(
        project.dir / demo.GROUND_TRUTH, dtype=str).values}
    assert CONFIG.startswith('<View><Labels name="label" toName="text"><Label value="PERSON"/>')

    # Connecting: health, and setup checks the config's labels against the entity types.
    assert server.get(f"{BASE}/health").json()["status"] == "UP"
    assert server.post(f"{BASE}/setup", {"project": "1", "schema": CONFIG}).json() == {
        "model_version": "untrained"}
    r = server.post(f"{BASE}/setup", {"schema": make_label_config(["PERSON", "PET"], "text",
                                                                   "text", kind="spans")})
    assert r.status == 400 and "labels 'PET' are not entity types" in r.json()["error"]
    r = server.post(f"{BASE}/setup", {"schema": make_label_config(["PERSON", "ORG"], "text",
                                                                   "text")})
    assert r.status == 400 and "has no <Labels> tag" in r.json()["error"]
    # No model yet: no prediction.
    r = server.post(f"{BASE}/predict", {"tasks": [task(pool, 0, 1)], "label_config": CONFIG})
    assert r.status == 200 and r.json() == {"results": []}

    # Annotations from Label Studio's webhook are recorded as the spans answer.
    a = next(k for k in range(len(pool)) if len(truth[pool["data_id"].iloc[k]]) >= 2)
    b, c = [k for k in range(3) if k != a][:2]
    text0, id0 = pool["text"].iloc[a], pool["data_id"].iloc[a]
    r = server.post(f"{BASE}/webhook", {"action": "ANNOTATION_CREATED", "task": task(pool, a, 1),
                                        "annotation": annotation(11, truth[id0], text0)})
    assert r.status == 201 and r.json()["item"] == id0, r.text
    assert stored(project) == {id0: truth[id0]}
    # Updated in Label Studio: the last span's type changes; an empty result is "no entities".
    changed = [*truth[id0][:-1], {**truth[id0][-1], "label": "ORG" if truth[id0][-1]["label"]
                                  != "ORG" else "LOC"}]
    r = server.post(f"{BASE}/webhook", {"action": "ANNOTATION_UPDATED",
                                        "task": task(pool, a, 1),
                                        "annotation": annotation(11, changed, text0)})
    assert r.status == 201
    id1 = pool["data_id"].iloc[b]
    r = server.post(f"{BASE}/webhook", {"action": "ANNOTATION_CREATED", "task": task(pool, b, 2),
                                        "annotation": {"id": 12, "completed_by": 3,
                                                       "result": []}})
    assert r.status == 201
    assert stored(project) == {id0: changed, id1: []}
    # Bad annotations: a 400 naming what is wrong; nothing written.
    text2 = pool["text"].iloc[c]
    bad_offsets = annotation(13, [{"start": 0, "end": len(text2) + 5, "label": "LOC"}], text2 +
                             " " * 5)
    choices = {"id": 14, "completed_by": 3, "result": [
        {"from_name": "t", "to_name": "text", "type": "choices", "value": {"choices": ["LOC"]}}]}
    unknown = annotation(15, [{"start": 0, "end": 1, "label": "PET"}], text2)
    for bad, words in [(bad_offsets, "offsets"), (choices, "has no labels result"),
                       (unknown, "PET")]:
        r = server.post(f"{BASE}/webhook", {"action": "ANNOTATION_CREATED",
                                            "task": task(pool, c, 3), "annotation": bad})
        assert r.status == 400 and words in r.json()["error"], r.text
    assert stored(project) == {id0: changed, id1: []}
    meta = Project.open(project.dir).dataset("metadata").read()
    assert set(meta["annotator"]) == {"label-studio:3"}

    # More labels from the labeling page's API, then Label Studio's START_TRAINING runs the
    # demo's scenario: Train span tagger, Query Sampler, labeling metrics.
    api = f"/api/v1/webapps/{WEBAPP}"
    for it in server.get(f"{api}/batch?size=14", headers={"X-Labelloop-User": "ann"}).json()[
            "items"]:
        assert server.post(f"{api}/labels", {"id": it["id"], "spans": truth[it["id"]]},
                           headers={"X-Labelloop-User": "ann"}).status == 200
    r = server.post(f"{BASE}/webhook", {"action": "START_TRAINING"})
    assert r.status == 201, r.text

    def trained():
        runs = server.get(f"/api/v1/scenarios/{demo.SCENARIO}/runs").json()
        runs = runs["runs"] if isinstance(runs, dict) else runs
        assert not any(x["status"] == "FAILED" for x in runs), runs
        return any(x["status"] == "SUCCESS" for x in runs)

    wait_for(trained, timeout=120, what="the retraining scenario")

    # Predictions: the tagger's spans as labels results with their scores, the model version,
    # and the text's uncertainty under the Query Sampler's strategy as the task's score:
    # the same figures the Query Sampler wrote in the queries dataset.
    queries = Project.open(project.dir).dataset("queries").read().set_index("data_id")
    ks = [k for k in range(len(pool)) if pool["data_id"].iloc[k] in queries.index][:4]
    tasks = [task(pool, k, 100 + k) for k in ks]
    tasks.append({"id": 999, "data": {"text": "Rosa Silva flew to Oslo on May 3."}})
    r = server.post(f"{BASE}/predict", {"tasks": tasks, "label_config": CONFIG})
    assert r.status == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(tasks)
    for k, res in zip(ks, results, strict=False):
        item, text = pool["data_id"].iloc[k], pool["text"].iloc[k]
        assert res["model_version"] == "1"
        assert res["score"] == pytest.approx(float(queries.loc[item, "uncertainty"]), abs=1e-6)
        predicted = json.loads(queries.loc[item, "prediction"])
        assert [(x["value"]["start"], x["value"]["end"], x["value"]["labels"], x["score"])
                for x in res["result"]] == [
            (s["start"], s["end"], [s["label"]], pytest.approx(s["score"], abs=1e-6))
            for s in predicted]
        for x in res["result"]:
            assert x["type"] == "labels" and (x["from_name"], x["to_name"]) == ("label", "text")
            assert x["value"]["text"] == text[x["value"]["start"]:x["value"]["end"]]
    outside = results[-1]
    assert outside["model_version"] == "1" and 0.0 <= outside["score"] <= 1.0
    marked = {x["value"]["text"]: x["value"]["labels"][0] for x in outside["result"]}
    assert marked and set(marked.values()) <= set(ENTITY_TYPES)
    metrics = server.get(f"{BASE}/metrics").json()
    assert metrics["model_version"] == "1" and metrics["stats"]["labeled"] == 16
