"""The labeling engine's JSON API on a real `labelloop serve`: the annotator's workflow and
bad input (each a 4xx JSON error with nothing written)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import wait_for
from PIL import Image

from labeling.engine import annotations_table, session_variable
from labelloop.project import Project

CATS = {"cat": "a cat", "dog": None, "bird": None}
ROWS = "rows"
PICS = "pics"


def setup_project(make_project) -> Project:
    common = {"categories": CATS, "queries_ds": "queries"}
    project = make_project(plugins=False, config={
        "folders": {"media": {"path": "media"}},
        "webapps": {
            ROWS: {"type": "ml-assisted-labeling/tabular-labeling",
                   "params": {"unlabeled": "pool", "labels_ds": "labels",
                              "metadata_ds": "metadata", **common}},
            PICS: {"type": "ml-assisted-labeling/image-labeling",
                   "params": {"unlabeled": "media", "labels_ds": "pic_labels",
                              "metadata_ds": "pic_metadata", **common,
                              "queries_ds": "pic_queries"}},
        }})
    rng = np.random.default_rng(0)
    pool = pd.DataFrame({"k": np.arange(40), "note": [f"<b>row {i}</b>" for i in range(40)],
                         "v": rng.random(40)})
    project.dataset("pool", create=True).write(pool)
    queries = pool.assign(uncertainty=np.linspace(0, 1, 40), prediction="dog",
                          confidence=0.7).iloc[::-1]
    project.dataset("queries", create=True).write(queries)
    project.variables.incr(session_variable("queries"))
    media = project.dir / "media"
    media.mkdir()
    for i in range(3):
        buf = io.BytesIO()
        Image.new("L", (8, 8), i * 60).save(buf, format="PNG")
        (media / f"{i}.png").write_bytes(buf.getvalue())
    return project


@pytest.fixture
def server(make_project, serve):
    project = setup_project(make_project)
    return project, serve(project.dir, "--no-scheduler")


def api(server, method, webapp, path, user="ann", **kwargs):
    return server.request(method, f"/api/v1/webapps/{webapp}/{path}",
                          headers={"X-Labelloop-User": user, **kwargs.pop("headers", {})},
                          **kwargs)


def written(project) -> tuple:
    with project.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(annotations_table)).scalar_one()
    counts = tuple(project.dataset(name, create=True).count()
                   for name in ("labels", "metadata", "pic_labels", "pic_metadata"))
    return (n, *counts)


def test_an_annotator_works_through_the_queue_over_http(server):
    project, srv = server
    listed = {w["id"]: w for w in srv.get("/api/v1/webapps").json()}
    assert listed[ROWS]["data_type"] == "tabular"
    assert listed[ROWS]["categories"] == ["cat", "dog", "bird"]
    cfg = api(srv, "GET", ROWS, "config").json()
    assert [c["name"] for c in cfg["categories"]] == ["cat", "dog", "bird"]
    assert cfg["al_enabled"] and cfg["session"] == 1 and not cfg["multi_label"]
    batch = api(srv, "GET", ROWS, "batch?size=3").json()
    items = batch["items"]
    assert [dict(i["data"]["fields"])["k"] for i in items] == [39, 38, 37]  # most uncertain
    assert items[0]["suggestion"] == {"label": "dog", "confidence": 0.7}
    assert items[0]["halting"] == 1.0
    assert dict(items[0]["data"]["fields"])["note"] == "<b>row 39</b>"  # data, not markup
    other = api(srv, "GET", ROWS, "batch?size=3", user="bob").json()
    assert not {i["id"] for i in other["items"]} & {i["id"] for i in items}
    r1 = api(srv, "POST", ROWS, "labels", json_body={"id": items[0]["id"], "label": "cat",
                                                     "comment": "sure"})
    assert r1.status == 200, r1.text
    r2 = api(srv, "POST", ROWS, "skips", json_body={"id": items[1]["id"]})
    r3 = api(srv, "POST", ROWS, "labels", json_body={"id": items[2]["id"], "label": "dog"})
    assert r1.json()["label_id"] < r2.json()["label_id"] < r3.json()["label_id"]
    # back: the newest first, then change the first label
    hist = api(srv, "GET", ROWS, "annotations?limit=2").json()
    assert [a["id"] for a in hist["annotations"]] == [items[2]["id"], items[1]["id"]]
    older = api(srv, "GET", ROWS, f"annotations?before={hist['next_before']}").json()
    assert [a["label"] for a in older["annotations"]] == ["cat"]
    changed = api(srv, "POST", ROWS, "labels", json_body={"id": items[0]["id"],
                                                          "label": "bird"}).json()
    assert changed["label_id"] == r1.json()["label_id"]
    stats = api(srv, "GET", ROWS, "stats").json()
    assert stats == {"labeled": 2, "skipped": 1, "total": 40, "remaining": 37,
                     "per_label": {"cat": 0, "dog": 1, "bird": 1}, "session": 1}
    labels = project.dataset("labels").read().sort_values("label_id")
    assert labels["label"].tolist() == ["bird", "dog"]
    meta = project.dataset("metadata").read().sort_values("label_id")
    assert meta["status"].tolist() == ["LABELED", "SKIPPED", "LABELED"]
    assert meta["annotator"].tolist() == ["ann"] * 3
    # the image webapp over the same server
    pics = api(srv, "GET", PICS, "batch?size=5").json()["items"]
    assert sorted(i["id"] for i in pics) == ["0.png", "1.png", "2.png"]
    media = api(srv, "GET", PICS, pics[0]["data"]["media"])
    assert media.status == 200 and media.headers["Content-Type"] == "image/png"
    ok = api(srv, "POST", PICS, "labels", json_body={"id": "1.png", "label": "cat"})
    assert ok.status == 200 and project.dataset("pic_labels").read()["path"].tolist() == ["1.png"]


def test_openapi_describes_the_labeling_routes(server):
    _project, srv = server
    api(srv, "GET", ROWS, "config")
    doc = srv.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for sub in ("config", "batch", "labels", "skips", "annotations", "stats"):
        assert f"/api/v1/webapps/{ROWS}/{sub}" in paths


BAD = [
    ("unknown item id", ROWS, "POST", "labels", {"json_body": {"id": "nope", "label": "cat"}},
     404),
    ("label not a category", ROWS, "POST", "labels",
     {"json_body": {"id": "<first>", "label": "fish"}}, 400),
    ("list in single-label mode", ROWS, "POST", "labels",
     {"json_body": {"id": "<first>", "label": ["cat"]}}, 400),
    ("missing field", ROWS, "POST", "labels", {"json_body": {"id": "<first>"}}, 400),
    ("missing id", ROWS, "POST", "skips", {"json_body": {"comment": "x"}}, 400),
    ("malformed JSON", ROWS, "POST", "labels",
     {"data": b'{"id": "x", "label": ', "headers": {"Content-Type": "application/json"}}, 400),
    ("oversized body", ROWS, "POST", "labels",
     {"json_body": {"id": "<first>", "label": "cat", "comment": "x" * (2 * 1024 * 1024)}}, 413),
    ("folder id with ..", PICS, "POST", "labels",
     {"json_body": {"id": "../project.json", "label": "cat"}}, 400),
    ("folder id with .. (skip)", PICS, "POST", "skips", {"json_body": {"id": "a/../../x.png"}},
     400),
    ("unknown webapp", "nosuch", "POST", "labels", {"json_body": {"id": "x", "label": "cat"}},
     404),
    ("bad batch size", ROWS, "GET", "batch?size=zero", {}, 400),
]


def test_bad_input_is_a_4xx_json_error_and_writes_nothing(server):
    project, srv = server
    first = api(srv, "GET", ROWS, "batch?size=2").json()["items"]
    assert api(srv, "POST", ROWS, "labels", json_body={"id": first[1]["id"],
                                                       "label": "dog"}).status == 200
    # An unknown id is a 404 once the pool is indexed (a 503 "retry" before, by design).
    for webapp in (ROWS, PICS):
        wait_for(lambda w=webapp: not api(srv, "GET", w, "config").json().get("preparing"),
                 timeout=60, what=f"{webapp}'s pool to be indexed")
    before = written(project)
    for name, webapp, method, path, kwargs, status in BAD:
        if "json_body" in kwargs and kwargs["json_body"].get("id") == "<first>":
            kwargs = {**kwargs, "json_body": {**kwargs["json_body"], "id": first[0]["id"]}}
        r = api(srv, method, webapp, path, **kwargs)
        assert r.status == status, f"{name}: {r.status} {r.text[:300]}"
        assert isinstance(r.json().get("error"), str) and r.json()["error"], name
        assert written(project) == before, name
