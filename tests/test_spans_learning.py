"""Span learning: tokens and BIO tags, the span tagger and its saved form, the Train span
tagger recipe, the Query Sampler on a span model, the loop's trigger and metrics step, and
the spans demo's project (its data and recipes; its webapp comes with the spans kind)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pycrfsuite
import pytest

from labeling import demo, demo_data, stopping
from labeling.kinds.spans import SpansKind
from labeling.spans import sampling
from labeling.spans.demo_data import ENTITY_TYPES, generate
from labeling.spans.sampling import score_texts, span_strategies
from labeling.spans.tagger import SpanTagger, Vocabulary, feature_ids
from labeling.spans.tokens import (
    dumps_spans,
    parse_spans,
    spans_to_tags,
    tags_to_spans,
    tokenize,
)
from labeling.spans.training import bio_tags, train_span_tagger
from labeling.training import TRUSTED_TYPES
from labelloop import flow, scenarios
from labelloop.errors import LabelloopError, UntrustedModelError
from labelloop.project import Project
from labelloop.project.models import load_skops


def spans_of(text: str, marks: list[tuple[str, str]]) -> list[dict]:
    out, pos = [], 0
    for words, label in marks:
        start = text.index(words, pos)
        out.append({"start": start, "end": start + len(words), "label": label})
        pos = start + len(words)
    return out


# --------------------------------------------------------------------------- tokens


def test_spans_and_bio_tags_round_trip_at_character_offsets():
    text = "Dr. Ada Lovelace met Charles Babbage in London, 1833."
    spans = spans_of(text, [("Ada Lovelace", "PER"), ("Charles Babbage", "PER"),
                            ("London", "LOC"), ("1833", "DATE")])
    tokens = tokenize(text)
    assert [text[s:e] for s, e in zip(tokens.starts, tokens.ends, strict=True)] == tokens.words
    tags, dropped = spans_to_tags(tokens, spans)
    assert dropped == 0
    assert tags == ["O", "O", "B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-LOC", "O",
                    "B-DATE", "O"]
    assert tags_to_spans(tokens, tags) == spans
    # a span cut inside a word snaps out to the word; an overlapping span is left out
    tags, dropped = spans_to_tags(tokens, [{"start": 5, "end": 9, "label": "PER"},
                                           {"start": 8, "end": 16, "label": "ORG"}])
    assert dropped == 1 and tags[2:4] == ["B-PER", "I-PER"]
    # an I- that does not continue its type starts a span (seqeval's default reading)
    assert tags_to_spans(tokens, ["I-LOC", "I-PER"] + ["O"] * 10) == [
        {"start": 0, "end": 2, "label": "LOC"}, {"start": 2, "end": 3, "label": "PER"}]


def test_label_cells_parse_with_clear_errors():
    assert parse_spans('[{"start": 4, "end": 6, "label": "B"}, {"start": 0, "end": 2, '
                       '"label": "A"}]', "abcdefgh") == [
        {"start": 0, "end": 2, "label": "A"}, {"start": 4, "end": 6, "label": "B"}]
    assert parse_spans("[]", "text") == []
    assert dumps_spans([{"start": 3, "end": 5, "label": "X"}, {"start": 0, "end": 1,
                                                                "label": "Y"}]) == \
        '[{"start":0,"end":1,"label":"Y"},{"start":3,"end":5,"label":"X"}]'
    for cell, words in [("nope", "not a JSON list"), ('{"a": 1}', "expected a list"),
                        ('[{"start": 0}]', "needs start, end and label"),
                        ('[{"start": 3, "end": 99, "label": "A"}]', "bad offsets"),
                        ('[{"start": 3, "end": 3, "label": "A"}]', "bad offsets")]:
        with pytest.raises(LabelloopError, match=words):
            parse_spans(cell, "short text", where="row 7")


# --------------------------------------------------------------------------- the tagger


def demo_examples(n: int, seed: int = 0):
    texts, spans = generate(n, seed)
    tags, _ = bio_tags(texts, spans)
    return texts, spans, tags


def test_crf_marginals_and_path_equal_crfsuites_own(tmp_path):
    texts, _, tags = demo_examples(80)
    model = SpanTagger("crf").fit(texts, tags, list(ENTITY_TYPES))
    # the same training data through CRFsuite directly
    vocab = Vocabulary()
    sentences = [tokenize(t) for t in texts]
    ids = feature_ids(sentences, vocab, grow=True)
    names = np.asarray(vocab.names, dtype=object)
    trainer = pycrfsuite.Trainer(verbose=False)
    start = 0
    for tokens, t in zip(sentences, tags, strict=True):
        rows = ids[start:start + len(tokens)]
        start += len(tokens)
        trainer.append([list(names[r[r >= 0]]) for r in rows], t)
    trainer.set_params({"c1": model.c1, "c2": model.c2, "max_iterations": model.max_iterations,
                        "feature.possible_transitions": True})
    trainer.train(str(tmp_path / "m.crfsuite"))
    crf = pycrfsuite.Tagger()
    crf.open(str(tmp_path / "m.crfsuite"))
    new = ["Jordan Smith flew from Jordan to Oslo on May 3.", "Prices went up.", ""]
    analysis = model.analyse(new)
    for tokens, marg, path in analysis.per_text():
        x = [list(names[r[r >= 0]]) for r in feature_ids([tokens], vocab)]
        assert [model.tags[i] for i in path] == (crf.tag(x) if x else [])
        crf.set(x)
        for t in range(len(tokens)):
            for y in crf.labels():
                assert marg[t, model.tags.index(y)] == pytest.approx(crf.marginal(y, t),
                                                                     abs=1e-6)
    assert analysis.lengths.tolist()[-1] == 0


@pytest.mark.parametrize("family", ["crf", "logreg"])
def test_saved_tagger_loads_only_through_the_trusted_types_check(make_project, family):
    texts, _, tags = demo_examples(60)
    model = SpanTagger(family).fit(texts, tags, list(ENTITY_TYPES))
    project = make_project()
    version = project.model("tagger", create=True).save(model, {"kind": "spans"})
    path = project.dir / project.model("tagger").metadata(version)["file"]
    with pytest.raises(UntrustedModelError, match="labeling.spans.tagger.SpanTagger"):
        load_skops(path)
    loaded = project.model("tagger").load(version, trusted=TRUSTED_TYPES)
    probe = ["Alice Smith joined Globex in Lima on Friday.", "Nobody came."]
    assert loaded.predict(probe) == model.predict(probe)
    assert loaded.predict(probe)[0][0]["label"] == "PERSON"


# --------------------------------------------------------------------------- strategies


def test_sequence_uncertainties_are_normalised_for_length():
    tagger = SpanTagger("logreg")
    texts, _, tags = demo_examples(40)
    tagger.fit(texts, tags, list(ENTITY_TYPES))
    analysis = tagger.analyse(["Alice Smith met Bruno.", "The new bridge is longer."])
    registry = span_strategies()
    m = analysis.marginals
    first, second = m[:analysis.lengths[0]], m[analysis.lengths[0]:]
    for name, expected in [
        ("confidence", [1 - first.max(1).min(), 1 - second.max(1).min()]),
        ("entropy", [(-(p * np.log(p)).sum(1)).mean() for p in (first, second)]),
        ("margin", [1 - (np.sort(p, 1)[:, -1] - np.sort(p, 1)[:, -2]).min()
                    for p in (first, second)]),
        ("sequence_confidence", [1 - np.exp(np.log(p.max(1)).mean())
                                 for p in (first, second)]),
    ]:
        assert registry.get(name).func(analysis) == pytest.approx(expected), name
    # the per-token strategies reduce their tokens' uncertainties with the spans kind's item
    # score: a kind scoring by the mean token would rank by the mean
    assert sampling.SPANS_KIND.item_score([0.2, 0.9]) == 0.9

    class MeanTokenKind(SpansKind):
        def item_score(self, uncertainties):
            return float(np.mean(uncertainties))

    saved = sampling.SPANS_KIND
    try:
        sampling.SPANS_KIND = MeanTokenKind(None)
        assert registry.get("confidence").func(analysis) == pytest.approx(
            [1 - p.max(1).mean() for p in (first, second)])
    finally:
        sampling.SPANS_KIND = saved
    # a text repeated 4 times scores about as itself (a sum over tokens would be 4 times)
    one = "Alice Smith met Bruno in Lima."
    for name in ("entropy", "sequence_confidence", "confidence"):
        scores = score_texts(tagger, [one, " ".join([one] * 4)], name)["uncertainty"]
        assert scores[1] < 1.5 * scores[0], name
    scores = score_texts(tagger, [one, ""], "confidence")
    assert scores["uncertainty"][1] == 0.0 and scores["prediction"][1] == "[]"


# --------------------------------------------------------------------------- the recipes


def spans_project(make_project):
    data = demo_data.spans_data(n=160, seed=3)
    config = demo.spans_config(data, n=20)
    config.pop("webapps")  # the text-spans webapp is not part of this test
    project = make_project(config=config)
    project.dataset("unlabeled").write(data.rows)
    return project, data


def record_labels(project: Project, data, ids: list[str], session: int = 0) -> None:
    """Labels and metadata rows as the spans webapp writes them (one label each)."""
    truth = dict(zip(data.truth["id"], data.truth["label"], strict=True))
    rows = data.rows.set_index("data_id").loc[ids].reset_index()
    labels = project.dataset("labels")
    start = labels.count() if labels.exists() else 0
    rows["label"] = [truth[i] for i in ids]
    rows["label_id"] = np.arange(start, start + len(ids), dtype=np.int64)
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    meta = pd.DataFrame({"date": [now] * len(ids), "data_id": ids, "comment": [None] * len(ids),
                         "session": [session] * len(ids), "status": ["LABELED"] * len(ids),
                         "annotator": ["ann"] * len(ids), "label": rows["label"],
                         "label_id": rows["label_id"]})
    if labels.exists():
        labels.append(rows)
        project.dataset("metadata").append(meta)
    else:
        labels.write(rows)
        project.dataset("metadata").write(meta)


def test_train_span_tagger_records_per_type_scores_and_kind(make_project, run_cli):
    project, data = spans_project(make_project)
    record_labels(project, data, data.rows["data_id"].tolist()[:60])
    out = run_cli(project.dir, "recipe", "run", "train")
    assert "SUCCESS" in out.stdout
    meta = project.model("tagger").metadata()
    assert meta["kind"] == "spans" and meta["classes"] == sorted(ENTITY_TYPES)
    assert meta["text_column"] == "text" and meta["rows"] == meta["train_rows"] == 60
    metrics = meta["metrics"]
    assert metrics["cv"] == "5-fold" and 0.5 < metrics["f1"] <= 1.0
    assert set(metrics["per_type"]) == set(ENTITY_TYPES)
    for scores in metrics["per_type"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
        assert scores["support"] > 0 and 0.0 <= scores["f1"] <= 1.0
    # seqeval's micro average over the types' own counts
    tp = sum(s["recall"] * s["support"] for s in metrics["per_type"].values())
    assert metrics["recall"] == pytest.approx(tp / sum(s["support"] for s in
                                                       metrics["per_type"].values()))


def test_train_span_tagger_refuses_bad_labels(make_project):
    df = pd.DataFrame({"text": ["Alice went home.", "Bob stayed."],
                       "label": ['[{"start": 0, "end": 5, "label": "PER"}]',
                                 '[{"start": 0, "end": 50, "label": "PER"}]']})
    with pytest.raises(LabelloopError, match="labels row 2: span 1 has bad offsets"):
        train_span_tagger(df)
    with pytest.raises(LabelloopError, match="no span at all"):
        train_span_tagger(df.assign(label="[]"))
    with pytest.raises(LabelloopError, match="unknown span model 'bert'"):
        train_span_tagger(df, algorithm="bert")
    with pytest.raises(LabelloopError, match="no column 'body'"):
        train_span_tagger(df, text_column="body")
    # skipped rows and empty labels are left out; `[]` is an answer ("no entities")
    df = pd.DataFrame({"text": ["Alice went home.", "Nothing here.", "Bob left."],
                       "label": ['[{"start": 0, "end": 5, "label": "PER"}]', "[]", None]})
    result = train_span_tagger(df)
    assert result.n_rows == 2 and result.metrics["cv"].startswith("skipped")


def test_query_sampler_ranks_texts_and_writes_span_predictions(make_project):
    project, data = spans_project(make_project)
    labeled = data.rows["data_id"].tolist()[:40]
    record_labels(project, data, labeled)
    flow.run_recipe(project, "train", show_progress=False)
    flow.run_recipe(project, "sample", show_progress=False)
    queries = project.dataset("queries").read()
    assert list(queries.columns) == ["data_id", "text", "uncertainty", "prediction",
                                     "confidence", "model_version", "query_rank"]
    assert set(queries["data_id"]) == set(data.rows["data_id"]) - set(labeled)
    assert queries["uncertainty"].is_monotonic_decreasing
    assert queries["query_rank"].tolist() == list(range(len(queries)))
    assert set(queries["model_version"]) == {"1"}
    assert queries["confidence"].between(0, 1).all()
    truth = dict(zip(data.truth["id"], data.truth["label"], strict=True))
    right = []
    for text, pred, item in zip(queries["text"], queries["prediction"], queries["data_id"],
                                strict=True):
        spans = json.loads(pred)
        for s in spans:
            assert set(s) == {"start", "end", "label", "score"} and 0 < s["score"] <= 1
            assert 0 <= s["start"] < s["end"] <= len(text) and s["label"] in ENTITY_TYPES
        right.append([{k: s[k] for k in ("start", "end", "label")} for s in spans] ==
                     json.loads(truth[item]))
    right = np.asarray(right)
    assert right.mean() > 0.3  # the tagger learned something from 40 sentences
    # and knows where it is unsure: its confident half is right more often
    half = len(right) // 2
    assert right[half:].mean() > right[:half].mean() + 0.2
    # the same ranking whatever the chunk size (streamed, small chunks)
    project.config["recipes"]["sample"]["params"].update(chunk_size=100, strategy="entropy")
    project.save_config()
    flow.run_recipe(project, "sample", show_progress=False)
    small = project.dataset("queries").read()
    project.config["recipes"]["sample"]["params"]["chunk_size"] = 50000
    project.save_config()
    flow.run_recipe(project, "sample", show_progress=False)
    pd.testing.assert_frame_equal(small, project.dataset("queries").read())
    # max_queries keeps the best ones only, in the same order
    project.config["recipes"]["sample"]["params"]["max_queries"] = 7
    project.save_config()
    flow.run_recipe(project, "sample", show_progress=False)
    top = project.dataset("queries").read()
    assert top["data_id"].tolist() == small["data_id"].tolist()[:7]


def test_query_sampler_refuses_what_a_span_model_cannot_score(make_project):
    project, data = spans_project(make_project)
    record_labels(project, data, data.rows["data_id"].tolist()[:20])
    flow.run_recipe(project, "train", show_progress=False)
    params = project.config["recipes"]["sample"]["params"]
    for change, words in [({"strategy": "diverse_margin"},
                           "unknown query strategy 'diverse_margin'; known strategies: "
                           "confidence, margin, entropy, sequence_confidence, random"),
                          ({"engine": "dask"}, "span models are scored by the local engine")]:
        saved = dict(params)
        params.update(change)
        project.save_config()
        if change.get("engine") == "dask":
            pytest.importorskip("dask")
        with pytest.raises(LabelloopError, match=words):
            flow.run_recipe(project, "sample", show_progress=False)
        params.clear()
        params.update(saved)
    project.dataset("unlabeled").write(data.rows.rename(columns={"text": "body"}))
    with pytest.raises(LabelloopError, match="the pool has no column 'text'"):
        flow.run_recipe(project, "sample", show_progress=False)
    assert not project.dataset("queries").exists()


def test_every_n_loop_trains_samples_and_records_span_f1(make_project):
    project, data = spans_project(make_project)
    ids = data.rows["data_id"].tolist()
    record_labels(project, data, ids[:21])
    name = demo.SCENARIO
    assert scenarios.check_triggers(project, name) is not None
    run = scenarios.run_scenario(project, name)
    assert run["status"] == "SUCCESS", run["error"]
    assert project.variables.get("queries_session") == 1
    assert scenarios.check_triggers(project, name) is None
    record_labels(project, data, ids[21:45], session=1)
    assert scenarios.check_triggers(project, name) is not None
    run = scenarios.run_scenario(project, name)
    assert run["status"] == "SUCCESS", run["error"]
    metrics = project.dataset("metrics").read()
    assert metrics["labels"].tolist() == [21, 45]
    assert metrics["model_version"].tolist() == [1, 2]
    assert metrics["auc"].isna().all()
    versions = project.model("tagger").versions()
    assert metrics["f1"].tolist() == pytest.approx([v["metrics"]["f1"] for v in versions])
    assert pd.isna(metrics["contradictions"].iloc[0])
    assert 0.0 <= metrics["contradictions"].iloc[1] <= 1.0


def test_stall_watches_span_f1_where_there_is_no_auc():
    flat = {"auc": [None] * 3, "f1": [0.951, 0.955, 0.953], "contradictions": [0.03, 0.031, 0.03]}
    assert stopping.stall(flat) == pytest.approx({"auc": 0.004, "contradictions": 0.001})
    assert "entity F1" in stopping.warnings_from_history(flat)[0]
    assert stopping.stall({**flat, "f1": [0.80, 0.90, 0.95]}) is None
    # a classifier's AUC is what counts when there is one
    assert stopping.stall({**flat, "auc": [0.5, 0.7, 0.9]}) is None


def test_spans_demo_project_holds_pool_truth_and_loop(tmp_path):
    project = demo.create_demo(tmp_path / "spans", demo.SPANS, n=5, check=False)
    for name in project.config["recipes"]:
        flow.prepare(project, name)  # recipe params valid for their components
    (app,) = project.config["webapps"].values()
    assert app["type"] == "ml-assisted-labeling/text-spans-labeling"
    params = app["params"]
    assert params["entity_types"] == ENTITY_TYPES and params["overlapping_spans"] is False
    assert params["text_column"] == "text" and params["id_column"] == "data_id"
    truth = pd.read_csv(project.dir / demo.GROUND_TRUTH, dtype=str)
    pool = project.dataset("unlabeled").read()
    assert len(pool) == len(truth) == 400 and pool["data_id"].tolist() == truth["id"].tolist()
    types = set()
    for text, label in zip(pool["text"], truth["label"], strict=True):
        spans = parse_spans(label, text)
        types |= {s["label"] for s in spans}
        tokens = tokenize(text)
        tags, dropped = spans_to_tags(tokens, spans)
        assert dropped == 0 and tags_to_spans(tokens, tags) == spans  # on token boundaries
    assert types == set(ENTITY_TYPES)
    assert demo.demo_data_type(project) == demo.SPANS
    scenario = project.config["scenarios"][demo.SCENARIO]
    assert scenario["triggers"][0]["params"]["i_labeling_count"] == 5
