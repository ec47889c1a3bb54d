"""Training: each data type trains on raw rows / files and scores raw rows; skops round trip."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from PIL import Image
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from labeling.features import SoundFeatures, read_audio
from labeling.strategies import StreamingRanker
from labeling.training import (
    TRUSTED_TYPES,
    build_pipeline,
    check_scoring_input,
    detect_data_type,
    input_columns,
    model_classes,
    plan_columns,
    score_rows,
    set_folder_root,
    train,
)
from labelloop.errors import LabelloopError


def _tabular(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    label = np.where(x > 0, "pos", "neg")
    words = {
        "pos": "a sunny bright cheerful day with warm light and happy people around",
        "neg": "a dark gloomy cold night with heavy rain and nobody in the streets",
    }
    df = pd.DataFrame(
        {
            "x": x,
            "y": rng.normal(size=n),
            "color": rng.choice(["red", "green", None], size=n),
            "notes": [words[lbl] for lbl in label],
            "label": label,
            "label_id": np.arange(n),
            "date": "2024-01-01",
            "annotator": "ann",
            "status": "LABELED",
        }
    )
    df.loc[3, "x"] = np.nan
    return df


def test_tabular_trains_excludes_skipped_and_empty_and_scores_raw_rows():
    df = _tabular()
    df.loc[0, "status"] = "SKIPPED"
    df.loc[1, "label"] = None
    df.loc[2, "label"] = "  "
    result = train(df, "label")
    assert result.data_type == "tabular"
    assert result.n_rows == 57
    assert result.classes == ["neg", "pos"]
    assert set(result.feature_columns) == {"x", "y", "color", "notes"}
    assert any("1 skipped" in note for note in result.notes)
    assert any("2 rows without a label" in note for note in result.notes)
    m = result.metrics
    assert m["cv"] == "5-fold stratified" and m["folds"] == 5
    assert m["accuracy"] > 0.9 and m["auc"] > 0.9
    assert m["train_rows"] == 57
    # the pool has other columns too, in another order: the model picks its own
    pool = _tabular(20, seed=1).drop(columns=["label", "label_id"])[
        ["notes", "date", "y", "color", "x"]
    ]
    out = score_rows(result.pipeline, pool, "margin")
    assert out["uncertainty"].shape == (20,)
    assert out["prediction"].dtype == np.int32
    assert np.all((out["confidence"] >= 0.5) & (out["confidence"] <= 1))
    assert result.info()["classes"] == ["neg", "pos"]


def test_plan_columns_sorts_numeric_categorical_text_and_drops_ids():
    df = _tabular()
    df["uid"] = [f"id-{i}" for i in range(len(df))]
    df["empty"] = np.nan
    plan = plan_columns(df, "label")
    assert plan.numeric == ["x", "y"]
    assert plan.categorical == ["color"]
    assert plan.text == ["notes"]
    assert set(plan.dropped) == {"uid", "empty"}


@pytest.mark.parametrize("algorithm", ["hist_gradient_boosting", "random_forest"])
def test_other_algorithms(algorithm):
    result = train(_tabular(), "label", algorithm=algorithm, cv=False)
    assert result.metrics["cv"] == "skipped: disabled"
    proba = result.pipeline.predict_proba(_tabular(5, seed=2))
    assert proba.shape == (5, 2)


def test_multiclass_auc_and_integer_labels_read_as_floats():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [4, 0], [0, 4]])
    y = np.repeat([0, 1, 2], 20)
    X = centers[y] + rng.normal(scale=0.7, size=(60, 2))
    df = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": y.astype(float)})
    df.loc[60] = [0.0, 0.0, np.nan]  # an unlabeled row makes the label column float
    result = train(df, "label")
    assert result.classes == [0, 1, 2]
    assert result.metrics["auc_kind"] == "one-vs-rest macro roc_auc"
    assert result.metrics["auc"] > 0.95


def test_cross_validation_skipped_with_reasons():
    df = pd.DataFrame({"a": [0.0, 1, 2, 3], "label": ["x", "y", "x", "y"]})
    assert train(df, "label").metrics["cv"].startswith("skipped: 4 labeled rows")


def test_the_first_model_has_metrics_although_a_class_has_a_single_example():
    """The first retrain of a demo (20 labels of 10 digits) has classes seen once: no
    stratified folds, but accuracy and AUC from pooled out-of-fold probabilities."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 9 + [1] * 9 + [2])
    X = np.array([[0, 0], [5, 0], [0, 5]])[y] + rng.normal(scale=0.5, size=(19, 2))
    metrics = train(pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "label": y}), "label").metrics
    assert metrics["cv"].startswith("5-fold pooled out-of-fold (class 2 has a single example")
    # The single 2 can't be predicted (no training fold has its class); the rest are easy.
    assert metrics["accuracy"] == pytest.approx(18 / 19)
    # AUC: one-vs-rest, macro: 0 and 1 are ranked right; the unpredictable 2 drags it down.
    assert 0.6 < metrics["auc"] < 0.9
    assert metrics["auc_kind"] == "one-vs-rest macro roc_auc"


def test_refusals():
    df = pd.DataFrame({"a": [1.0, 2.0], "label": ["x", "x"]})
    with pytest.raises(LabelloopError, match="same label 'x'.*at least two categories"):
        train(df, "label")
    with pytest.raises(LabelloopError, match="no labeled rows"):
        train(pd.DataFrame({"a": [1.0], "label": [None]}), "label")
    with pytest.raises(LabelloopError, match="label column 'lbl' not found"):
        train(df, "lbl")
    with pytest.raises(LabelloopError, match="multi-label"):
        train(pd.DataFrame({"a": [1.0, 2.0], "label": ['["x", "y"]', '["y"]']}), "label")
    with pytest.raises(LabelloopError, match="unknown algorithm 'svm'"):
        train(df, "label", algorithm="svm")
    with pytest.raises(LabelloopError, match="unknown data type"):
        build_pipeline("video")
    with pytest.raises(LabelloopError, match="no usable feature columns"):
        train(pd.DataFrame({"label": ["x", "y"], "annotator": ["a", "b"]}), "label")


def test_text_detects_trains_and_scores():
    texts = [
        "great movie loved it",
        "wonderful acting brilliant film",
        "awful plot hated it",
        "terrible boring waste of time",
    ] * 5
    labels = ["good", "good", "bad", "bad"] * 5
    df = pd.DataFrame({"text": texts, "label": labels})
    assert detect_data_type(df, label_col="label") == "text"
    result = train(df, "label")
    assert result.data_type == "text" and result.feature_columns == ["text"]
    proba = result.pipeline.predict_proba(
        pd.DataFrame({"text": ["loved the brilliant film", None]})
    )
    assert proba.shape == (2, 2)
    assert result.classes[int(np.argmax(proba[0]))] == "good"


def _images(folder: Path, n: int = 12) -> pd.DataFrame:
    folder.mkdir()
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        label = "red" if i % 2 == 0 else "blue"
        color = (
            (200 + rng.integers(0, 50), 20, 30)
            if label == "red"
            else (20, 30, 200 + rng.integers(0, 50))
        )
        img = Image.new(
            "RGB" if i % 3 else "RGBA", (20 + i, 18), color + ((255,) if i % 3 == 0 else ())
        )
        img.save(folder / f"img{i}.png")
        rows.append({"path": f"img{i}.png", "label": label})
    return pd.DataFrame(rows)


def test_image_trains_from_relative_paths_and_scores_with_a_new_root(tmp_path):
    df = _images(tmp_path / "images")
    assert detect_data_type(df) == "image"
    assert detect_data_type(None, folder_files=["a.png", "b.jpg"]) == "image"
    result = train(df, "label", folder_root=str(tmp_path / "images"))
    assert result.data_type == "image"
    assert result.metrics["accuracy"] == 1.0
    moved = tmp_path / "moved"
    (tmp_path / "images").rename(moved)
    set_folder_root(result.pipeline, str(moved))
    out = score_rows(result.pipeline, df[["path"]], "entropy")
    predicted = [result.classes[i] for i in out["prediction"]]
    assert predicted == df["label"].tolist()
    set_folder_root(result.pipeline, str(tmp_path / "gone"))
    with pytest.raises(LabelloopError, match="'img0.png' not found under folder"):
        result.pipeline.predict_proba(df[["path"]])


def _tone(
    path: Path,
    freq: float,
    rate: int = 8000,
    width: int = 2,
    channels: int = 1,
    seconds: float = 0.25,
):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if width == 1:
        data = (x * 127 + 128).astype(np.uint8)
    elif width == 2:
        data = (x * 32767).astype("<i2")
    else:
        data = (x * 2147483647).astype("<i4")
    data = np.repeat(data, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


def test_read_audio_pcm_widths_and_stereo(tmp_path):
    for width in (1, 2, 4):
        _tone(tmp_path / f"w{width}.wav", 440, width=width, channels=2)
        samples, rate = read_audio(tmp_path / f"w{width}.wav")
        assert rate == 8000 and samples.shape == (2000,)
        assert 0.45 < np.abs(samples).max() <= 0.51
    feats = (
        SoundFeatures(root=str(tmp_path))
        .fit(pd.DataFrame({"path": ["w2.wav"]}))
        .transform(pd.DataFrame({"path": ["w2.wav", "w1.wav"]}))
    )
    assert feats.shape == (2, 64)
    # same tone at 16 and 8 bit: same loudest band, same level there
    peak = int(np.argmax(feats[0, :32]))
    assert int(np.argmax(feats[1, :32])) == peak
    assert feats[1, peak] == pytest.approx(feats[0, peak], abs=0.1)
    (tmp_path / "x.flac").write_bytes(b"not audio")
    try:
        import soundfile  # noqa: F401
    except ImportError:
        with pytest.raises(LabelloopError, match="soundfile"):
            read_audio(tmp_path / "x.flac")


def test_sound_trains_on_tones_of_different_pitch(tmp_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    rows = []
    for i in range(12):
        low = i % 2 == 0
        freq = (200 + 15 * i) if low else (2000 + 40 * i)
        rate = 8000 if i % 3 else 16000
        _tone(folder / f"s{i}.wav", freq, rate=rate)
        rows.append({"path": f"s{i}.wav", "label": "low" if low else "high"})
    df = pd.DataFrame(rows)
    assert detect_data_type(df) == "sound"
    result = train(df, "label", folder_root=str(folder))
    assert result.data_type == "sound" and result.metrics["accuracy"] == 1.0
    _tone(folder / "new_low.wav", 300)
    _tone(folder / "new_high.wav", 2500, rate=22050)
    proba = result.pipeline.predict_proba(pd.DataFrame({"path": ["new_low.wav", "new_high.wav"]}))
    assert [result.classes[i] for i in proba.argmax(axis=1)] == ["low", "high"]


def test_skops_round_trip_with_trusted_types(tmp_path):
    texts = pd.DataFrame(
        {"text": ["good fun", "bad dull", "good great", "bad awful"] * 3, "label": ["g", "b"] * 6}
    )
    fitted = {
        "tabular": train(_tabular(), "label", cv=False),
        "text": train(texts, "label", cv=False),
        "image": train(
            _images(tmp_path / "images"), "label", folder_root=str(tmp_path / "images"), cv=False
        ),
    }
    _tone(tmp_path / "a.wav", 200)
    _tone(tmp_path / "b.wav", 3000)
    sounds = pd.DataFrame({"path": ["a.wav", "b.wav"], "label": ["lo", "hi"]})
    fitted["sound"] = train(sounds, "label", folder_root=str(tmp_path), cv=False)
    inputs = {
        "tabular": _tabular(4, seed=3),
        "text": texts.head(4),
        "image": pd.DataFrame({"path": ["img0.png", "img1.png"]}),
        "sound": sounds[["path"]],
    }
    for name, result in fitted.items():
        path = tmp_path / f"{name}.skops"
        set_folder_root(result.pipeline, None)  # what a saved model holds
        sio.dump(result.pipeline, path)
        untrusted = sio.get_untrusted_types(file=path)
        assert set(untrusted) <= set(TRUSTED_TYPES), (name, untrusted)
        loaded = sio.load(path, trusted=TRUSTED_TYPES)
        assert input_columns(loaded) == result.feature_columns
        root = {"image": str(tmp_path / "images"), "sound": str(tmp_path)}.get(name)
        set_folder_root(loaded, root)
        set_folder_root(result.pipeline, root)
        assert np.allclose(
            loaded.predict_proba(inputs[name]), result.pipeline.predict_proba(inputs[name])
        )


def test_regressor_and_column_mismatch_refused():
    df = _tabular()
    regressor = Pipeline([("model", LinearRegression())]).fit(
        df[["x", "y"]].fillna(0), df["label_id"]
    )
    with pytest.raises(
        LabelloopError, match="LinearRegression.*not a classifier with predict_proba"
    ):
        check_scoring_input(regressor, df)
    result = train(df, "label", cv=False)
    with pytest.raises(
        LabelloopError, match="trained on columns x, y, color, notes; the pool lacks y, notes"
    ):
        check_scoring_input(result.pipeline, df.drop(columns=["y", "notes"]))
    with pytest.raises(LabelloopError, match="not fitted"):
        model_classes(build_pipeline("text"))


def test_streamed_scoring_matches_one_shot():
    result = train(_tabular(), "label", cv=False)
    pool = _tabular(1000, seed=5)
    ranker = StreamingRanker()
    rng = np.random.default_rng(0)
    for start in range(0, len(pool), 300):
        chunk = pool.iloc[start : start + 300]
        out = score_rows(result.pipeline, chunk, "random", rng=rng)
        ranker.add(
            out["uncertainty"], np.arange(start, start + len(chunk)), prediction=out["prediction"]
        )
    ranked = ranker.result()
    whole = score_rows(result.pipeline, pool, "random", seed=0)
    assert ranked.positions.tolist() == np.argsort(-whole["uncertainty"], kind="stable").tolist()
    assert np.array_equal(ranked.columns["prediction"], whole["prediction"][ranked.positions])
