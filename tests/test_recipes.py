"""The Train classifier and Query Sampler recipes on real projects, for each data type.

Every test builds a project in tmp_path and runs the recipes through labelloop.flow (and
once through `labelloop recipe run`): models are real skops files, datasets real rows in
the project's SQLite database, images real PNGs, sounds real WAVs.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from labeling.publish import session_variable
from labeling.training import TRUSTED_TYPES
from labelloop.errors import ConfigError, LabelloopError
from labelloop.flow import effective_params, prepare, run_recipe

TRAIN = "ml-assisted-labeling/train-classifier"
SAMPLER = "ml-assisted-labeling/query-sampler"
SCORES = ["uncertainty", "prediction", "confidence"]


def flow_config(pool: str = "pool", folder: str | None = None, labels: str = "labels",
                train_params: dict | None = None, sample_params: dict | None = None) -> dict:
    """project.json for: labels -> train -> clf; clf + pool (+ labels) -> sample -> queries."""
    train_inputs = {"labels": [labels]}
    if folder:
        train_inputs["folder"] = [folder]
    config = {
        "datasets": {labels: {}, "queries": {}},
        "models": {"clf": {}},
        "recipes": {
            "train": {"type": TRAIN, "inputs": train_inputs, "outputs": {"model": ["clf"]},
                      "params": dict(train_params or {})},
            "sample": {"type": SAMPLER,
                       "inputs": {"saved_model": ["clf"], "unlabeled_samples": [folder or pool],
                                  "labels": [labels]},
                       "outputs": {"queries": ["queries"]},
                       "params": {"strategy": "margin", **(sample_params or {})}},
        },
    }
    if folder:
        config["folders"] = {folder: {"path": folder}}
    else:
        config["datasets"][pool] = {}
    return config


def set_params(project, recipe: str, **params) -> None:
    project.config["recipes"][recipe]["params"].update(params)


def session(project) -> int:
    return project.variables.get(session_variable("queries"), 0)


def check_ranked(queries: pd.DataFrame, item_columns: list[str], classes: list[str]) -> None:
    """The queries dataset's shape: item columns + scores, most uncertain first."""
    assert list(queries.columns) == item_columns + SCORES + ["model_version", "query_rank"]
    assert queries["query_rank"].tolist() == list(range(len(queries)))  # the serving order
    u = queries["uncertainty"].to_numpy()
    assert np.all(np.diff(u) <= 0), "not sorted most uncertain first"
    assert set(queries["prediction"]) <= set(classes)
    assert ((queries["confidence"] >= 1 / len(classes) - 1e-9)
            & (queries["confidence"] <= 1)).all()


def margin_of(proba: np.ndarray) -> np.ndarray:
    top = np.sort(proba, axis=1)
    return 1 - (top[:, -1] - top[:, -2])


# --------------------------------------------------------------------------- tabular


def tabular_pool(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).round(3)
    count = pd.array(rng.integers(0, 5, size=n), dtype="Int64")
    count[n - 7] = pd.NA  # missing only in the last chunk: int64 there, Int64 here
    return pd.DataFrame({"x": x, "y": rng.normal(size=n).round(3),
                         "color": rng.choice(["red", "green", "blue"], size=n),
                         "count": count})


def tabular_labels(pool: pd.DataFrame, rows: range | list[int]) -> pd.DataFrame:
    """Labels in the engine's form: the pool columns + label + label_id."""
    labels = pool.iloc[list(rows)].reset_index(drop=True)
    labels["label"] = np.where(labels["x"] + 0.3 * labels["y"] > 0, "pos", "neg")
    labels["label_id"] = np.arange(len(labels))
    return labels


def test_tabular_trains_and_ranks_the_unlabeled_rows(make_project):
    project = make_project(config=flow_config(sample_params={"chunk_size": 100}))
    pool = tabular_pool()
    project.dataset("pool").write(pool)
    labels = tabular_labels(pool, range(40))
    labels["status"] = "LABELED"  # the metadata-like column: SKIPPED rows don't count
    labels.loc[0, "status"] = "SKIPPED"
    labels.loc[1, "label"] = None
    labels.loc[2, "label"] = ""
    project.dataset("labels").write(labels)

    record = run_recipe(project, "train")
    meta = project.model("clf").metadata()
    assert record["status"] == "SUCCESS" and meta["version"] == 1
    assert meta["rows"] == meta["train_rows"] == 37
    assert meta["classes"] == ["neg", "pos"]
    assert meta["data_type"] == "tabular"
    assert set(meta["feature_columns"]) == {"x", "y", "color", "count"}
    assert meta["metrics"]["cv"] == "5-fold stratified"
    assert 0.7 <= meta["metrics"]["accuracy"] <= 1 and 0.7 <= meta["metrics"]["auc"] <= 1
    assert any("1 skipped" in n for n in meta["notes"])
    assert any("2 rows without a label" in n for n in meta["notes"])

    run = run_recipe(project, "sample")
    queries = project.dataset("queries").read()
    check_ranked(queries, list(pool.columns), ["neg", "pos"])
    # the 37 labeled rows are left out by content; skipped / empty ones stay in the pool
    assert len(queries) == 300 - 37 and run["details"]["excluded"] == 37
    key = ["x", "y", "color"]
    labeled = pool.iloc[3:40][key].apply(tuple, axis=1)
    assert not set(labeled) & set(queries[key].apply(tuple, axis=1))
    assert set(pool.iloc[:3][key].apply(tuple, axis=1)) <= set(queries[key].apply(tuple, axis=1))
    # column types survive: a bigint column with a missing value stays bigint
    assert {c["name"]: c["type"] for c in project.dataset("queries").schema}["count"] == "bigint"
    assert queries["count"].isna().sum() == 1
    # the scores are the model's: margin of its predict_proba on the queries' rows
    model = project.model("clf").load(trusted=TRUSTED_TYPES)
    proba = model.predict_proba(queries[list(pool.columns)])
    np.testing.assert_allclose(queries["uncertainty"], margin_of(proba), atol=1e-12)
    np.testing.assert_allclose(queries["confidence"], proba.max(axis=1), atol=1e-12)
    assert list(queries["prediction"]) == list(model.classes_[proba.argmax(axis=1)])
    assert session(project) == 1

    # a cap keeps the same head of the ranking (read in one pass instead of two)
    set_params(project, "sample", max_queries=25)
    run_recipe(project, "sample")
    top = project.dataset("queries").read()
    # (a column without missing values reads back as int64 instead of Int64)
    pd.testing.assert_frame_equal(top, queries.iloc[:25].reset_index(drop=True),
                                  check_dtype=False)
    assert session(project) == 2


# --------------------------------------------------------------------------- text

POSITIVE = ["what a lovely sunny day", "great food and friendly staff", "i love this bright song",
            "wonderful happy ending", "a cheerful warm welcome", "excellent service, great value",
            "such a joyful lovely party", "happy people and great music"]
NEGATIVE = ["a cold grey rainy night", "terrible food and rude staff", "i hate this noisy song",
            "an awful sad ending", "a gloomy unfriendly place", "poor service, awful value",
            "such a dull boring party", "sad people and bad music"]


def text_pool() -> pd.DataFrame:
    texts = POSITIVE + NEGATIVE + [f"{p} but {n}" for p, n in zip(POSITIVE, NEGATIVE, strict=True)]
    return pd.DataFrame({"doc_id": [f"d{i:03d}" for i in range(len(texts))], "text": texts})


def test_text_ranks_by_id_column_through_the_cli(make_project, run_cli):
    project = make_project(config=flow_config(train_params={"data_type": "text"},
                                              sample_params={"id_column": "doc_id"}))
    pool = text_pool()
    project.dataset("pool").write(pool)
    labeled = [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
    labels = pool.iloc[labeled].reset_index(drop=True)
    labels["label"] = ["pos"] * 5 + ["neg"] * 5
    labels["label_id"] = range(len(labels))
    # edited after labeling: matched by its id, not by its content
    labels.loc[0, "text"] = "what a lovely sunny day!!"
    project.dataset("labels").write(labels)

    assert "SUCCESS" in run_cli(project.dir, "recipe", "run", "train").stdout
    meta = project.model("clf").metadata()
    assert meta["data_type"] == "text" and meta["feature_columns"] == ["text"]
    assert meta["rows"] == 10 and meta["classes"] == ["neg", "pos"]
    assert "accuracy" in meta["metrics"] and "auc" in meta["metrics"]

    out = run_cli(project.dir, "recipe", "run", "sample")
    assert "SUCCESS" in out.stdout
    queries = project.dataset("queries").read()
    check_ranked(queries, ["doc_id", "text"], ["neg", "pos"])
    assert set(queries["doc_id"]) == set(pool["doc_id"]) - {f"d{i:03d}" for i in labeled}
    assert session(project) == 1
    run_recipe(project, "sample")
    assert session(project) == 2
    # the mixed sentences ("... but ...") are the least certain
    mixed = queries["text"].str.contains(" but ")
    assert mixed.iloc[: mixed.sum()].mean() > mixed.iloc[mixed.sum():].mean()


# --------------------------------------------------------------------------- image, sound


def write_png(path: Path, rgb: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb) + rng.normal(scale=12, size=(12, 12, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path)


def write_wav(path: Path, freq: float, seed: int, rate: int = 8000) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * 0.25)) / rate
    signal = 0.6 * np.sin(2 * np.pi * freq * t) + rng.normal(scale=0.02, size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((signal * 32767).astype("<i2").tobytes())


def folder_project(make_project, kind: str):
    """A folder of 'low' / 'high' files (+ ambiguous ones), 8 of them labeled by path."""
    project = make_project(config=flow_config(folder="files",
                                              train_params={"data_type": kind}))
    root = project.folder("files").root
    files = {}
    for i in range(6):
        for label, value in (("low", 0), ("high", 1)):
            rel = f"{label}/{i}.png" if kind == "image" else f"{label}/{i}.wav"
            files[rel] = label
            if kind == "image":
                write_png(root / rel, (200, 30, 30) if value == 0 else (30, 30, 200), i)
            else:
                write_wav(root / rel, 300 if value == 0 else 2400, i)
    for i in range(3):  # in between: the model can't be sure
        if kind == "image":
            write_png(root / f"mid{i}.png", (115, 30, 115), 100 + i)
        else:
            write_wav(root / f"mid{i}.wav", 1350, 100 + i)
    (root / "notes.txt").write_text("not an item")
    labeled = [f"{label}/{i}.{'png' if kind == 'image' else 'wav'}"
               for label in ("low", "high") for i in range(4)]
    labels = pd.DataFrame({"path": labeled, "label": [files[p] for p in labeled],
                           "label_id": range(len(labeled))})
    project.dataset("labels").write(labels)
    return project, files, labeled


@pytest.mark.parametrize("kind", ["image", "sound"])
def test_folder_items_train_and_rank_by_path(make_project, kind):
    project, files, labeled = folder_project(make_project, kind)
    run_recipe(project, "train")
    meta = project.model("clf").metadata()
    assert meta["data_type"] == kind and meta["rows"] == 8
    assert meta["classes"] == ["high", "low"] and meta["folder"] == "files"
    # 4 per class: not enough for a 5-fold estimate; the version says why
    assert meta["metrics"]["cv"].startswith("skipped") or meta["metrics"].get("folds") == 4
    assert "models/clf/v1.skops" == meta["file"]

    run_recipe(project, "sample")
    queries = project.dataset("queries").read()
    check_ranked(queries, ["path"], ["high", "low"])
    ext = ".png" if kind == "image" else ".wav"
    assert set(queries["path"]) == (set(files) | {f"mid{i}{ext}" for i in range(3)}) - set(labeled)
    # the ambiguous items come first, the clear ones are predicted right
    assert set(queries["path"].iloc[:3]) == {f"mid{i}{ext}" for i in range(3)}
    clear = queries[~queries["path"].str.startswith("mid")]
    assert list(clear["prediction"]) == [files[p] for p in clear["path"]]
    assert session(project) == 1


def test_train_classifier_needs_the_folder_for_files(make_project):
    project, _, _ = folder_project(make_project, "image")
    del project.config["recipes"]["train"]["inputs"]["folder"]
    with pytest.raises(LabelloopError, match="folder"):
        run_recipe(project, "train")
    assert project.model("clf").latest() is None


# --------------------------------------------------------------------------- hand-computed


def tiny_project(make_project, model, pool: pd.DataFrame, **params):
    project = make_project(config=flow_config(sample_params=params))
    project.model("clf", create=True).save(model, {"data_type": "tabular"})
    project.dataset("pool").write(pool)
    project.dataset("labels").write(pd.DataFrame({"x": [99.0], "label": ["neg"],
                                                  "label_id": [0]}))
    return project


def test_binary_scores_match_hand_computed_values(make_project):
    model = LogisticRegression().fit(pd.DataFrame({"x": [-1.0, 1.0]}), ["neg", "pos"])
    xs = np.array([0.0, 0.4, -0.8, 2.5, -3.0, 1.2, 99.0])
    pool = pd.DataFrame({"name": [f"item{i}" for i in range(len(xs))], "x": xs})
    project = tiny_project(make_project, model, pool)
    w, b = model.coef_[0, 0], model.intercept_[0]
    p_pos = 1 / (1 + np.exp(-(w * xs[:6] + b)))  # item6 (x=99) is labeled: left out
    p_max = np.maximum(p_pos, 1 - p_pos)
    expected = {
        "margin": 1 - np.abs(p_pos - (1 - p_pos)),
        "confidence": 1 - p_max,
        "entropy": -(p_pos * np.log(p_pos) + (1 - p_pos) * np.log(1 - p_pos)),
    }
    for strategy, scores in expected.items():
        set_params(project, "sample", strategy=strategy)
        run_recipe(project, "sample")
        q = project.dataset("queries").read()
        order = np.argsort(-scores, kind="stable")
        assert list(q["name"]) == [f"item{i}" for i in order], strategy
        np.testing.assert_allclose(q["uncertainty"], scores[order], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(q["confidence"], p_max[order], rtol=1e-12)
        assert list(q["prediction"]) == ["pos" if p > 0.5 else "neg" for p in p_pos[order]]
    assert list(q["name"][:3]) == ["item0", "item1", "item2"]  # |x| smallest first
    assert session(project) == 3


def test_multiclass_margin_and_entropy_match_a_hand_softmax(make_project):
    X = pd.DataFrame({"x": [0.0, 1.0, 0.0], "y": [0.0, 0.0, 1.0]})
    model = LogisticRegression(C=10).fit(X, ["a", "b", "c"])
    rng = np.random.default_rng(3)
    pool = pd.DataFrame({"x": rng.uniform(-0.5, 1.5, 30).round(3),
                         "y": rng.uniform(-0.5, 1.5, 30).round(3)})
    project = tiny_project(make_project, model, pool, strategy="margin")
    z = pool[["x", "y"]].to_numpy() @ model.coef_.T + model.intercept_
    proba = np.exp(z - z.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    for strategy, scores in (("margin", margin_of(proba)),
                             ("entropy", -(proba * np.log(proba)).sum(axis=1))):
        set_params(project, "sample", strategy=strategy)
        run_recipe(project, "sample")
        q = project.dataset("queries").read()
        order = np.argsort(-scores, kind="stable")
        np.testing.assert_allclose(q["uncertainty"], scores[order], rtol=1e-9)
        np.testing.assert_allclose(q[["x", "y"]], pool.iloc[order][["x", "y"]])
        assert list(q["prediction"]) == list(np.array(["a", "b", "c"])[proba[order].argmax(1)])


def test_diverse_batch_leads_by_rank_and_keeps_true_scores(make_project):
    """diverse_margin's picks come first in `query_rank`; every row keeps its own margin."""
    X = pd.DataFrame({"x": [0.0, 1.0, 0.0], "y": [0.0, 0.0, 1.0]})
    model = LogisticRegression(C=10).fit(X, ["a", "b", "c"])
    rng = np.random.default_rng(5)
    pool = pd.DataFrame({"x": rng.uniform(-0.5, 1.5, 400).round(3),
                         "y": rng.uniform(-0.5, 1.5, 400).round(3)})
    project = tiny_project(make_project, model, pool, strategy="diverse_margin", batch_size=5)
    run_recipe(project, "sample")
    q = project.dataset("queries").read()
    assert q["query_rank"].tolist() == list(range(len(q)))
    np.testing.assert_allclose(q["uncertainty"],
                               margin_of(model.predict_proba(q[["x", "y"]])), rtol=1e-9)
    # Behind the picks, margin order; the picks are spread, so not all five most uncertain.
    assert (np.diff(q["uncertainty"].to_numpy()[5:]) <= 0).all()
    assert set(q.index[:5]) != set(np.argsort(-q["uncertainty"].to_numpy(), kind="stable")[:5])


# --------------------------------------------------------------------------- errors


@pytest.fixture
def sampled(make_project):
    """A tabular project whose Query Sampler has run once (session 1)."""
    project = make_project(config=flow_config(train_params={"cross_validate": False}))
    pool = tabular_pool(120)
    project.dataset("pool").write(pool)
    project.dataset("labels").write(tabular_labels(pool, range(20)))
    run_recipe(project, "train")
    run_recipe(project, "sample")
    assert session(project) == 1
    return project, pool, project.dataset("queries").read()


def _one_class_model():
    return DummyClassifier(strategy="most_frequent").fit(
        pd.DataFrame({c: [0.0, 1.0] for c in ("x", "y", "color", "count")}), ["neg", "neg"])


ERROR_CASES = {
    "regressor": (lambda p, pool: p.model("clf").save(
        LinearRegression().fit(pool[["x", "y"]], pool["x"]), {}),
        LabelloopError, r"\(LinearRegression\) is not a classifier with predict_proba"),
    "columns differ": (lambda p, pool: p.model("clf").save(
        LogisticRegression().fit(pd.DataFrame({"height": [0.0, 1.0], "x": [1.0, 0.0]}),
                                 ["a", "b"]), {}),
        LabelloopError, r"trained on columns height, x; the pool lacks height"),
    "fitted without names, other width": (lambda p, pool: p.model("clf").save(
        LogisticRegression().fit(np.eye(3), [0, 1, 1]), {}),
        LabelloopError, r"expects 3 input columns and the pool has 4 \(x, y, color, count\)"),
    "fitted without names, not numbers": (lambda p, pool: p.model("clf").save(
        LogisticRegression().fit(np.eye(4), [0, 1, 1, 0]), {}),
        LabelloopError, r"cannot score the pool's rows \(ValueError: .*'(red|green|blue)'"),
    "one class": (lambda p, pool: p.model("clf").save(_one_class_model(), {}),
                  LabelloopError, r"knows only one class 'neg'.*at least two categories"),
    "empty pool": (lambda p, pool: p.dataset("pool").write(pool.iloc[:0]),
                   LabelloopError, r"unlabeled pool is empty"),
    "all labeled": (lambda p, pool: p.dataset("labels").write(tabular_labels(pool, range(120))),
                    LabelloopError, r"every one of the 120 items of the pool is already labeled"),
    "unknown strategy": (lambda p, pool: set_params(p, "sample", strategy="loudest"),
                         ConfigError, r"strategy.*loudest"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_clear_and_keep_the_previous_queries(sampled, case):
    project, pool, before = sampled
    breaks, error, message = ERROR_CASES[case]
    breaks(project, pool)
    with pytest.raises(error, match=message):
        run_recipe(project, "sample")
    pd.testing.assert_frame_equal(project.dataset("queries").read(), before)
    assert session(project) == 1
    runs = project.runs("recipe", "sample")
    if case != "unknown strategy":  # refused before running: nothing recorded
        assert runs[0]["status"] == "FAILED" and runs[0]["error"]


def test_unknown_strategy_lists_the_choices(sampled):
    project, _, _ = sampled
    set_params(project, "sample", strategy="loudest")
    with pytest.raises(ConfigError) as info:
        prepare(project, "sample")
    assert all(name in str(info.value) for name in ("margin", "entropy", "margin-squared"))


# --------------------------------------------------------------------------- plugin strategy


def test_a_plugin_strategy_is_a_choice_and_runs(make_project, sample_plugin_dir):
    model = LogisticRegression().fit(pd.DataFrame({"x": [-1.0, 1.0]}), ["neg", "pos"])
    xs = np.array([0.1, -2.0, 0.7, -0.3, 3.0])
    project = tiny_project(make_project, model, pd.DataFrame({"x": xs}),
                           strategy="margin-squared")
    assert str(sample_plugin_dir) in project.config["plugin_dirs"]
    component = project.registry.component(SAMPLER, "recipe")
    strategy = next(p for p in effective_params(component, project.registry)
                    if p["name"] == "strategy")
    values = [c["value"] for c in strategy["selectChoices"]]
    assert values[:4] == ["confidence", "margin", "entropy", "random"]
    assert "margin-squared" in values
    assert prepare(project, "sample").config["strategy"] == "margin-squared"

    run = run_recipe(project, "sample")
    assert run["details"]["strategy"] == "margin-squared"
    q = project.dataset("queries").read()
    p_pos = 1 / (1 + np.exp(-(model.coef_[0, 0] * xs + model.intercept_[0])))
    scores = 1 - (2 * p_pos - 1) ** 2
    order = np.argsort(-scores, kind="stable")
    np.testing.assert_allclose(q["x"], xs[order])
    np.testing.assert_allclose(q["uncertainty"], scores[order], rtol=1e-12)


def test_without_the_plugin_its_strategy_is_refused(make_project):
    model = LogisticRegression().fit(pd.DataFrame({"x": [-1.0, 1.0]}), ["neg", "pos"])
    project = make_project(config=flow_config(sample_params={"strategy": "margin-squared"}),
                           plugins=False)
    project.model("clf", create=True).save(model, {})
    project.dataset("pool").write(pd.DataFrame({"x": [0.5]}))
    with pytest.raises(ConfigError, match="margin-squared"):
        run_recipe(project, "sample")
