"""The one ranking publisher: rows, session and QUERIES_UPDATED in one call, on a real project.

The engine then follows the published session by its typed `SessionKey`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import labeling.publish as publish_module
from labeling.engine import LabelingEngine
from labeling.publish import SessionKey, publish_ranking, session_variable
from labeling.settings import parse_settings
from labelloop import webhooks
from labelloop.errors import LabelloopError
from labelloop.project import Project

CATS = {"cat": None, "dog": None}


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    p.dataset("pool", create=True).write(pd.DataFrame({"num": np.arange(6)}))
    # A receiver of QUERIES_UPDATED: nothing listens there; the outbox row is what we check.
    webhooks.add_hook(p, "http://127.0.0.1:9/hook", events=["QUERIES_UPDATED"])
    return p


def ranking(nums, uncertainty, prediction=None) -> pd.DataFrame:
    frame = pd.DataFrame({"num": nums, "uncertainty": uncertainty})
    if prediction is not None:
        frame["prediction"] = prediction
    return frame


def queries_updated(project) -> list[dict]:
    rows = webhooks.outbox(project)
    assert {r["event"] for r in rows} <= {"QUERIES_UPDATED"}
    return [json.loads(r["payload"])["queries"] for r in reversed(rows)]


def test_one_call_writes_the_ranking_bumps_the_session_and_emits_the_event(project):
    queries = project.dataset("queries", create=True)
    # Extra columns (a span model's JSON prediction) are written as they come.
    spans = [json.dumps([{"start": 0, "end": 3, "label": "ORG", "score": 0.9}]), "[]", "[]"]
    first = ranking([4, 1, 2], [0.9, 0.5, 0.1], spans)

    assert publish_ranking(project, queries, first, model_version=3) == 1

    stored = queries.read()
    assert stored["num"].tolist() == [4, 1, 2]
    assert stored["query_rank"].tolist() == [0, 1, 2]  # added: the serving order
    assert stored["prediction"].tolist() == spans
    assert project.variables.get(session_variable("queries")) == 1
    assert queries_updated(project) == [
        {"dataset": "queries", "session": 1, "rows": 3, "model_version": 3}]

    # A second ranking replaces the first: a new generation and the next session.
    generation = queries.generation()
    second = ranking([0, 5], [0.7, 0.6]).assign(query_rank=[1, 0])  # its own order is kept
    assert publish_ranking(project, queries, second, model_version="v2") == 2
    assert queries.read()["query_rank"].tolist() == [1, 0]
    assert queries.generation() > generation
    assert [e["session"] for e in queries_updated(project)] == [1, 2]


def test_a_large_ranking_is_staged_column_wise(project, monkeypatch):
    monkeypatch.setattr(publish_module, "WRITE_ROWS", 2)
    queries = project.dataset("queries", create=True)
    assert publish_ranking(project, queries, ranking([3, 2, 1], [0.3, 0.2, 0.1])) == 1
    assert queries.storage == "columns"
    assert queries.read()["num"].tolist() == [3, 2, 1]


def test_a_failure_in_the_transaction_publishes_nothing(project):
    queries = project.dataset("queries", create=True)
    publish_ranking(project, queries, ranking([1], [0.5]))
    generation = queries.generation()
    # The session can't be incremented: the new rows, swapped in first, are rolled back.
    project.variables.set(session_variable("queries"), "one")
    with pytest.raises(LabelloopError, match="not an integer"):
        publish_ranking(project, queries, ranking([2, 3], [0.9, 0.8]))
    assert queries.read()["num"].tolist() == [1] and queries.generation() == generation
    assert [e["session"] for e in queries_updated(project)] == [1]
    # Refused before any write: duplicate columns.
    project.variables.set(session_variable("queries"), 1)
    with pytest.raises(LabelloopError, match="duplicate column"):
        publish_ranking(project, queries, pd.DataFrame([[1, 0.5]], columns=["num", "num"]))
    assert project.variables.get(session_variable("queries")) == 1


def test_session_key_round_trips_its_stored_form():
    key = SessionKey("dataset:pool:3:id", "queries", 7, 2)
    assert key.text == "dataset:pool:3:id|queries:7:2"
    assert SessionKey.parse(key.text) == key
    none = SessionKey("folder:images:10:abcdef")
    assert none.text == "folder:images:10:abcdef|-" and SessionKey.parse(none.text) == none


def test_the_engine_follows_a_published_session(project):
    cfg = parse_settings({"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
                          "metadata_ds": "metadata", "queries_ds": "queries", "id_column": "num"},
                         "tabular", "w", project)
    engine = LabelingEngine(project, cfg, check_interval=0, background=False)
    before = engine.session_key()
    assert before.dataset is None and engine.session() == 0
    queries = project.dataset("queries", create=True)
    publish_ranking(project, queries, ranking([5, 0, 3, 1, 2, 4], np.linspace(1, 0, 6)))
    key = engine.session_key()
    assert key == SessionKey(before.pool, "queries", queries.generation(), 1)
    engine.refresh(wait=True)
    assert engine.session() == 1
    batch = engine.batch("ann", 6)
    assert batch["session"] == 1
    assert [i["id"] for i in batch["items"]] == ["5", "0", "3", "1", "2", "4"]
