"""The review queue (labeling.quality.review): its order, scores and reasons in-process, and
`GET review` / `POST review` over HTTP with roles (a real `labelloop serve`)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import create_project

from labeling.engine import LabelingEngine, annotations_table, session_variable
from labeling.kinds import KindError
from labeling.quality import consensus
from labeling.quality.review import ReviewQueue
from labeling.settings import parse_settings
from labelloop.errors import ConfigError, NotFoundError
from labelloop.project import Project

CATS = {"cat": None, "dog": None, "bird": None}
IDS = [f"w{i}" for i in range(8)]
# The model's prediction and confidence per item (w3: not among the queries).
MODEL = {"w0": ("cat", 0.6), "w1": ("cat", 0.5), "w2": ("dog", 0.9), "w4": ("cat", 0.99),
         "w5": ("dog", 0.6), "w6": ("dog", 0.4), "w7": ("bird", 0.95)}
ANSWERS = {  # item -> [(annotator, label)]
    "w0": [("ann", "cat"), ("bob", "dog")],                  # disagree: 1 - 0.5
    "w1": [("ann", "cat"), ("bob", "cat"), ("cyd", "dog")],  # disagree: 1 - 2/3
    "w2": [("ann", "cat"), ("bob", "cat")],                  # the model says dog at 0.9
    "w3": [("ann", "bird")],                                 # a label issue, quality 0.05
    "w4": [("ann", "cat"), ("bob", "cat")],                  # the model agrees
    "w5": [("ann", "dog")],                                  # nothing suspicious
    "w6": [("ann", "cat"), ("bob", "dog")],                  # disagree + an issue (0.8)
    "w7": [("ann", "dog"), ("bob", "cat")],                  # reviewed below: leaves
}
ISSUES = pd.DataFrame({"word": ["w3", "w6", "w7"], "given_label": ["bird", "cat", "dog"],
                       "suggested_label": ["cat", "dog", "bird"], "quality": [0.05, 0.8, 0.01],
                       "reason": ["the model gives 'bird' a probability of 0.02", None,
                                  "the model gives 'dog' a probability of 0.01"],
                       "model_version": pd.array([None, 4, 4], dtype="Int64")})


def pool() -> pd.DataFrame:
    return pd.DataFrame({"word": IDS, "x": range(len(IDS))})


def queries() -> pd.DataFrame:
    frame = pool()
    frame = frame[frame["word"].isin(MODEL)].copy()
    frame["prediction"] = [MODEL[w][0] for w in frame["word"]]
    frame["confidence"] = [MODEL[w][1] for w in frame["word"]]
    frame["uncertainty"] = 1 - frame["confidence"]
    frame["model_version"] = 4
    return frame


@pytest.fixture
def engine(tmp_path) -> LabelingEngine:
    project = Project.init(tmp_path / "proj")
    project.dataset("pool", create=True).write(pool())
    project.dataset("queries", create=True).write(queries())
    project.variables.incr(session_variable("queries"))
    project.dataset("issues", create=True).write(ISSUES)
    cfg = parse_settings({"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
                          "metadata_ds": "metadata", "queries_ds": "queries",
                          "id_column": "word", "labels_per_annotator": True,
                          "consensus_ds": "consensus", "label_issues_ds": "issues"},
                         "tabular", "w", project)
    e = LabelingEngine(project, cfg, check_interval=0, background=False)
    e.batch("ann", 8)  # the queue of the queries' session, with the model's predictions
    for item, answers in ANSWERS.items():
        for user, label in answers:
            e.label(user, item, label)
    return e


def written(e: LabelingEngine) -> tuple:
    return (e.project.dataset("consensus").read().to_dict("records"),
            e.project.dataset("labels").count(), e.project.dataset("metadata").count())


def test_the_queue_serves_the_most_suspicious_first_with_its_reasons(engine):
    queue = ReviewQueue(engine)
    engine.ctx.write(lambda conn: consensus.record_review(engine.ctx, conn, "w7", "bird",
                                                          "rev", None))
    got = queue.items(20)
    assert [(i["id"], i["score"]) for i in got["items"]] == [
        ("w3", 0.95), ("w2", 0.9), ("w0", 0.5), ("w6", 0.5), ("w1", pytest.approx(1 / 3))]
    assert got["size"] == 5
    items = {i["id"]: i for i in got["items"]}
    assert items["w3"]["reason"] == "the model gives 'bird' a probability of 0.02"
    assert items["w2"]["reason"] == "the model predicts 'dog' (confidence 0.90)"
    assert items["w0"]["reason"] == "2 answers disagree (agreement 0.50)"
    assert items["w6"]["reason"] == ("2 answers disagree (agreement 0.50); a likely label issue "
                                     "(label quality 0.80)")
    assert items["w1"]["reason"] == "3 answers disagree (agreement 0.67)"
    w1 = items["w1"]
    assert w1["answers"] == [{"annotator": "ann", "label": "cat"},
                             {"annotator": "bob", "label": "cat"},
                             {"annotator": "cyd", "label": "dog"}]
    assert (w1["consensus"], w1["source"]) == ("cat", "majority")
    assert w1["agreement"] == pytest.approx(2 / 3)
    assert w1["data"] == engine.batch("zed", 8)["items"][1]["data"]  # as batch gives it
    assert items["w2"]["suggestion"] == {"label": "dog", "confidence": 0.9, "model_version": 4}
    # w3 is not among the queries: the label issue's suggestion stands in (no model version).
    assert items["w3"]["suggestion"] == {"label": "cat", "confidence": None}
    assert [i["id"] for i in queue.items(2)["items"]] == ["w3", "w2"]


def test_a_review_becomes_the_consensus_and_leaves_the_queue(engine):
    queue = ReviewQueue(engine)
    labels_before = written(engine)[1:]
    out = queue.review("rita", "w0", "dog", "the ear shape")
    assert (out["label"], out["source"], out["reviewer"], out["comment"]) == \
        ("dog", "reviewed", "rita", "the ear shape")
    assert out["agreement"] == 0.5 and out["n_answers"] == 2
    rows, *counts = written(engine)
    w0 = next(r for r in rows if r["word"] == "w0")
    assert (w0["label"], w0["source"], w0["reviewer"]) == ("dog", "reviewed", "rita")
    assert counts == list(labels_before)  # the labels and metadata are the annotators'
    assert "w0" not in [i["id"] for i in queue.items(20)["items"]]
    queue.review("rita", "w3", "cat")  # a flagged item leaves too
    assert "w3" not in [i["id"] for i in queue.items(20)["items"]]


def test_a_bad_review_is_refused_and_writes_nothing(engine):
    queue = ReviewQueue(engine)
    before = written(engine)
    with pytest.raises(KindError, match="label 'fish' is not a category"):
        queue.review("rita", "w0", "fish")
    with pytest.raises(KindError, match="one category per item"):
        queue.review("rita", "w0", ["cat", "dog"])
    with pytest.raises(NotFoundError, match="no item 'w99'"):
        queue.review("rita", "w99", "cat")
    assert written(engine) == before
    engine.ctx.cfg.consensus_ds = None
    with pytest.raises(ConfigError, match="set its consensus_ds param"):
        queue.review("rita", "w0", "cat")


# ---------------------------------------------------------------- over HTTP, with roles

@pytest.fixture(scope="module")
def site(tmp_path_factory, serve_module, run_cli):
    """One server: a tabular webapp with per-annotator labels, a consensus and label issues;
    tokens for two annotators and a reviewer, and their answers."""
    project = create_project(tmp_path_factory.mktemp("review") / "p", {"webapps": {"app": {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
                   "metadata_ds": "metadata", "id_column": "word",
                   "labels_per_annotator": True, "consensus_ds": "consensus",
                   "label_issues_ds": "issues"}}}}, plugins=False)
    project.dataset("pool", create=True).write(pool())
    project.dataset("issues", create=True).write(ISSUES)
    tokens = {name: run_cli(project.dir, "token", "add", name, *role).stdout.strip()
              for name, role in (("ann", ()), ("bob", ()), ("rita", ("--role", "reviewer")))}
    server = serve_module(project.dir, "--no-scheduler")
    for item in ("w0", "w3", "w6"):
        for user, label in ANSWERS[item]:
            res = api(server, tokens[user], "POST", "labels", {"id": item, "label": label})
            assert res.status == 200, res.text
    return project, server, tokens


def api(server, token, method, path, body=None):
    return server.request(method, f"/api/v1/webapps/app/{path}", json_body=body,
                          headers={"Authorization": f"Bearer {token}"})


def state(project) -> tuple:
    with project.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(annotations_table)).scalar_one()
    return n, project.dataset("consensus").read().sort_values("word").to_dict("records")


def test_review_over_http_for_reviewers_only(site):
    project, server, tokens = site
    res = api(server, tokens["rita"], "GET", "review?size=10")
    assert res.status == 200, res.text
    assert [(i["id"], i["score"]) for i in res.json()["items"]] == [
        ("w3", 0.95), ("w0", 0.5), ("w6", 0.5)]
    assert res.json()["items"][0]["suggestion"] == {"label": "cat", "confidence": None}
    before = state(project)
    for method, body in (("GET", None), ("POST", {"id": "w0", "label": "dog"})):
        res = api(server, tokens["ann"], method, "review", body)
        assert res.status == 403, res.text
        assert "needs the reviewer role" in res.json()["error"]
    assert state(project) == before  # nothing written

    res = api(server, tokens["rita"], "POST", "review",
              {"id": "w6", "label": "dog", "comment": "a dog, clearly"})
    assert res.status == 200, res.text
    assert (res.json()["source"], res.json()["reviewer"]) == ("reviewed", "rita")
    rows = {r["word"]: r for r in state(project)[1]}
    assert (rows["w6"]["label"], rows["w6"]["source"], rows["w6"]["reviewer"],
            rows["w6"]["comment"]) == ("dog", "reviewed", "rita", "a dog, clearly")
    assert rows["w0"]["source"] == "majority"
    res = api(server, tokens["rita"], "GET", "review")
    assert [i["id"] for i in res.json()["items"]] == ["w3", "w0"]


def test_a_bad_review_is_a_400_and_writes_nothing(site):
    project, server, tokens = site
    before = state(project)
    for body, words in (({"id": "w0", "label": "fish"}, "label"),
                        ({"id": "w0", "label": ["cat"]}, "label"),
                        ({"id": "w0"}, "label"),
                        ({"id": "w0", "label": "cat", "extra": 1}, "extra")):
        res = api(server, tokens["rita"], "POST", "review", body)
        assert res.status == 400, (body, res.text)
        assert words in res.json()["error"]
    res = api(server, tokens["rita"], "POST", "review", {"id": "w99", "label": "cat"})
    assert res.status == 404 and "no item 'w99'" in res.json()["error"]
    res = api(server, tokens["rita"], "GET", "review?size=0")
    assert res.status == 400
    assert state(project) == before
    assert json.loads(before[1][0]["answers"])  # the rows compared hold the answers
