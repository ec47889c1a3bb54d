"""The similarity labeler: base embeddings, tuning, the service, its routes over a real server,
every refused input (nothing written), labeling while the pool is still being indexed, the
embed / find-similar recipes and the every-n-labelings trigger counting questions."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from labeling import demo
from labeling.similarity.embedding import base_pipeline, embed, tuned_pipeline
from labeling.similarity.service import SimilarityService
from labeling.similarity.settings import parse_settings
from labeling.similarity.tuning import Answer, fit_projection
from labeling.training import TRUSTED_TYPES
from labelloop import flow
from labelloop.errors import ConfigError, ConflictError, LabelloopError
from labelloop.project import Project, load_skops

APP = "similar-digits"
API = f"/api/v1/webapps/{APP}"


# ------------------------------------------------------------------------- units

def test_base_embeddings_per_data_type_are_unit_vectors(tmp_path):
    rows = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) ** 2,
                         "kind": ["x", "y"] * 25})
    for kind, frame, kw in (
            ("tabular", rows, {}),
            ("text", pd.DataFrame({"text": [f"word{i % 7} other{i % 3} thing" for i in range(40)]}),
             {"text_column": "text"})):
        pipe = base_pipeline(kind, frame, **kw)
        Z = embed(pipe, frame)
        assert Z.shape[0] == len(frame) and np.allclose(np.linalg.norm(Z, axis=1), 1.0)
    with pytest.raises(LabelloopError, match="at least 2"):
        base_pipeline("tabular", rows.iloc[:1])
    with pytest.raises(LabelloopError, match="text column 'body'"):
        base_pipeline("text", rows, text_column="body")


def test_tuning_pulls_positives_and_pushes_negatives():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # The answers contradict the base: the farthest items related, the nearest not.
    answers = []
    for q in (0, 5):
        order = [int(i) for i in np.argsort(((X - X[q]) ** 2).sum(1)) if i != q]
        answers.append(Answer(q, order[-2:], order[:2]))
    fit = fit_projection(X, answers, epochs=20)
    d = lambda A, i, j: float(np.sum((A @ (X[i] - X[j])) ** 2))  # noqa: E731
    for a in answers:
        for p in a.positives:
            for n in a.negatives:
                assert d(np.eye(6), a.query, p) > d(np.eye(6), a.query, n)
                assert d(fit.matrix, a.query, p) < d(fit.matrix, a.query, n)
    assert fit.pairs == 8 and fit.triplets == 8


def test_saved_pipeline_is_skops_safe_and_matches_the_tuned_vectors(tmp_path):
    frame = pd.DataFrame({"a": np.arange(30.0), "b": np.sin(np.arange(30.0))})
    base = base_pipeline("tabular", frame)
    dim = embed(base, frame).shape[1]
    A = np.random.default_rng(1).normal(size=(dim, dim))
    pipe = tuned_pipeline(base, A)
    import skops.io as sio

    path = tmp_path / "m.skops"
    sio.dump(pipe, path)
    loaded = load_skops(path, TRUSTED_TYPES)  # the host refuses anything untrusted
    assert np.allclose(loaded.transform(frame), embed(base, frame) @ A.T)


# ------------------------------------------------------------------------- the server

@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, serve_module):
    directory = tmp_path_factory.mktemp("sim") / "project"
    demo.create_demo(directory, demo.SIMILARITY)
    return serve_module(directory)


def _questions(server, user="bob", size=1):
    resp = server.get(f"{API}/questions?size={size}", headers={"X-Labelloop-User": user})
    assert resp.status == 200, resp.text
    return resp.json()


def _pairs_count(server) -> int:
    project = Project.open(server.project_dir)
    ds = project.dataset("pairs")
    return ds.count() if ds.exists() else 0


def test_routes_answer_save_neighbors_stats(demo_server, poll):
    server = demo_server
    poll(lambda: _questions(server)["questions"], timeout=60, what="the first question")
    out = _questions(server, size=2)
    assert len(out["questions"]) == 2
    q = out["questions"][0]
    assert {"question_id", "query", "candidates"} <= set(q)
    assert len(q["candidates"]) == 8 and all("score" in c for c in q["candidates"])
    cands = [c["id"] for c in q["candidates"]]
    resp = server.post(f"{API}/answers", {"question_id": q["question_id"], "positives": cands[:2],
                                          "negatives": cands[2:]},
                       headers={"X-Labelloop-User": "bob"})
    assert resp.status == 200, resp.text
    assert resp.json()["pairs"] == 8
    poll(lambda: server.get(f"{API}/stats").json()["model_version"] >= 1, what="a tuned version")
    saved = server.post(f"{API}/model", {}).json()
    assert saved["model"] == "embedding" and saved["version"] >= 1
    near = server.get(f"{API}/neighbors?id={q['query']['id']}&k=5").json()
    assert len(near["neighbors"]) == 5 and near["model_version"] >= 1
    stats = server.get(f"{API}/stats").json()
    for key in ("questions", "positives", "negatives", "ignored", "saved", "model_version",
                "indexed", "total"):
        assert key in stats
    doc = server.get("/api/v1/openapi.json").json()
    pytest.importorskip("openapi_spec_validator").validate(doc)
    for path in ("questions", "answers", "model", "neighbors", "stats"):
        assert f"{API}/{path}" in doc["paths"]
    assert "requestBody" in doc["paths"][f"{API}/answers"]["post"]


BAD_ANSWERS = [
    ({"positives": []}, 400, "question_id"),
    ({"question_id": "nope", "positives": ["x"]}, 400, "unknown question_id"),
    ({"question_id": "{qid}", "positives": ["not-a-candidate.png"]}, 400, "not in question"),
    ({"question_id": "{qid}", "positives": ["{c0}"], "negatives": ["{c0}"]}, 400,
     "both positive and negative"),
    ({"question_id": "{qid}"}, 400, "no answer"),
    ({"question_id": "{qid}", "ignored": True, "positives": ["{c0}"]}, 400, "ignored question"),
    ({"question_id": "{qid}", "positives": ["{c0}", "{c0}"]}, 400, "twice"),
    ({"question_id": "{qid}", "positives": "{c0}"}, 400, "positives"),
    ({"question_id": "{qid}", "ignored": "yes"}, 400, "ignored"),
    ({"question_id": "{qid}", "extra": 1}, 400, "extra"),
]


@pytest.mark.parametrize("body,status,message", BAD_ANSWERS)
def test_bad_answers_are_refused_and_write_nothing(demo_server, poll, body, status, message):
    server = demo_server
    q = poll(lambda: _questions(server)["questions"], timeout=60, what="a question")[0]
    text = (str(body).replace("{qid}", q["question_id"])
            .replace("{c0}", q["candidates"][0]["id"]))
    payload = eval(text)  # noqa: S307 - the test's own literals
    before = _pairs_count(server)
    resp = server.post(f"{API}/answers", payload)
    assert resp.status == status, resp.text
    assert message in resp.json()["error"]
    assert _pairs_count(server) == before


def test_a_question_answered_twice_is_a_conflict(demo_server, poll):
    server = demo_server
    q = poll(lambda: _questions(server)["questions"], timeout=60, what="a question")[0]
    assert server.post(f"{API}/answers", {"question_id": q["question_id"],
                                          "ignored": True}).status == 200
    before = _pairs_count(server)
    resp = server.post(f"{API}/answers", {"question_id": q["question_id"],
                                          "positives": [q["candidates"][0]["id"]]})
    assert resp.status == 409 and "already answered" in resp.json()["error"]
    assert _pairs_count(server) == before


@pytest.mark.parametrize("query,message", [
    ("?id=no-such.png", "unknown item id"), ("?id=../etc/passwd", "escapes folder"),
    ("?id=digit-0001.png&k=0", "k"), ("?id=digit-0001.png&k=1000", "k"), ("", "id")])
def test_bad_neighbor_queries(demo_server, query, message):
    resp = demo_server.get(f"{API}/neighbors{query}")
    assert resp.status == 400 and message in resp.json()["error"]


@pytest.mark.parametrize("size", ["0", "21", "many"])
def test_bad_question_sizes(demo_server, size):
    resp = demo_server.get(f"{API}/questions?size={size}")
    assert resp.status == 400 and "size" in resp.json()["error"]


def test_bad_settings_are_refused(make_project):
    project = make_project(plugins=False)
    project.dataset("pool", create=True).write(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))
    with pytest.raises(ConfigError, match="no pool"):
        parse_settings({}, "app", project)
    with pytest.raises(LabelloopError, match="unknown dataset"):
        parse_settings({"unlabeled": "missing"}, "app", project)
    with pytest.raises(ConfigError, match="needs a managed folder"):
        parse_settings({"unlabeled": "pool", "data_type": "image"}, "app", project)
    with pytest.raises(ConfigError, match="must differ"):
        parse_settings({"unlabeled": "pool", "positive_value": 1, "negative_value": 1}, "app",
                       project)


# ------------------------------------------------------------------------- indexing

def test_labeling_starts_while_the_pool_is_still_being_indexed(make_project):
    project = make_project(plugins=False)
    rng = np.random.default_rng(0)
    pool = pd.DataFrame({"item": [f"row-{i:05d}" for i in range(3000)],
                         **{f"x{j}": rng.normal(size=3000) for j in range(8)}})
    project.dataset("pool", create=True).write(pool)
    cfg = parse_settings({"unlabeled": "pool", "id_column": "item", "top_k": 5,
                          "match_pool": 50}, "app", project)
    service = SimilarityService(project, cfg, background=False, fit_rows=300, chunk_rows=300)
    gate = threading.Event()
    add = service.index._add

    def slow_add(ids, rows, frame=None):  # the pool stalls after its first chunk until told
        add(ids, rows, frame)
        gate.wait(60)

    service.index._add = slow_add
    thread = threading.Thread(target=service.index.run, daemon=True)
    thread.start()
    assert service.index.wait(timeout=60, items=300)
    stats = service.stats()
    assert stats["indexed"] == 300 and stats["total"] == 3000 and not stats["indexing_done"]
    out = service.questions("carol", 3)
    indexed = set(service.index.ids[:300])
    assert len(out["questions"]) == 3
    for q in out["questions"]:
        assert q["query"]["id"] in indexed
        assert {c["id"] for c in q["candidates"]} <= indexed
    q = out["questions"][0]
    cands = [c["id"] for c in q["candidates"]]
    answer = service.answer("carol", {"question_id": q["question_id"], "positives": cands[:1],
                                      "negatives": cands[1:]})
    assert answer["pairs"] == 5
    assert project.dataset(cfg.pairs_ds).count() == 5
    assert service.stats()["model_version"] == 1  # trained on what is indexed
    with pytest.raises(LabelloopError, match="still being indexed"):
        service.neighbors("row-02999", 3)
    gate.set()
    thread.join(60)
    assert service.index.done and service.stats()["indexed"] == 3000
    assert len(service.neighbors("row-02999", 3)["neighbors"]) == 3
    with pytest.raises(ConflictError):
        service.answer("carol", {"question_id": q["question_id"], "ignored": True})


# ------------------------------------------------------------------------- recipes, trigger

def test_embed_and_find_similar_recipes_and_the_question_trigger(make_project):
    digits = load_digits()
    project = make_project(plugins=False, config={
        "datasets": {"pool": {}, "embeddings": {}, "neighbors": {}, "pairs": {}},
        "models": {"embedding": {}},
        "recipes": {
            "embed": {"type": "ml-assisted-labeling/embed",
                      "inputs": {"saved_model": "embedding", "pool": "pool"},
                      "outputs": {"embeddings": "embeddings"},
                      "params": {"id_column": "item", "chunk_size": 100}},
            "similar": {"type": "ml-assisted-labeling/find-similar",
                        "inputs": {"saved_model": "embedding", "pool": "pool"},
                        "outputs": {"neighbors": "neighbors"},
                        "params": {"id_column": "item", "k": 4, "chunk_size": 100}}},
    })
    frame = pd.DataFrame(digits.data[:300], columns=[f"p{i}" for i in range(64)])
    frame.insert(0, "item", [f"d{i}" for i in range(300)])
    project.dataset("pool").write(frame)
    cfg = parse_settings({"unlabeled": "pool", "id_column": "item", "model_name": "embedding"},
                         "app", project)
    service = SimilarityService(project, cfg, background=False)
    q = service.questions("dan", 1)["questions"][0]
    cands = [c["id"] for c in q["candidates"]]
    service.answer("dan", {"question_id": q["question_id"], "positives": cands[:3],
                           "negatives": cands[3:]})
    assert service.save_model("dan")["version"] == 1
    flow.run_recipe(project, "embed", show_progress=False)
    emb = project.dataset("embeddings").read()
    assert len(emb) == 300 and emb.columns[0] == "id" and set(emb["id"]) == set(frame["item"])
    flow.run_recipe(project, "similar", show_progress=False)
    near = project.dataset("neighbors").read()
    assert len(near) == 300 * 4 and (near["query_id"] != near["neighbor_id"]).all()
    assert near.groupby("query_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4]).all()
    # The saved model's neighbours are the webapp's.
    webapp = [n["id"] for n in service.neighbors("d7", 4)["neighbors"]]
    assert near[near["query_id"] == "d7"].sort_values("rank")["neighbor_id"].tolist() == webapp

    # The every-n-labelings trigger, counting answered questions of the pairs dataset.
    registry = project.registry
    trigger = registry.component("ml-assisted-labeling/every-n-labelings", "trigger")
    state: dict = {}
    ctx = SimpleNamespace(project=project, state=state, log=None, config={
        "i_labeling_count": 2, "count": "questions", "ds_pairs": "pairs",
        "ds_metadata": "metadata", "ds_queries": "queries"})
    check = trigger.entry()
    assert check(ctx) is False  # one answered question
    q = service.questions("dan", 1)["questions"][0]
    service.answer("dan", {"question_id": q["question_id"], "ignored": True})
    assert check(ctx) is False  # an ignored question writes no pair
    q = service.questions("dan", 1)["questions"][0]
    service.answer("dan", {"question_id": q["question_id"], "negatives": [q["candidates"][0]["id"]]})
    assert check(ctx) is True and check(ctx) is False


def test_a_second_process_sees_the_same_questions_answers_and_versions(make_project, poll):
    project = make_project(plugins=False)
    rng = np.random.default_rng(3)
    pool = pd.DataFrame({"item": [f"r{i}" for i in range(200)],
                         **{f"x{j}": rng.normal(size=200) for j in range(5)}})
    project.dataset("pool", create=True).write(pool)
    cfg = parse_settings({"unlabeled": "pool", "id_column": "item", "top_k": 4}, "app", project)
    first = SimilarityService(project, cfg, background=False)
    # Another server process: its own Project object and its own index of the pool.
    second = SimilarityService(Project.open(project.dir), cfg, background=False)
    q = first.questions("erin", 1)["questions"][0]
    cands = [c["id"] for c in q["candidates"]]
    second.answer("erin", {"question_id": q["question_id"], "positives": cands[:2],
                           "negatives": cands[2:]})
    assert first.stats()["model_version"] == 1  # trained by the other process
    with pytest.raises(ConflictError, match="already answered"):
        first.answer("erin", {"question_id": q["question_id"], "ignored": True})
    assert first.stats()["positives"] == 2 and first.stats()["negatives"] == 2
    again = first.questions("erin", 3)["questions"]
    assert q["query"]["id"] not in {x["query"]["id"] for x in again}
    # Both processes fitted the same base and load the same tuned version (a process looks
    # for a newer version at most every VERSION_CHECK_SECONDS).
    item = q["query"]["id"]
    poll(lambda: first.neighbors(item, 5)["model_version"] == 1, what="the new version")
    assert first.neighbors(item, 5) == second.neighbors(item, 5)
