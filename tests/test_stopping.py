"""labeling.stopping: halting values, contradictions, metrics history and stall warnings."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from labeling import stopping
from labelloop.project import Project


@pytest.fixture
def project(tmp_path):
    return Project.init(tmp_path / "p", key="STOP")


def write_history(project, rows, name="metrics"):
    df = pd.DataFrame(rows, columns=["labels", "model_version", "auc", "contradictions",
                                     "accuracy"])
    df.insert(0, "date", pd.Timestamp("2024-01-01", tz="UTC"))
    for col in ("auc", "contradictions", "accuracy"):
        df[col] = df[col].astype("float64")
    project.dataset(name, create=True).write(df)


# --------------------------------------------------------------------------- halting


def test_halting_thresholds_are_quantiles_of_the_session():
    u = np.arange(101, dtype=float) / 100  # 0.00 .. 1.00
    low, high = stopping.halting_thresholds(u)
    assert low == pytest.approx(0.5)
    assert high == pytest.approx(0.9)
    assert stopping.halting_thresholds(u, 0.25, 0.75) == pytest.approx((0.25, 0.75))


def test_halting_thresholds_ignore_missing_values_and_refuse_bad_quantiles():
    assert stopping.halting_thresholds([]) is None
    assert stopping.halting_thresholds([np.nan, np.inf]) is None
    assert stopping.halting_thresholds([np.nan, 0.2, 0.4]) == pytest.approx((0.3, 0.38))
    with pytest.raises(ValueError, match="low < high"):
        stopping.halting_thresholds([0.1, 0.2], 0.9, 0.5)


def test_halting_values_fall_from_one_to_zero_between_thresholds():
    values = stopping.halting_values([1.0, 0.9, 0.7, 0.5, 0.1, np.nan], low=0.5, high=0.9)
    assert values.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    assert stopping.halting_value(0.6, 0.5, 0.9) == pytest.approx(0.25)
    assert stopping.halting_value(None, 0.5, 0.9) is None
    # A session where every item is equally uncertain: no gradient, the items still count.
    assert stopping.halting_values([0.4, 0.3], low=0.4, high=0.4).tolist() == [1.0, 0.0]


def test_session_thresholds_read_the_queries_dataset(project):
    queries = project.dataset("queries", create=True)
    assert stopping.session_thresholds(queries) is None
    queries.write(pd.DataFrame({"id": range(11), "uncertainty": np.linspace(1, 0, 11)}))
    assert stopping.session_thresholds(queries) == pytest.approx((0.5, 0.9))
    assert stopping.session_thresholds(queries, column="missing") is None


# --------------------------------------------------------------------------- contradictions


def test_contradictions_is_the_share_of_changed_predictions():
    assert stopping.contradictions([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5
    assert stopping.contradictions(["a", "b"], ["a", "b"]) == 0.0
    # Classes read back as int in one version and str in another still compare equal.
    assert stopping.contradictions([1, 2], ["1", "2"]) == 0.0
    assert stopping.contradictions([], []) is None
    with pytest.raises(ValueError, match="length"):
        stopping.contradictions([1], [1, 2])


def test_sample_pool_of_a_dataset_is_seeded_and_streams(project):
    pool = project.dataset("pool", create=True)
    pool.write(pd.DataFrame({"x": np.arange(30_000), "y": np.arange(30_000) * 2.0}))
    a, root = stopping.sample_pool(project, "pool", 500, seed=3)
    b, _ = stopping.sample_pool(project, "pool", 500, seed=3)
    c, _ = stopping.sample_pool(project, "pool", 500, seed=4)
    assert root is None
    assert len(a) == 500 and a["x"].is_unique
    assert a["x"].tolist() == b["x"].tolist()
    assert a["x"].tolist() != c["x"].tolist()
    assert (a["y"] == a["x"] * 2.0).all()  # whole rows, not shuffled columns
    everything, _ = stopping.sample_pool(project, "pool", 10**6)
    assert everything["x"].tolist() == list(range(30_000))


def test_sample_pool_of_a_folder_lists_files_of_the_data_type(project):
    project.declare("folders", "images", {"path": "images"})
    folder = project.folder("images")
    folder.root.mkdir()
    for i in range(12):
        Image.new("L", (4, 4), color=i * 10).save(folder.root / f"{i:02d}.png")
    (folder.root / "notes.txt").write_text("not an image")
    rows, root = stopping.sample_pool(project, "images", 5, seed=1, data_type="image")
    assert root == str(folder.root)
    assert len(rows) == 5 and all(p.endswith(".png") for p in rows["path"])
    rows, _ = stopping.sample_pool(project, "images", 100, data_type="image")
    assert sorted(rows["path"]) == [f"{i:02d}.png" for i in range(12)]


# --------------------------------------------------------------------------- history


def test_history_is_json_able_lists(project):
    assert stopping.history(project) == {c: [] for c in stopping.METRICS_COLUMNS}
    write_history(project, [(21, 1, 0.9, np.nan, 0.7), (41, 2, 0.95, 0.2, 0.8)])
    hist = stopping.history(project)
    assert hist["labels"] == [21, 41]
    assert hist["model_version"] == [1, 2]
    assert hist["auc"] == [0.9, 0.95]
    assert hist["contradictions"] == [None, 0.2]
    assert all(isinstance(d, str) for d in hist["date"])
    import json

    json.dumps(hist)  # plain JSON: no NaN, numpy or Timestamp values


def test_stall_needs_both_metrics_flat_over_the_window():
    flat = {"auc": [0.80, 0.951, 0.955, 0.958], "contradictions": [0.4, 0.03, 0.035, 0.03]}
    moved = stopping.stall(flat)
    assert moved is not None
    assert moved["auc"] == pytest.approx(0.007)
    assert moved["contradictions"] == pytest.approx(0.005)
    # AUC still climbing: no warning.
    assert stopping.stall({"auc": [0.90, 0.93, 0.95], "contradictions": [0.03] * 3}) is None
    # Contradictions still moving: no warning.
    assert stopping.stall({"auc": [0.95] * 3, "contradictions": [0.10, 0.05, 0.03]}) is None
    # Too short a history, or a point without a value: can't tell yet.
    assert stopping.stall({"auc": [0.95] * 2, "contradictions": [0.03] * 2}) is None
    assert stopping.stall({"auc": [0.95, None, 0.95], "contradictions": [0.03] * 3}) is None
    # A wider window looks further back.
    assert stopping.stall(flat, window=4) is None


def test_stopping_warnings_from_the_metrics_dataset(project):
    assert stopping.stopping_warnings(project) == []
    write_history(project, [(21, 1, 0.80, np.nan, 0.5), (41, 2, 0.90, 0.30, 0.6),
                            (61, 3, 0.95, 0.10, 0.7)])
    assert stopping.stopping_warnings(project) == []
    write_history(project, [(21, 1, 0.80, np.nan, 0.5), (41, 2, 0.951, 0.031, 0.6),
                            (61, 3, 0.955, 0.030, 0.7), (81, 4, 0.953, 0.034, 0.7)])
    warnings = stopping.stopping_warnings(project)
    assert len(warnings) == 1
    assert "labeling more is unlikely to help" in warnings[0].lower()
    assert stopping.stopping_warnings(project, tolerance=0.001) == []
    # Another dataset name: its own history.
    assert stopping.stopping_warnings(project, "other") == []


def test_history_values_are_finite_or_none(project):
    write_history(project, [(10, 1, np.inf, np.nan, 0.5)])
    hist = stopping.history(project)
    assert hist["auc"] == [None]
    assert not any(isinstance(v, float) and math.isnan(v) for v in hist["contradictions"])
