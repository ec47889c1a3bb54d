"""Likely-mislabeled items (find-label-issues recipe and step) and training on the consensus."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from labeling.quality.issues import find_issues, load_pipeline
from labeling.quality.oof import out_of_fold_proba
from labeling.training import set_folder_root, train
from labelloop import scenarios
from labelloop.errors import ConfigError, LabelloopError
from labelloop.flow import run_recipe

TRAIN = "ml-assisted-labeling/train-classifier"
ISSUES = "ml-assisted-labeling/find-label-issues"
STEP = "ml-assisted-labeling/label-issues"
CENTERS = {"cat": (0.0, 0.0), "dog": (3.0, 0.0), "bird": (0.0, 3.0)}
FLIP = {"cat": "dog", "dog": "bird", "bird": "cat"}


def blobs(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Items of three well-separated categories: the item columns and the true labels."""
    rng = np.random.default_rng(seed)
    truth = np.array(list(CENTERS))[np.arange(n) % 3]
    xy = np.array([CENTERS[t] for t in truth]) + rng.normal(scale=0.5, size=(n, 2))
    items = pd.DataFrame({"data_id": np.arange(n), "a": xy[:, 0].round(4),
                          "b": xy[:, 1].round(4)})
    return items, truth


def labels_frame(items: pd.DataFrame, labels) -> pd.DataFrame:
    """The labels dataset as the engine writes it: item columns + label + label_id."""
    out = items.reset_index(drop=True).copy()
    out["label"] = list(labels)
    out["label_id"] = np.arange(len(out))
    return out


def flipped(truth: np.ndarray, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    where = rng.choice(len(truth), count, replace=False)
    given = truth.copy()
    given[where] = [FLIP[t] for t in truth[where]]
    return given, where


def flow(train_params: dict | None = None, issue_params: dict | None = None,
         consensus: bool = False) -> dict:
    train_inputs = {"labels": ["labels"]}
    issue_inputs = {"labels": ["labels"], "saved_model": ["clf"]}
    if consensus:
        train_inputs["consensus"] = issue_inputs["consensus"] = ["consensus"]
    return {
        "datasets": {"labels": {}, "consensus": {}},
        "models": {"clf": {}},
        "recipes": {
            "train": {"type": TRAIN, "inputs": train_inputs, "outputs": {"model": ["clf"]},
                      "params": {"cross_validate": False, **(train_params or {})}},
            "issues": {"type": ISSUES, "inputs": issue_inputs,
                       "outputs": {"label_issues": ["label_issues"]},
                       "params": dict(issue_params or {})},
        },
        "scenarios": {"loop": {"triggers": [], "steps": [
            {"recipe": "train"},
            {"step": STEP, "name": "issues", "params": {}}]}},
    }


def test_planted_flips_are_found_with_high_precision_by_the_recipe(make_project):
    items, truth = blobs()
    given, planted = flipped(truth, 15)
    project = make_project(config=flow())
    project.dataset("labels").write(labels_frame(items, given))
    run_recipe(project, "train")
    run = run_recipe(project, "issues")
    issues = project.dataset("label_issues").read()
    assert list(issues.columns) == ["data_id", "given_label", "suggested_label", "quality",
                                    "reason", "model_version"]
    found = set(issues["data_id"])
    hits = found & set(planted.tolist())
    assert len(hits) / len(found) >= 0.8, (sorted(found), sorted(planted))
    # prune-by-noise-rate is conservative: it flags fewer than it ranks low
    assert len(hits) / len(planted) >= 0.6
    assert issues["quality"].is_monotonic_increasing  # most suspicious first
    assert issues["quality"].between(0, 1).all()
    assert (issues["model_version"] == 1).all()
    row = issues[issues["data_id"] == sorted(hits)[0]].iloc[0]
    i = int(row["data_id"])
    assert row["given_label"] == given[i] and row["suggested_label"] == truth[i]
    assert row["reason"].startswith(f"the model gives {str(truth[i])!r} 0.")
    assert row["reason"].endswith(f"{str(given[i])!r} was given ({row['quality']:.2f})")
    assert run["details"]["labels"] == 300 and run["details"]["issues"] == len(issues)


def test_clean_labels_replace_earlier_issues_with_none(make_project):
    items, truth = blobs(60)
    given, _ = flipped(truth, 4)
    project = make_project(config=flow())
    project.dataset("labels").write(labels_frame(items, given))
    run_recipe(project, "train")
    run_recipe(project, "issues")
    assert project.dataset("label_issues").count() > 0
    project.dataset("labels").write(labels_frame(items, truth))  # the flips reviewed away
    run_recipe(project, "train")
    run = run_recipe(project, "issues")
    assert run["details"]["issues"] == 0
    issues = project.dataset("label_issues").read()
    assert issues.empty and "suggested_label" in issues.columns


def test_every_label_scored_when_only_issues_is_off(make_project):
    items, truth = blobs(120)
    given, planted = flipped(truth, 6)
    project = make_project(config=flow(issue_params={"only_issues": False, "folds": 3}))
    project.dataset("labels").write(labels_frame(items, given))
    run_recipe(project, "train")
    run_recipe(project, "issues")
    scored = project.dataset("label_issues").read()
    assert sorted(scored["data_id"]) == list(range(120))
    # the planted flips are the least likely labels
    assert set(scored["data_id"].head(6)) == set(planted.tolist())
    agreeing = scored[scored["given_label"] == scored["suggested_label"]]
    assert agreeing["reason"].str.startswith("the model agrees out of fold").all()


def test_integer_labels_read_back_as_floats_are_named_as_integers():
    items, truth = blobs(90)
    codes = {"cat": 0.0, "dog": 1.0, "bird": 2.0}
    given, planted = flipped(truth, 3)
    df = labels_frame(items, [codes[t] for t in given])
    df.loc[len(df)] = [999, 0.0, 0.0, None, 999]  # an empty label: the column reads as float
    result = train(df, "label", cv=False)
    issues, _ = find_issues(df, result.pipeline, {"version": 1, **result.info()}, "label")
    assert set(issues["given_label"]) <= {"0", "1", "2"}
    assert set(issues["suggested_label"]) <= {"0", "1", "2"}
    assert set(issues["data_id"]) <= set(planted.tolist()) and len(issues) >= 2


def test_answers_of_one_item_are_never_split_across_folds():
    """Two answers per item (overlap): an item's other answer must not teach the model."""
    items, truth = blobs(60)
    # Every item answered twice, the second answer always wrong: without grouping, the
    # model would learn each item's wrong answer from its twin in the training folds.
    both = pd.concat([items, items], ignore_index=True)
    labels = np.concatenate([truth, [FLIP[t] for t in truth]])
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=1)
    y = pd.Series(labels)
    grouped = out_of_fold_proba(knn, both[["a", "b"]], y, groups=both["data_id"].to_numpy(),
                                folds=3)
    classes = np.unique(labels)
    # The nearest other item is of the same true class and holds a right and a wrong
    # answer: about half the answers agree with it.
    assert 0.3 < np.mean(classes[np.argmax(grouped, axis=1)] == labels) < 0.7
    # Ungrouped, the twin (distance 0) is usually in the training folds and contradicts
    # every answer: few agree.
    ungrouped = out_of_fold_proba(knn, both[["a", "b"]], y, folds=3)
    assert np.mean(classes[np.argmax(ungrouped, axis=1)] == labels) < 0.3


def test_the_training_part_of_each_fold_is_bounded():
    items, truth = blobs(600)
    from sklearn.linear_model import LogisticRegression

    y = pd.Series(truth)
    full = out_of_fold_proba(LogisticRegression(), items[["a", "b"]], y, folds=5)
    small = out_of_fold_proba(LogisticRegression(), items[["a", "b"]], y, folds=5,
                              max_train_rows=30)
    assert small.shape == full.shape == (600, 3)
    assert np.allclose(small.sum(axis=1), 1)
    assert not np.allclose(small, full)  # other, smaller training sets
    assert np.mean(np.unique(truth)[small.argmax(axis=1)] == truth) > 0.9


BAD_INPUT = {
    "no labels": (lambda items, truth: labels_frame(items.iloc[:6], [None] * 6),
                  r"no labels to check: label some items first"),
    "one class": (lambda items, truth: labels_frame(items.iloc[:30], ["cat"] * 30),
                  r"all 30 labels have the same label 'cat'.*at least two categories"),
    "too few per class": (
        lambda items, truth: labels_frame(items.iloc[:33], list(truth[:30]) + ["fish"] * 3),
        r"5 folds need at least 5 labels per category; too few for 'fish' \(3\): label more"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_and_writes_nothing(make_project, case):
    items, truth = blobs(60)
    project = make_project(config=flow())
    project.dataset("labels").write(labels_frame(items, truth))
    run_recipe(project, "train")
    run_recipe(project, "issues")
    before = project.dataset("label_issues").read()
    make, message = BAD_INPUT[case]
    project.dataset("labels").write(make(items, truth))
    with pytest.raises(LabelloopError, match=message):
        run_recipe(project, "issues")
    pd.testing.assert_frame_equal(project.dataset("label_issues").read(), before)
    assert project.runs("recipe", "issues", limit=1)[0]["status"] == "FAILED"


def test_refusals_before_any_work(make_project):
    items, truth = blobs(60)
    project = make_project(config=flow(issue_params={"labels_from": "consensus"}))
    project.dataset("labels").write(labels_frame(items, truth))
    with pytest.raises(LabelloopError, match=r"'clf' has no version yet: run the Train"):
        run_recipe(project, "issues")
    run_recipe(project, "train")
    with pytest.raises(ConfigError, match=r"needs the consensus dataset: set the recipe's "
                                          r"'consensus' input role"):
        run_recipe(project, "issues")
    project.config["scenarios"]["loop"]["steps"][1]["params"]["labels_from"] = "consensus"
    run = scenarios.run_scenario(project, "loop")
    assert run["status"] == "FAILED"
    assert "set the step's 'ds_consensus' param" in run["details"]["steps"][1]["error"]
    project.config["recipes"]["issues"]["params"]["labels_from"] = "gold"
    with pytest.raises(ConfigError, match=r"param 'labels_from' .*got \"gold\", which is not "
                                          r"one of the allowed values: \"labels\""):
        run_recipe(project, "issues")
    project.config["recipes"]["issues"]["params"].update(labels_from="labels", folds=1)
    with pytest.raises(ConfigError, match=r"folds"):
        run_recipe(project, "issues")
    assert not project.dataset("label_issues").exists()


def test_the_scenario_step_writes_issues_and_skips_while_labels_are_few(make_project):
    items, truth = blobs(150)
    given, planted = flipped(truth, 8)
    project = make_project(config=flow())
    # 12 labels, one category with 3: too few for 5 folds: the loop goes on, nothing written
    project.dataset("labels").write(labels_frame(items.iloc[:12], given[:12]))
    run = scenarios.run_scenario(project, "loop")
    assert run["status"] == "SUCCESS", run["error"]
    step = run["details"]["steps"][-1]
    assert "5 folds need at least 5 labels per category" in step["details"]["skipped"]
    assert "label_issues" not in project.dataset_names()
    project.dataset("labels").write(labels_frame(items, given))
    run = scenarios.run_scenario(project, "loop")
    assert run["status"] == "SUCCESS", run["error"]
    details = run["details"]["steps"][-1]["details"]
    assert details["model_version"] == 2 and details["labels"] == 150
    issues = project.dataset("label_issues").read()
    assert len(issues) == details["issues"] > 0
    assert len(set(issues["data_id"]) & set(planted.tolist())) / len(issues) >= 0.75
    assert (issues["model_version"] == 2).all()


# --------------------------------------------------------------------------- consensus


ANNOTATORS = {"ann": 0.05, "bea": 0.1, "cy": 0.6}


def answers_of(truth: np.ndarray, seed: int = 3) -> list[list[dict]]:
    """Each item answered by every annotator; ``cy`` answers at random 60 % of the time."""
    rng = np.random.default_rng(seed)
    cats = np.array(list(CENTERS))
    out = []
    for t in truth:
        out.append([{"annotator": a, "label": str(rng.choice(cats) if rng.random() < e else t)}
                    for a, e in ANNOTATORS.items()])
    return out


def consensus_frame(items: pd.DataFrame, answers: list[list[dict]]) -> pd.DataFrame:
    """A consensus dataset (the shared contract's columns): the majority, first answer on ties."""
    labels, agreement = [], []
    for ans in answers:
        votes = pd.Series([a["label"] for a in ans])
        counts = votes.value_counts()
        top = counts.index[0] if counts.iloc[0] > 1 else votes.iloc[0]
        labels.append(top)
        agreement.append(float((votes == top).mean()))
    return pd.DataFrame({"data_id": items["data_id"].to_numpy(), "label": labels,
                         "answers": [json.dumps(a) for a in answers],
                         "n_answers": [len(a) for a in answers], "agreement": agreement,
                         "source": "majority", "reviewer": None, "comment": None,
                         "updated": 1.7e9})


def per_answer_labels(items: pd.DataFrame, answers: list[list[dict]]) -> pd.DataFrame:
    """The labels dataset with one row per answer (labels_per_annotator / overlap)."""
    rows = [i for i, ans in enumerate(answers) for _ in ans]
    return labels_frame(items.iloc[rows], [a["label"] for ans in answers for a in ans])


@pytest.fixture
def team(make_project):
    items, truth = blobs(240, seed=5)
    answers = answers_of(truth)
    project = make_project(config=flow(consensus=True))
    project.dataset("labels").write(per_answer_labels(items, answers))
    project.dataset("consensus").write(consensus_frame(items, answers))
    return project, items, truth, answers


def test_train_on_consensus_fits_one_row_per_item_with_its_consensus_label(team):
    project, items, truth, answers = team
    reviewed = project.dataset("consensus").read()
    reviewed.loc[:9, "label"] = "bird"  # ten reviews overrule the majority
    reviewed.loc[:9, "source"] = "reviewed"
    project.dataset("consensus").write(reviewed)
    project.config["recipes"]["train"]["params"]["train_on"] = "consensus"
    run = run_recipe(project, "train")
    meta = project.model("clf").latest()
    assert meta["train_on"] == "consensus" and run["details"]["train_on"] == "consensus"
    assert meta["train_rows"] == 240  # items, not the 720 answers
    expected = reviewed["label"].value_counts().to_dict()
    assert meta["metrics"]["class_counts"] == expected
    project.config["recipes"]["train"]["params"]["train_on"] = "labels"
    run_recipe(project, "train")
    assert project.model("clf").latest()["train_rows"] == 720


def test_train_on_weighted_uses_crowdlab_and_ranks_the_bad_annotator_last(team):
    project, items, truth, answers = team
    majority = project.dataset("consensus").read()
    project.config["recipes"]["train"]["params"]["train_on"] = "weighted"
    run_recipe(project, "train")
    meta = project.model("clf").latest()
    assert meta["train_on"] == "weighted" and meta["train_rows"] == 240
    quality = meta["annotator_quality"]
    assert min(quality, key=quality.get) == "cy"
    # The weighted consensus is at least as right as the majority vote it starts from.
    from labeling.quality.train_sets import training_rows

    def fit(rows):
        result = train(rows, "label", cv=False)
        return result.pipeline, result.feature_columns

    rows, notes, info = training_rows("weighted", project.dataset("labels").read(),
                                      project.dataset("consensus"), "label", fit=fit)
    weighted = rows.set_index("data_id")["label"].loc[items["data_id"]].to_numpy()
    assert np.mean(weighted == truth) >= np.mean(majority["label"].to_numpy() == truth)
    assert any("CROWDLAB" in n for n in notes)


def test_train_on_consensus_refusals(team, make_project):
    project, *_ = team
    project.config["recipes"]["train"]["params"]["train_on"] = "majority"
    with pytest.raises(ConfigError, match=r"param 'train_on' .*got \"majority\", which is not "
                                          r"one of the allowed values: \"labels\""):
        run_recipe(project, "train")
    bare = make_project("bare", config=flow(train_params={"train_on": "consensus"}))
    items, truth = blobs(30)
    bare.dataset("labels").write(labels_frame(items, truth))
    with pytest.raises(ConfigError, match=r"needs the consensus dataset: set the recipe's "
                                          r"'consensus' input role"):
        run_recipe(bare, "train")
    bare.config["recipes"]["train"]["inputs"]["consensus"] = ["consensus"]
    with pytest.raises(LabelloopError, match=r"consensus dataset 'consensus' does not exist "
                                             r"yet"):
        run_recipe(bare, "train")
    assert bare.model("clf").latest() is None


def test_issues_on_every_answer_give_one_row_per_item_its_most_doubtful_answer(team):
    project, items, truth, answers = team
    project.config["recipes"]["issues"]["params"]["only_issues"] = False
    run_recipe(project, "train")
    run = run_recipe(project, "issues")
    assert run["details"]["labels"] == 720
    scored = project.dataset("label_issues").read()
    assert sorted(scored["data_id"]) == items["data_id"].tolist()
    # an item with a wrong answer is represented by it
    wrong = [i for i, ans in enumerate(answers) if any(a["label"] != truth[i] for a in ans)]
    by_id = scored.set_index("data_id")
    flagged = by_id.loc[wrong]
    assert (flagged["given_label"] != [truth[i] for i in wrong]).mean() > 0.9


def test_issues_judged_on_the_consensus_one_row_per_item(team):
    project, items, truth, answers = team
    project.config["recipes"]["issues"]["params"].update(labels_from="consensus",
                                                         only_issues=False)
    run_recipe(project, "train")
    run_recipe(project, "issues")
    scored = project.dataset("label_issues").read()
    assert sorted(scored["data_id"]) == items["data_id"].tolist()
    majority = project.dataset("consensus").read().set_index("data_id")["label"]
    assert (scored.set_index("data_id")["given_label"] == majority.loc[scored["data_id"]]
            ).all()
    wrong = set(np.flatnonzero(majority.loc[items["data_id"]].to_numpy() != truth).tolist())
    # the least likely consensus labels are the wrong ones
    top = set(scored["data_id"].head(len(wrong)).tolist())
    assert wrong and len(top & wrong) / len(wrong) >= 0.7


def test_image_labels_are_judged_from_the_files(make_project):
    """Image pipelines: features are read from the folder (once per run, not per fold)."""
    from PIL import Image

    project = make_project(config={"folders": {"images": {"path": "images"}}})
    folder = project.folder("images")
    rng = np.random.default_rng(0)
    labels, names = [], []
    for i in range(30):
        shade = 40 if i % 2 else 215
        pixels = np.clip(rng.normal(shade, 20, size=(8, 8)), 0, 255).astype(np.uint8)
        folder.root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(folder.root / f"img{i}.png")
        labels.append("dark" if i % 2 else "light")
        names.append(f"img{i}.png")
    labels[0] = "dark"  # one light image labelled dark
    df = pd.DataFrame({"path": names, "label": labels, "label_id": range(30)})
    result = train(df, "label", data_type="image", folder_root=str(folder.root), cv=False)
    set_folder_root(result.pipeline, None)
    saved = project.model("clf", create=True)
    saved.save(result.pipeline, result.info())
    with pytest.raises(ConfigError, match=r"reads image files: set the managed folder"):
        load_pipeline(saved, None)
    pipeline, meta = load_pipeline(saved, str(folder.root))
    issues, details = find_issues(df, pipeline, meta, "label", folds=3)
    assert issues["path"].tolist() == ["img0.png"]
    assert issues["suggested_label"].tolist() == ["light"]
    assert details == {"labels": 30, "issues": 1, "folds": 3, "model_version": 1,
                       "labels_from": "labels"}
