"""The text-spans labeling webapp over HTTP (a real `labelloop serve`): the `spans` kind's
answers, its refusals (a 400 naming the span, nothing written), its suggestions from a span
model's queries, back / next and stats."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from labeling.engine import annotations_table, session_variable
from labelloop.project import Project

TYPES = {"PER": "a person", "ORG": "an organisation", "LOC": None}
SPANS = "spans"
NESTED = "nested"
TEXTS = ["Ada Lovelace met Charles Babbage in London.",
         "Acme Corp hired Grace Hopper.",
         "Nothing to see here.",
         "Paris is in France."]


def setup_project(make_project) -> Project:
    common = {"unlabeled": "pool", "entity_types": TYPES, "text_column": "text",
              "id_column": "key"}
    project = make_project(plugins=False, config={"webapps": {
        SPANS: {"type": "ml-assisted-labeling/text-spans-labeling",
                "params": {**common, "queries_ds": "queries"}},
        NESTED: {"type": "ml-assisted-labeling/text-spans-labeling",
                 "params": {**common, "labels_ds": "nested_labels",
                            "metadata_ds": "nested_metadata", "overlapping_spans": True}},
    }})
    pool = pd.DataFrame({"key": [f"t{i}" for i in range(len(TEXTS))], "text": TEXTS})
    project.dataset("pool", create=True).write(pool)
    predicted = [
        [{"start": 0, "end": 12, "label": "PER", "score": 0.91},
         {"start": 17, "end": 32, "label": "PER", "score": 0.55},
         {"start": 36, "end": 42, "label": "LOC", "score": 0.8}],
        [{"start": 0, "end": 9, "label": "ORG", "score": 0.7}],
        [],
        [{"start": 0, "end": 5, "label": "LOC", "score": 0.6}],
    ]
    queries = pool.assign(uncertainty=[0.9, 0.8, 0.2, 0.1],
                          prediction=[json.dumps(p) for p in predicted],
                          confidence=[0.5, 0.7, 0.9, 0.6], model_version=3, query_rank=range(4))
    project.dataset("queries", create=True).write(queries)
    project.variables.incr(session_variable("queries"))
    return project


@pytest.fixture
def server(make_project, serve):
    project = setup_project(make_project)
    return project, serve(project.dir, "--no-scheduler")


def api(server, method, webapp, path, user="ann", **kwargs):
    return server.request(method, f"/api/v1/webapps/{webapp}/{path}",
                          headers={"X-Labelloop-User": user}, **kwargs)


def written(project) -> tuple:
    with project.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(annotations_table)).scalar_one()
    return (n, *(project.dataset(name, create=True).count() for name in
                 ("labels", "metadata", "nested_labels", "nested_metadata")))


def test_spans_are_answers_suggestions_and_history(server):
    project, srv = server
    listed = {w["id"]: w for w in srv.get("/api/v1/webapps").json()}
    assert listed[SPANS]["kind"] == "spans" and listed[SPANS]["categories"] == list(TYPES)
    cfg = api(srv, "GET", SPANS, "config").json()
    assert cfg["kind"] == "spans" and cfg["overlapping_spans"] is False
    assert [(c["name"], c["description"]) for c in cfg["categories"]] == list(TYPES.items())
    items = api(srv, "GET", SPANS, "batch?size=4").json()["items"]
    assert [i["data"]["text"] for i in items] == TEXTS  # the sampler's rank
    assert items[0]["suggestion"] == {"model_version": 3, "spans": [
        {"start": 0, "end": 12, "label": "PER", "score": 0.91},
        {"start": 17, "end": 32, "label": "PER", "score": 0.55},
        {"start": 36, "end": 42, "label": "LOC", "score": 0.8}]}
    assert items[2]["suggestion"] == {"spans": [], "model_version": 3}
    # Unsorted in, sorted by (start, end, label) when stored.
    answer = [{"start": 36, "end": 42, "label": "LOC"}, {"start": 0, "end": 12, "label": "PER"},
              {"start": 17, "end": 32, "label": "PER"}]
    r = api(srv, "POST", SPANS, "labels", json_body={"id": "t0", "spans": answer,
                                                     "comment": "three"})
    assert r.status == 200, r.text
    assert r.json()["stats"]["per_label"] == {"PER": 2, "ORG": 0, "LOC": 1}
    # "no entities here" is an answer, not a skip
    empty = api(srv, "POST", SPANS, "labels", json_body={"id": "t2", "spans": []})
    assert empty.status == 200 and empty.json()["stats"]["labeled"] == 2
    assert empty.json()["stats"]["skipped"] == 0
    skipped = api(srv, "POST", SPANS, "skips", json_body={"id": "t3"})
    assert skipped.status == 200
    labels = project.dataset("labels").read().sort_values("label_id")
    assert labels["key"].tolist() == ["t0", "t2"]
    stored = [json.loads(v) for v in labels["label"]]
    assert stored == [sorted(answer, key=lambda s: (s["start"], s["end"])), []]
    assert [TEXTS[0][s["start"]:s["end"]] for s in stored[0]] == \
        ["Ada Lovelace", "Charles Babbage", "London"]
    meta = project.dataset("metadata").read().sort_values("label_id")
    assert meta["status"].tolist() == ["LABELED", "LABELED", "SKIPPED"]
    assert json.loads(meta["label"].iloc[0]) == stored[0] and meta["label"].iloc[1] == "[]"
    # back: the spans as answered; change the first answer
    hist = api(srv, "GET", SPANS, "annotations").json()["annotations"]
    assert [a["id"] for a in hist] == ["t3", "t2", "t0"]
    assert hist[2]["spans"] == stored[0] and hist[1]["spans"] == [] and hist[0]["spans"] is None
    changed = api(srv, "POST", SPANS, "labels", json_body={
        "id": "t0", "spans": [{"start": 0, "end": 3, "label": "PER"}]})
    assert changed.status == 200
    assert changed.json()["label_id"] == r.json()["label_id"]
    assert changed.json()["stats"]["per_label"] == {"PER": 1, "ORG": 0, "LOC": 0}
    labels = project.dataset("labels").read().sort_values("label_id")
    assert json.loads(labels["label"].iloc[0]) == [{"start": 0, "end": 3, "label": "PER"}]
    assert len(labels) == 2


def span(start, end, label="PER"):
    return {"start": start, "end": end, "label": label}


BAD = [  # (what, body, status, words the error must hold)
    ("end beyond the text", [span(0, 3), span(20, 99)], 400,
     ["span 1", "start 20, end 99, label 'PER'", "<= 29"]),
    ("empty span", [span(5, 5, "ORG")], 400, ["span 0", "start 5, end 5"]),
    ("end before start", [span(9, 4)], 400, ["span 0", "start 9, end 4"]),
    ("negative start", [span(-1, 4)], 400, ["span 0", "start -1"]),
    ("unknown type", [span(0, 9, "ORG"), span(16, 28, "ANIMAL")], 400,
     ["span 1", "unknown entity type 'ANIMAL'", "'PER', 'ORG', 'LOC'"]),
    ("overlap", [span(16, 28), span(0, 9, "ORG"), span(22, 28, "ORG")], 400,
     ["span 2", "start 22, end 28, label 'ORG'", "overlaps span 0", "start 16, end 28"]),
    ("repeated span", [span(0, 9, "ORG"), span(0, 9, "ORG")], 400, ["span 1", "repeats span 0"]),
    ("spans not a list", {"start": 0}, 400, ["spans"]),
    ("a span without label", [{"start": 0, "end": 3}], 400, ["label"]),
    ("a float offset", [{"start": 0.5, "end": 3, "label": "PER"}], 400, ["start"]),
    ("an extra field", [{**span(0, 3), "text": "Acm"}], 400, ["text"]),
]


def test_bad_spans_are_a_400_naming_the_span_and_write_nothing(server):
    project, srv = server
    api(srv, "GET", SPANS, "batch?size=2")
    assert api(srv, "POST", SPANS, "labels", json_body={"id": "t0", "spans": []}).status == 200
    before = written(project)
    for what, spans, status, words in BAD:
        r = api(srv, "POST", SPANS, "labels", json_body={"id": "t1", "spans": spans})
        assert r.status == status, f"{what}: {r.status} {r.text}"
        for word in words:
            assert word in r.json()["error"], f"{what}: {word!r} not in {r.json()['error']!r}"
        assert written(project) == before, what
    # A change of an answer that is refused leaves the answer as it was.
    r = api(srv, "POST", SPANS, "labels", json_body={"id": "t0", "spans": [span(0, 999)]})
    assert r.status == 400 and written(project) == before
    assert project.dataset("labels").read()["label"].tolist() == ["[]"]
    # A category instead of spans: the route schema names the field to send.
    r = api(srv, "POST", SPANS, "labels", json_body={"id": "t1", "label": "PER"})
    assert r.status == 400 and "spans" in r.json()["error"] and written(project) == before


def test_overlapping_spans_when_the_webapp_allows_them(server):
    project, srv = server
    api(srv, "GET", NESTED, "batch?size=1")
    nested = [span(0, 9, "ORG"), span(0, 4, "ORG"), span(16, 28), span(16, 21)]
    r = api(srv, "POST", NESTED, "labels", json_body={"id": "t1", "spans": nested})
    assert r.status == 200, r.text
    assert json.loads(project.dataset("nested_labels").read()["label"].iloc[0]) == [
        span(0, 4, "ORG"), span(0, 9, "ORG"), span(16, 21), span(16, 28)]
    again = api(srv, "POST", NESTED, "labels", json_body={"id": "t1", "spans": [
        span(0, 4, "ORG"), span(0, 4, "ORG")]})
    assert again.status == 400 and "repeats span 0" in again.json()["error"]
