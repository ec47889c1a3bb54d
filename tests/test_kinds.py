"""Annotation kinds (labeling.kinds): the registry and its hook, the spans kind's checks and
suggestions, the settings a kind brings, and the engine over a kind in-process."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labeling.engine import LabelingEngine, session_variable
from labeling.kinds import AnnotationKind, Item, KindError, collect_kinds, kind_class
from labeling.kinds.choice import ChoiceKind
from labeling.kinds.spans import SpansKind
from labeling.settings import EngineConfig, parse_settings
from labelloop.errors import ConfigError, LabelloopError
from labelloop.hookspecs import hookimpl
from labelloop.plugins import PluginRegistry
from labelloop.project import Project

TEXT = "Ada Lovelace met Charles Babbage in London."


def spans_cfg(**extra) -> EngineConfig:
    return EngineConfig(webapp="w", data_type="text", unlabeled="pool",
                        categories={"PER": None, "LOC": None}, labels_ds="labels",
                        metadata_ds="metadata", kind="spans",
                        extra={"overlapping_spans": False, **extra})


def item(text: str = TEXT) -> Item:
    return Item("t0", {"text": text}, {"type": "text", "text": text})


def test_spans_kind_stores_sorted_json_and_refuses_bad_spans():
    kind = SpansKind(spans_cfg())
    stored = kind.check([{"start": 36, "end": 42, "label": "LOC"},
                         {"start": 0, "end": 12, "label": "PER"}], item())
    assert json.loads(stored) == [{"start": 0, "end": 12, "label": "PER"},
                                  {"start": 36, "end": 42, "label": "LOC"}]
    assert kind.check([], item()) == "[]"
    assert kind.count_keys(stored) == ["PER", "LOC"] and kind.value(stored)[1]["end"] == 42
    # Adjacent spans (end exclusive) do not overlap.
    assert kind.check([{"start": 0, "end": 3, "label": "PER"},
                       {"start": 3, "end": 12, "label": "PER"}], item())
    for bad, words in [
        ([{"start": 0, "end": 44, "label": "PER"}], "span 0 (start 0, end 44"),
        ([{"start": 0, "end": 3, "label": "PER"}, {"start": 2, "end": 5, "label": "LOC"}],
         "span 1 (start 2, end 5, label 'LOC') overlaps span 0"),
        ([{"start": 0, "end": 3, "label": "ORG"}], "unknown entity type 'ORG'"),
        ([{"start": "0", "end": 3, "label": "PER"}], "span 0"),
        ({"start": 0}, "spans must be a list"),
    ]:
        with pytest.raises(KindError, match=words.replace("(", r"\(").replace(")", r"\)")):
            kind.check(bad, item())
    nested = SpansKind(spans_cfg(overlapping_spans=True))
    assert len(json.loads(nested.check([{"start": 0, "end": 12, "label": "PER"},
                                        {"start": 4, "end": 12, "label": "PER"}], item()))) == 2


def test_spans_suggestion_keeps_the_well_formed_spans_of_known_types():
    kind = SpansKind(spans_cfg())
    pred = json.dumps([{"start": 36, "end": 42, "label": "LOC", "score": 0.5},
                       {"start": 0, "end": 12, "label": "PER", "score": 0.9},
                       {"start": 5, "end": 2, "label": "PER", "score": 0.9},
                       {"start": 0, "end": 3, "label": "ORG", "score": 0.9}])
    assert kind.suggestion(pred, 0.4, "7") == {"model_version": 7, "spans": [
        {"start": 0, "end": 12, "label": "PER", "score": 0.9},
        {"start": 36, "end": 42, "label": "LOC", "score": 0.5}]}
    assert kind.suggestion(None, None, None) is None
    assert kind.suggestion("not json", None, 1) is None
    assert kind.item_score([0.1, float("nan"), 0.7]) == 0.7 and kind.item_score([]) == 0.0


def test_choice_kind_is_the_classification_answer():
    cfg = EngineConfig(webapp="w", data_type="text", unlabeled="p",
                       categories={"cat": None, "dog": None}, labels_ds="l", metadata_ds="m")
    kind = ChoiceKind(cfg)
    assert kind.check("dog", None) == "dog" and kind.count_keys("dog") == ["dog"]
    assert kind.suggestion("cat", 0.8, "v1") == {"label": "cat", "confidence": 0.8,
                                                 "model_version": "v1"}
    assert kind.suggestion("fish", 0.8, None) is None
    with pytest.raises(KindError, match="label 'fish' is not a category"):
        kind.check("fish", None)


class _Stars(AnnotationKind):
    """One to five stars."""

    name = "stars"
    field = "stars"
    types_param = None
    min_types = 0

    def answer_schema(self) -> dict:
        return {"type": "integer"}

    def check(self, answer, item):
        if answer not in range(1, 6):
            raise KindError(f"stars must be 1 to 5, got {answer!r}")
        return str(answer)


class _StarsPlugin:
    @hookimpl
    def register_annotation_kinds(self, register):
        register("stars", _Stars, label="Stars")


def test_a_plugin_registers_a_kind_through_the_hook(tmp_path):
    registry = PluginRegistry(load_entry_points=False)
    registry.register_plugin("stars-plugin", _StarsPlugin())
    kinds = collect_kinds(registry.pm)
    assert set(kinds.names()) == {"choice", "spans", "boxes", "stars"}
    assert kinds.get("stars") is _Stars
    assert collect_kinds(None).names() == ["choice", "spans", "boxes"]
    with pytest.raises(LabelloopError, match="unknown annotation kind 'polygons'; known kinds"):
        kinds.get("polygons")
    with pytest.raises(LabelloopError, match="not a subclass"):
        kinds.register("bad", object)


def test_spans_settings(tmp_path):
    project = Project.init(tmp_path / "p")
    project.dataset("pool", create=True).write(pd.DataFrame({"text": [TEXT]}))
    base = {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata"}
    cfg = parse_settings({**base, "entity_types": {"PER": "a person"}}, "text", "w", project,
                         kind="spans")
    assert cfg.kind == "spans" and cfg.categories == {"PER": "a person"}
    assert cfg.extra == {"overlapping_spans": False} and cfg.text_column == "text"
    with pytest.raises(ConfigError, match="no entity types: add at least one"):
        parse_settings({**base, "categories": {"a": None, "b": None}}, "text", "w", project,
                       kind="spans")
    with pytest.raises(ConfigError, match="multi_label does not apply to spans"):
        parse_settings({**base, "entity_types": ["PER"], "multi_label": True}, "text", "w",
                       project, kind="spans")
    with pytest.raises(ConfigError, match="annotation kind 'spans' is for text items"):
        parse_settings({**base, "entity_types": ["PER"]}, "tabular", "w", project, kind="spans")
    assert kind_class("spans", project) is SpansKind  # through the project's plugins


def test_an_answer_never_switches_the_queue(tmp_path):
    """A label is recorded against the queue being served; following a new session is the
    batches' and the worker's job (before, the label switched queues in its own thread)."""
    project = Project.init(tmp_path / "p")
    pool = pd.DataFrame({"key": [f"k{i}" for i in range(10)], "text": [f"t {i}" for i in range(10)]})
    project.dataset("pool", create=True).write(pool)

    def queries(unc):
        q = pool.assign(uncertainty=unc).iloc[np.argsort(-np.asarray(unc), kind="stable")]
        project.dataset("queries", create=True).write(q)
        project.variables.incr(session_variable("queries"))

    queries(np.linspace(0, 1, 10))
    cfg = parse_settings({"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
                          "queries_ds": "queries", "id_column": "key",
                          "categories": {"a": None, "b": None}}, "text", "w", project)
    e = LabelingEngine(project, cfg, check_interval=0, background=False)
    assert [i["id"] for i in e.batch("u", 2)["items"]] == ["k9", "k8"]
    queries(np.linspace(1, 0, 10))  # session 2: the other way round
    e.label("u", "k9", "a")
    assert e.ctx.read_app().q_session == 1  # not switched by the answer
    assert project.dataset("metadata").read()["session"].tolist() == [1]
    assert e.batch("u", 2)["session"] == 2  # a batch follows the new session


def test_item_scores_is_item_score_over_many_items_at_once():
    values = np.array([0.1, np.nan, 0.7, 0.2, np.nan, 0.5, np.nan])
    lengths = np.array([3, 0, 1, 2, 1])
    spans = SpansKind(None)
    expected = [spans.item_score(p.tolist())
                for p in np.split(values, np.cumsum(lengths)[:-1])]
    assert expected == [0.7, 0.0, 0.2, 0.5, 0.0]
    assert spans.item_scores(values, lengths).tolist() == expected  # vectorised default

    class MeanKind(AnnotationKind):
        name = "mean"

        def item_score(self, uncertainties):
            return float(np.mean(uncertainties)) if len(uncertainties) else -1.0

    assert MeanKind(None).item_scores([0.2, 0.4, 0.9, 0.1, 0.3], [2, 0, 3]).tolist() == \
        pytest.approx([0.3, -1.0, float(np.mean([0.9, 0.1, 0.3]))])
