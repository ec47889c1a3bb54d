"""Agreement between annotators (`GET agreement`, labeling.quality.agreement): small tables
checked by hand, the route over a real engine, who sees what, and span F1."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labeling.api import build_routes
from labeling.engine import LabelingEngine
from labeling.quality.agreement import agreement, choice_agreement, spans_agreement
from labeling.settings import parse_settings
from labelloop.project import Project
from labelloop.web.auth import add_token

CATS = {"cat": None, "dog": None, "bird": None}
# Two annotators x six items (hand-checked below).
ALICE = ["cat", "cat", "dog", "dog", "cat", "bird"]
BOB = ["cat", "dog", "dog", "dog", "cat", "cat"]


def table(**columns: list[str | None]) -> dict:
    """`{item: {annotator: label}}` from one list per annotator (None: no answer)."""
    n = len(next(iter(columns.values())))
    return {f"i{k}": {a: v[k] for a, v in columns.items() if v[k] is not None}
            for k in range(n)}


def test_two_annotators_six_items_by_hand():
    out = choice_agreement(table(alice=ALICE, bob=BOB), list(CATS))
    assert out["items"] == 6 and out["annotators"] == 2
    # Cohen: observed p_o = 4/6 (items 1, 3, 4, 5 agree). Marginals alice cat 3 dog 2 bird 1,
    # bob cat 3 dog 3 bird 0: p_e = (3*3 + 2*3 + 1*0) / 36 = 15/36.
    # kappa = (24/36 - 15/36) / (1 - 15/36) = 9/21 = 3/7.
    [pair] = out["pairwise"]
    assert (pair["a"], pair["b"], pair["n"]) == ("alice", "bob", 6)
    assert pair["cohen_kappa"] == pytest.approx(3 / 7)
    assert pair["agreement"] == pytest.approx(4 / 6)
    # Krippendorff (nominal): coincidences o_cc = 4, o_dd = 4, o_cd = o_dc = 1,
    # o_cb = o_bc = 1; n_cat = 6, n_dog = 5, n_bird = 1, n = 12.
    # D_o = 4/12; D_e = 2 * (6*5 + 6*1 + 5*1) / (12*11) = 82/132;
    # alpha = 1 - (4/12) / (82/132) = 1 - 528/984 = 19/41.
    assert out["krippendorff_alpha"] == pytest.approx(19 / 41)
    # Fleiss (2 answers per item): P_i = 1, 0, 1, 1, 1, 0 -> P = 2/3; p_cat = 6/12,
    # p_dog = 5/12, p_bird = 1/12 -> P_e = (36 + 25 + 1) / 144 = 62/144;
    # kappa = (96/144 - 62/144) / (82/144) = 34/82 = 17/41.
    assert out["fleiss_kappa"] == pytest.approx(17 / 41)
    assert out["reasons"] == {}
    # Each one's "others" is the other annotator: agreement 4/6, quality = Cohen's 3/7.
    for row in out["per_annotator"]:
        assert row["n"] == row["compared"] == 6
        assert row["agreement"] == pytest.approx(4 / 6)
        assert row["quality"] == pytest.approx(3 / 7)
    # Pairs: (cat,cat) (cat,dog) (dog,dog) (dog,dog) (cat,cat) (bird,cat).
    by = {r["category"]: r for r in out["per_category"]}
    assert (by["cat"]["answers"], by["cat"]["pairs"], by["cat"]["confused"]) == (6, 4, 2)
    assert by["cat"]["confused_with"] == [{"category": "bird", "n": 1},
                                          {"category": "dog", "n": 1}]
    assert (by["dog"]["answers"], by["dog"]["pairs"], by["dog"]["confused"]) == (5, 3, 1)
    assert by["bird"]["confusion_rate"] == 1.0
    assert out["confusion"] == {"categories": ["cat", "dog", "bird"],
                                "counts": [[4, 1, 1], [1, 4, 0], [1, 0, 0]]}


def test_fleiss_table_of_three_annotators_and_the_majority_of_the_others():
    # x, y, z on four items: (a,a,a) (a,a,b) (b,b,b) (a,b,b).
    answers = table(x=["a", "a", "b", "a"], y=["a", "a", "b", "b"], z=["a", "b", "b", "b"])
    out = choice_agreement(answers, ["a", "b"])
    # P_i = 1, (4+1-3)/6 = 1/3, 1, 1/3 -> P = 2/3; p_a = p_b = 6/12 -> P_e = 1/2;
    # kappa = (2/3 - 1/2) / (1/2) = 1/3.
    assert out["fleiss_kappa"] == pytest.approx(1 / 3)
    rows = {r["annotator"]: r for r in out["per_annotator"]}
    # z vs the majority of x and y: a=a, b!=a, b=b, and item 4 (x=a, y=b) ties: left out.
    assert (rows["z"]["n"], rows["z"]["compared"]) == (4, 3)
    assert rows["z"]["agreement"] == pytest.approx(2 / 3)
    assert rows["x"]["agreement"] == pytest.approx(2 / 3)  # item 2 (y=a, z=b) ties
    assert [(p["a"], p["b"], p["n"]) for p in out["pairwise"]] == [
        ("x", "y", 4), ("x", "z", 4), ("y", "z", 4)]

    # An item with two answers among items with three: no Fleiss' kappa, and why.
    answers["i4"] = {"x": "a", "y": "b"}
    out = choice_agreement(answers, ["a", "b"])
    assert out["fleiss_kappa"] is None
    assert out["reasons"]["fleiss_kappa"].startswith("items have between 2 and 3 answers")
    assert out["krippendorff_alpha"] is not None and out["items"] == 5


def test_undefined_statistics_are_null_with_a_reason():
    out = choice_agreement(table(a=["cat", "cat"], b=["cat", "cat"]), list(CATS))
    assert out["krippendorff_alpha"] is None and out["fleiss_kappa"] is None
    assert "without variation" in out["reasons"]["krippendorff_alpha"]
    assert out["pairwise"][0]["cohen_kappa"] is None
    assert out["pairwise"][0]["agreement"] == 1.0
    empty = choice_agreement({"i0": {"a": "cat"}}, list(CATS))  # one answer: not counted
    assert empty["items"] == 0 and empty["pairwise"] == [] and empty["per_annotator"] == []
    assert empty["reasons"]["fleiss_kappa"] == "no item has two answers yet"


# ---- over a real engine: answers per annotator in lb_annotations -------------------------
@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    rng = np.random.default_rng(0)
    p.dataset("pool", create=True).write(pd.DataFrame({"num": np.arange(10),
                                                       "x": rng.random(10)}))
    return p


def engine_of(project, data_type="tabular", kind="choice", **settings) -> LabelingEngine:
    config = {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
              "labels_per_annotator": True, "max_reserved": 100, **settings}
    cfg = parse_settings(config, data_type, "w", project, kind=kind)
    return LabelingEngine(project, cfg, check_interval=0, background=False)


def test_the_route_reads_every_annotators_answers_and_admins_see_everyone(project):
    engine = engine_of(project, categories=CATS)
    items = [i["id"] for i in engine.batch("alice", 10)["items"]]
    assert [i["id"] for i in engine.batch("bob", 10)["items"]] == items
    for item, a, b in zip(items[:6], ALICE, BOB, strict=True):
        engine.label("alice", item, a)
        engine.label("bob", item, b)
    engine.label("carol", items[0], "cat")  # a third answer on one item
    engine.label("alice", items[7], "dog")  # one answer: not counted
    engine.skip("bob", items[7])
    route = build_routes(engine)[("GET", "agreement")]["handler"]

    # Without tokens everyone is admin and sees every annotator.
    out = route({}, "anyone")
    assert (out["role"], out["scope"], out["kind"], out["items"]) == ("admin", "all", "choice", 6)
    assert [(p["a"], p["b"], p["n"]) for p in out["pairwise"]] == [
        ("alice", "bob", 6), ("alice", "carol", 1), ("bob", "carol", 1)]
    ab = out["pairwise"][0]
    assert ab["cohen_kappa"] == pytest.approx(3 / 7)  # the hand-checked table above
    assert out["fleiss_kappa"] is None  # one item has three answers
    assert [r["annotator"] for r in out["per_annotator"]] == ["alice", "bob", "carol"]
    json.dumps(out, allow_nan=False)  # what the host sends: no NaN anywhere

    # With tokens: an annotator sees the overall figures, their row and their pairs only.
    add_token(project, "alice")
    add_token(project, "boss", role="admin")
    mine = agreement(engine, "alice")
    assert (mine["role"], mine["scope"]) == ("annotator", "own")
    assert [r["annotator"] for r in mine["per_annotator"]] == ["alice"]
    assert all("alice" in (p["a"], p["b"]) for p in mine["pairwise"])
    assert len(mine["pairwise"]) == 2 and "your own figures" in mine["note"]
    assert mine["krippendorff_alpha"] == out["krippendorff_alpha"]
    assert mine["confusion"] == out["confusion"]
    everyone = agreement(engine, "boss")
    assert everyone["scope"] == "all" and everyone["per_annotator"] == out["per_annotator"]


def test_multi_label_sets_are_one_nominal_value(project):
    engine = engine_of(project, categories=CATS, multi_label=True)
    items = [i["id"] for i in engine.batch("alice", 3)["items"]]
    for item, a, b in zip(items, [["dog", "cat"], ["cat"], []], [["cat", "dog"], ["dog"], []],
                             strict=True):
        engine.label("alice", item, a)
        engine.label("bob", item, b)
    out = agreement(engine, "alice")
    assert out["pairwise"][0]["agreement"] == pytest.approx(2 / 3)  # same set twice
    assert out["confusion"]["categories"] == ["cat", "dog", "bird", "(none)", "cat+dog"]
    by = {r["category"]: r for r in out["per_category"]}
    assert by["cat"]["confused_with"] == [{"category": "dog", "n": 1}]
    assert by["cat+dog"]["confused"] == 0 and by["(none)"]["answers"] == 2


def test_span_answers_agree_by_span_level_f1(project):
    texts = ["Ada met Bob in Rome.", "Acme hired Zoe.", "Nothing here."]
    project.dataset("texts", create=True).write(pd.DataFrame({"text": texts}))
    engine = engine_of(project, "text", "spans", unlabeled="texts", text_column="text",
                       entity_types={"PER": None, "ORG": None, "LOC": None})
    items = {i["data"]["text"]: i["id"] for i in engine.batch("ann", 3)["items"]}
    one, two, three = (items[t] for t in texts)
    engine.label("ann", one, [{"start": 0, "end": 3, "label": "PER"},
                              {"start": 8, "end": 11, "label": "PER"},
                              {"start": 15, "end": 19, "label": "LOC"}])
    engine.label("ben", one, [{"start": 0, "end": 3, "label": "PER"},
                              {"start": 8, "end": 11, "label": "ORG"}])
    engine.label("ann", two, [{"start": 0, "end": 4, "label": "ORG"}])
    engine.label("ben", two, [{"start": 0, "end": 4, "label": "ORG"},
                              {"start": 11, "end": 14, "label": "PER"}])
    engine.label("ann", three, [])
    engine.label("ben", three, [])
    out = agreement(engine, "ann")
    # Matched spans (start, end, label): (0,3,PER) and (0,4,ORG) = 2; spans: ann 3 + 1 + 0,
    # ben 2 + 2 + 0 = 8. F1 = 2 * 2 / 8 = 0.5.
    [pair] = out["pairwise"]
    assert (pair["a"], pair["b"], pair["n"], pair["f1"]) == ("ann", "ben", 3, 0.5)
    assert out["krippendorff_alpha"] is None and out["fleiss_kappa"] is None
    assert "span-level F1" in out["reasons"]["krippendorff_alpha"]
    assert [r["quality"] for r in out["per_annotator"]] == [0.5, 0.5]
    # By offsets: (PER,PER) (PER,ORG) (LOC,none) on item one; (ORG,ORG) (none,PER) on two.
    cats = out["confusion"]["categories"]
    assert cats == ["PER", "ORG", "LOC", "(none)"]
    counts = {(cats[i], cats[j]): n for i, row in enumerate(out["confusion"]["counts"])
              for j, n in enumerate(row) if n}
    assert counts == {("PER", "PER"): 2, ("PER", "ORG"): 1, ("ORG", "PER"): 1,
                      ("LOC", "(none)"): 1, ("(none)", "LOC"): 1, ("ORG", "ORG"): 2,
                      ("(none)", "PER"): 1, ("PER", "(none)"): 1}
    by = {r["category"]: r for r in out["per_category"]}
    assert "(none)" not in by
    assert by["PER"]["confused_with"] == [{"category": "(none)", "n": 1},
                                          {"category": "ORG", "n": 1}]


def test_spans_f1_by_hand_on_a_table():
    def s(*spans):
        return json.dumps([{"start": a, "end": b, "label": t} for a, b, t in spans])

    answers = {"t1": {"a": s((0, 5, "PER"), (10, 15, "ORG")), "b": s((0, 5, "PER"),
                                                                      (10, 15, "LOC"))},
               "t2": {"a": s(), "b": s((3, 7, "PER"))},
               "t3": {"a": s(), "b": s()}}
    out = spans_agreement(answers, ["PER", "ORG", "LOC"])
    # matched 1 (0,5,PER); spans 2 + 2 + 0 + 1 = 5 -> F1 = 2/5.
    assert out["pairwise"][0]["f1"] == pytest.approx(0.4)
    assert spans_agreement({"t3": answers["t3"]})["pairwise"][0]["f1"] == 1.0  # none, none
