"""The consensus dataset (labeling.quality.consensus), kept in the answers' transaction by the
engine in-process: majority, ties, multi-label sets, spans, changed answers, reviewed labels."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa

from labeling.engine import LabelingEngine
from labeling.kinds.choice import ChoiceKind
from labeling.quality import consensus
from labeling.settings import EngineConfig, parse_settings
from labelloop.project import Project

CATS = {"cat": None, "dog": None, "bird": None}
TEXTS = ["Ada Lovelace met Charles Babbage in London.", "Acme Corp hired Grace Hopper."]


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    p.dataset("pool", create=True).write(pd.DataFrame(
        {"word": [f"w{i}" for i in range(8)], "x": range(8)}))
    p.dataset("texts", create=True).write(pd.DataFrame(
        {"key": ["t0", "t1"], "text": TEXTS}))
    return p


def make_engine(project, webapp="w", data_type="tabular", kind="choice", **settings
                ) -> LabelingEngine:
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "id_column": "word", "labels_per_annotator": True,
              "consensus_ds": "consensus", **settings}
    cfg = parse_settings(config, data_type, webapp, project, kind=kind)
    return LabelingEngine(project, cfg, check_interval=0, background=False)


def rows(project, name="consensus", key="word") -> dict[str, dict]:
    df = project.dataset(name).read()
    assert df[key].is_unique  # one row per item, never a second one
    return {r[key]: r for r in df.to_dict("records")}


def test_majority_with_every_answer_and_its_annotator(project):
    e = make_engine(project)
    for user, label in [("ann", "cat"), ("bob", "dog"), ("cyd", "cat")]:
        e.label(user, "w0", label)
    e.label("ann", "w1", "bird")
    got = rows(project)
    assert set(got) == {"w0", "w1"}
    w0 = got["w0"]
    assert (w0["label"], w0["n_answers"], w0["source"]) == ("cat", 3, "majority")
    assert w0["agreement"] == pytest.approx(2 / 3)
    assert json.loads(w0["answers"]) == [{"annotator": "ann", "label": "cat"},
                                         {"annotator": "bob", "label": "dog"},
                                         {"annotator": "cyd", "label": "cat"}]
    assert w0["reviewer"] is None and w0["comment"] is None and w0["updated"] > 0
    assert (got["w1"]["label"], got["w1"]["agreement"], got["w1"]["n_answers"]) == \
        ("bird", 1.0, 1)


def test_a_tie_has_no_majority_the_first_answer_is_kept_at_half_agreement(project):
    e = make_engine(project)
    e.label("ann", "w0", "dog")
    e.label("bob", "w0", "cat")
    for user, label in [("ann", "bird"), ("bob", "cat"), ("cyd", "dog"), ("dan", "bird")]:
        e.label(user, "w1", label)
    got = rows(project)
    assert (got["w0"]["label"], got["w0"]["agreement"]) == ("dog", 0.5)
    assert (got["w1"]["label"], got["w1"]["agreement"]) == ("bird", 0.5)


def test_a_changed_answer_updates_the_consensus_row(project):
    e = make_engine(project)
    e.label("ann", "w0", "cat")
    e.label("bob", "w0", "dog")
    e.label("cyd", "w0", "dog")
    assert rows(project)["w0"]["label"] == "dog"
    e.label("bob", "w0", "cat")  # bob changes his mind: cat now has the majority
    w0 = rows(project)["w0"]
    assert (w0["label"], w0["agreement"], w0["n_answers"]) == ("cat", pytest.approx(2 / 3), 3)
    assert json.loads(w0["answers"])[1] == {"annotator": "bob", "label": "cat"}
    e.skip("ann", "w0")  # a skip is no answer: bob's cat, cyd's dog, a tie: bob's first
    w0 = rows(project)["w0"]
    assert (w0["label"], w0["n_answers"], w0["agreement"]) == ("cat", 2, 0.5)
    e.skip("bob", "w0")
    e.skip("cyd", "w0")  # no answer left: no consensus row
    assert "w0" not in rows(project)
    assert project.dataset("consensus").count() == 0


def test_multi_label_answers_vote_as_one_set(project):
    e = make_engine(project, multi_label=True)
    e.label("ann", "w0", ["dog", "cat"])
    e.label("bob", "w0", ["cat", "dog"])
    e.label("cyd", "w0", ["cat"])
    w0 = rows(project)["w0"]
    assert json.loads(w0["label"]) == ["cat", "dog"]
    assert w0["agreement"] == pytest.approx(2 / 3)
    assert json.loads(w0["answers"])[2] == {"annotator": "cyd", "label": ["cat"]}


def test_spans_kept_by_a_strict_majority_of_the_answers(project):
    e = make_engine(project, data_type="text", kind="spans", unlabeled="texts",
                    id_column="key", text_column="text", entity_types={"PER": None, "LOC": None},
                    categories=None)
    ada, charles, london = ({"start": 0, "end": 12, "label": "PER"},
                            {"start": 17, "end": 32, "label": "PER"},
                            {"start": 36, "end": 42, "label": "LOC"})
    e.label("ann", "t0", [ada, charles, london])
    e.label("bob", "t0", [ada, london])
    e.label("cyd", "t0", [ada, {**charles, "label": "LOC"}])
    e.label("ann", "t1", [{"start": 16, "end": 28, "label": "PER"}])
    e.label("bob", "t1", [])
    got = rows(project, key="key")
    assert json.loads(got["t0"]["label"]) == [ada, london]  # 3/3 and 2/3; charles 1/3 each
    assert got["t0"]["agreement"] == pytest.approx(1 / 3)  # only bob's spans are exactly those
    assert json.loads(got["t0"]["answers"])[1] == {"annotator": "bob", "label": [ada, london]}
    # Two answers: a span needs both; the consensus of [x] and [] is [], agreement 1/2.
    assert (json.loads(got["t1"]["label"]), got["t1"]["agreement"]) == ([], 0.5)


def test_a_reviewed_label_is_never_overwritten_by_the_majority(project):
    e = make_engine(project)
    e.label("ann", "w0", "cat")
    e.label("bob", "w0", "dog")
    out = e.ctx.write(lambda conn: consensus.record_review(
        e.ctx, conn, "w0", "bird", "rev", "both wrong"))
    assert (out["label"], out["source"], out["reviewer"], out["agreement"]) == \
        ("bird", "reviewed", "rev", 0.0)
    e.label("cyd", "w0", "dog")  # a majority for dog now: the reviewer's label stays
    e.label("ann", "w0", "bird")
    w0 = rows(project)["w0"]
    assert (w0["label"], w0["source"], w0["reviewer"], w0["comment"]) == \
        ("bird", "reviewed", "rev", "both wrong")
    assert w0["n_answers"] == 3 and w0["agreement"] == pytest.approx(1 / 3)
    assert [a["label"] for a in json.loads(w0["answers"])] == ["bird", "dog", "dog"]
    with e.engine.connect() as conn:
        state = consensus.read(e.ctx, conn, ["w0"])["w0"]
    assert (state.label, state.source) == ("bird", "reviewed")


def test_a_rewritten_consensus_dataset_gets_its_rows_updated_not_doubled(project):
    e = make_engine(project)
    e.label("ann", "w0", "cat")
    e.label("ann", "w1", "dog")
    ds = project.dataset("consensus")
    ds.write(ds.read().iloc[::-1])  # rewritten (row keys renumbered) by someone else
    e.label("bob", "w0", "cat")
    got = rows(project)
    assert (len(got), got["w0"]["n_answers"], got["w1"]["n_answers"]) == (2, 2, 1)


def test_without_a_consensus_dataset_nothing_is_kept(project):
    e = make_engine(project, consensus_ds=None)
    e.label("ann", "w0", "cat")
    assert not project.dataset("consensus", create=True).exists()
    with e.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            consensus.consensus_table)).scalar_one() == 0


def test_combine_is_the_same_for_any_order_of_equal_counts():
    kind = ChoiceKind(EngineConfig(
        webapp="w", data_type="tabular", unlabeled="p", categories=CATS, labels_ds="l",
        metadata_ds="m"))
    assert consensus.combine(kind, ["dog", "cat", "cat", "dog"]) == ("dog", 0.5)
    assert consensus.combine(kind, ["cat", "dog", "cat"]) == ("cat", pytest.approx(2 / 3))
    assert consensus.combine(kind, ["cat"]) == ("cat", 1.0)


def test_overlap_answers_make_the_consensus_and_a_changed_one_updates_it(project):
    e = make_engine(project, labels_per_annotator=False, annotators_per_item=2)
    e.label("ann", "w0", "cat")
    assert (rows(project)["w0"]["label"], rows(project)["w0"]["n_answers"]) == ("cat", 1)
    e.label("bob", "w0", "dog")
    w0 = rows(project)["w0"]
    assert (w0["label"], w0["agreement"], w0["n_answers"]) == ("cat", 0.5, 2)
    assert [a["annotator"] for a in json.loads(w0["answers"])] == ["ann", "bob"]
    e.label("ann", "w0", "dog")  # ann changes her answer: both say dog now
    w0 = rows(project)["w0"]
    assert (w0["label"], w0["agreement"], w0["n_answers"]) == ("dog", 1.0, 2)
    assert project.dataset("consensus").count() == 1
