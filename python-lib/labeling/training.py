"""Classifier training: scikit-learn pipelines per data type that take raw rows or file paths.

A trained pipeline scores raw unlabeled rows directly (``predict_proba(df)``), so the
Query Sampler needs no preprocessing of its own. For image and sound the pipeline reads
the files named in the ``path`` column relative to a folder root set just before use
(``set_folder_root``), so a saved model never holds an absolute path. Which columns are
features is planned in ``columns.py``; the cross-validation figures come from ``crossval.py``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from labeling.columns import (
    METADATA_COLUMNS,
    PATH_COLUMN,
    SCORE_COLUMNS,
    ColumnPlan,
    detect_data_type,
    excluded_columns,
    is_string_column,
    mean_length,
    plan_columns,
)
from labeling.crossval import cv_metrics, py_value
from labeling.features import AsStrings, Clip, ImageFeatures, SoundFeatures
from labeling.strategies import StrategyRegistry, check_proba, default_registry
from labelloop.errors import LabelloopError

DATA_TYPES: tuple[str, ...] = ("tabular", "text", "image", "sound")
ALGORITHMS: dict[str, str] = {
    "logistic_regression": "Logistic regression",
    "hist_gradient_boosting": "Histogram gradient boosting",
    "random_forest": "Random forest",
}

# Every non-scikit-learn type a pipeline built here contains, for skops.io.load(trusted=...).
TRUSTED_TYPES: list[str] = [
    "labeling.features.AsStrings",
    "labeling.features.Clip",
    "labeling.features.ImageFeatures",
    "labeling.features.SoundFeatures",
    # The span tagger and the box detector: plain values, arrays and scikit-learn steps.
    "labeling.spans.tagger.SpanTagger",
    "labeling.boxes.detector.BoxDetector",
    # SimpleImputer keeps the dtype it was fitted on; skops does not trust it by default.
    "numpy.dtype",
]

_TFIDF_FEATURES = 20_000
_TFIDF_FEATURES_DENSE = 2_000  # algorithms that need a dense matrix get fewer terms


def data_type_choices() -> list[dict[str, str]]:
    """DSS ``selectChoices`` for the data type param (empty value = auto-detect)."""
    return [{"value": "", "label": "Auto-detect"}] + [
        {"value": t, "label": t.capitalize()} for t in DATA_TYPES
    ]


def algorithm_choices() -> list[dict[str, str]]:
    """DSS ``selectChoices`` for the algorithm param."""
    return [{"value": k, "label": v} for k, v in ALGORITHMS.items()]


# --------------------------------------------------------------------------- pipelines


def _classifier(algorithm: str, random_state: int) -> Any:
    if algorithm == "logistic_regression":
        # lbfgs on standardised / TF-IDF features converges well within this; scoring
        # is a single matrix product, cheap for a 1M-row pool.
        return LogisticRegression(max_iter=2000)
    if algorithm == "hist_gradient_boosting":
        return HistGradientBoostingClassifier(random_state=random_state)
    if algorithm == "random_forest":
        return RandomForestClassifier(n_estimators=100, random_state=random_state)
    raise LabelloopError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def _text_pipeline(dense: bool) -> Pipeline:
    return Pipeline(
        [
            ("strings", AsStrings()),
            (
                "tfidf",
                TfidfVectorizer(
                    ngram_range=(1, 2),
                    sublinear_tf=True,
                    max_features=_TFIDF_FEATURES_DENSE if dense else _TFIDF_FEATURES,
                ),
            ),
        ]
    )


def build_pipeline(
    data_type: str,
    algorithm: str = "logistic_regression",
    columns: ColumnPlan | pd.DataFrame | str | None = None,
    folder_root: str | None = None,
    random_state: int = 0,
) -> Pipeline:
    """An unfitted Pipeline ``features -> [scale ->] model`` that takes raw input.

    ``columns``: for tabular a ColumnPlan (or a DataFrame to plan from); for text the
    text column's name (default: "text"); for image and sound the path column's name
    (default: "path"). ``folder_root`` is where relative paths are resolved.
    """
    model = _classifier(algorithm, random_state)
    dense = algorithm == "hist_gradient_boosting"  # it refuses sparse matrices
    if data_type == "tabular":
        plan = plan_columns(columns) if isinstance(columns, pd.DataFrame) else columns
        if not isinstance(plan, ColumnPlan) or not plan.columns:
            raise LabelloopError(
                "no usable feature columns: the dataset needs numeric, categorical or text "
                "columns besides the label and metadata columns"
            )
        parts: list[tuple[str, Any, Any]] = []
        if plan.numeric:
            numeric = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="median")),
                    ("scale", StandardScaler()),
                    ("clip", Clip(3.0)),
                ]
            )
            parts.append(("numeric", numeric, list(plan.numeric)))
        if plan.categorical:
            categorical = Pipeline(
                [
                    ("strings", AsStrings()),
                    ("onehot", OneHotEncoder(handle_unknown="ignore")),
                ]
            )
            parts.append(("categorical", categorical, list(plan.categorical)))
        for i, col in enumerate(plan.text):
            parts.append((f"text{i}", _text_pipeline(dense), col))
        features = ColumnTransformer(parts, sparse_threshold=0.0 if dense else 0.3)
        return Pipeline([("features", features), ("model", model)])
    if data_type == "text":
        col = columns.text[0] if isinstance(columns, ColumnPlan) else (columns or "text")
        features = ColumnTransformer(
            [("text", _text_pipeline(dense), col)], sparse_threshold=0.0 if dense else 0.3
        )
        return Pipeline([("features", features), ("model", model)])
    if data_type in ("image", "sound"):
        col = columns if isinstance(columns, str) else PATH_COLUMN
        if data_type == "image":
            # Pixels and histogram shares are already in [0, 1]: no scaler. One fitted on a
            # few dozen labeled images divides nearly constant pixels (a border pixel inked
            # once) by a tiny deviation, and those pixels then dominate the model.
            return Pipeline(
                [("features", ImageFeatures(column=col, root=folder_root)), ("model", model)]
            )
        return Pipeline(
            [
                ("features", SoundFeatures(column=col, root=folder_root)),
                ("scale", StandardScaler()),
                ("model", model),
            ]
        )
    raise LabelloopError(f"unknown data type {data_type!r}; choose one of {', '.join(DATA_TYPES)}")


def set_folder_root(pipeline: Any, root: str | None) -> None:
    """Point a pipeline's file-reading step at the folder its paths are relative to."""
    steps = getattr(pipeline, "steps", [])
    for _, step in steps:
        if isinstance(step, ImageFeatures | SoundFeatures):
            step.set_params(root=None if root is None else str(root))


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """A fitted pipeline and what the saved model version should record about it."""

    pipeline: Pipeline
    classes: list[Any]
    n_rows: int
    metrics: dict[str, Any]
    notes: list[str]
    data_type: str = "tabular"
    algorithm: str = "logistic_regression"
    feature_columns: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """A JSON-serialisable summary for the saved model version."""
        return {
            "data_type": self.data_type,
            "algorithm": self.algorithm,
            "classes": self.classes,
            "train_rows": self.n_rows,
            "feature_columns": self.feature_columns,
            "metrics": self.metrics,
            "notes": self.notes,
        }


def _is_multi_label(value: Any) -> bool:
    if isinstance(value, list | tuple | set | np.ndarray):
        return True
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return isinstance(json.loads(value), list)
        except ValueError:
            return False
    return False


def _normalise_labels(labels: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(labels.dtype) and np.all(np.mod(labels.to_numpy(), 1) == 0):
        # Integer labels read back as floats (a column that once held empty values).
        return labels.astype(np.int64)
    if labels.dtype == object and labels.map(type).nunique() > 1:
        return labels.astype(str)
    return labels


def select_training_rows(df: pd.DataFrame, label_col: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows to train on: not SKIPPED, with a non-empty label; plus notes on what was dropped."""
    if label_col not in df.columns:
        raise LabelloopError(
            f"label column {label_col!r} not found; the dataset has columns "
            f"{', '.join(map(str, df.columns))}"
        )
    notes = []
    keep = pd.Series(True, index=df.index)
    if "status" in df.columns:
        skipped = df["status"].astype(str).str.upper().eq("SKIPPED")
        if skipped.any():
            notes.append(f"{int(skipped.sum())} skipped rows excluded")
        keep &= ~skipped
    labels = df[label_col]
    empty = labels.isna() | labels.astype(str).str.strip().eq("")
    if (empty & keep).any():
        notes.append(f"{int((empty & keep).sum())} rows without a label excluded")
    keep &= ~empty
    rows = df.loc[keep]
    if rows[label_col].map(_is_multi_label).any():
        raise LabelloopError(
            f"column {label_col!r} holds multi-label values (lists); the Train classifier "
            "recipe supports single-label classification only: train one model per label "
            "or use a single-label webapp"
        )
    return rows, notes


def train(
    df: pd.DataFrame,
    label_col: str,
    data_type: str | None = None,
    algorithm: str = "logistic_regression",
    folder_root: str | None = None,
    cv: bool = True,
    random_state: int = 0,
) -> TrainResult:
    """Fit a classifier on the labeled rows of ``df``; cross-validate when labels allow."""
    if algorithm not in ALGORITHMS:
        _classifier(algorithm, random_state)  # raises the "unknown algorithm" error
    rows, notes = select_training_rows(df, label_col)
    if rows.empty:
        raise LabelloopError(
            f"no labeled rows to train on: column {label_col!r} is empty (or every row was "
            "skipped); label some items first"
        )
    y = _normalise_labels(rows[label_col])
    classes = np.unique(y.to_numpy())
    if len(classes) < 2:
        raise LabelloopError(
            f"all {len(y)} labeled rows have the same label {py_value(classes[0])!r}: label items "
            "of at least two categories before training"
        )
    data_type = data_type or detect_data_type(rows, label_col=label_col)
    if data_type not in DATA_TYPES:
        raise LabelloopError(
            f"unknown data type {data_type!r}; choose one of {', '.join(DATA_TYPES)}"
        )
    if data_type == "tabular":
        plan = plan_columns(rows, label_col)
        notes += [f"column {c!r} not used: {why}" for c, why in plan.dropped.items()]
        spec: Any = plan
        feature_columns = plan.columns
    else:
        spec = _single_column(rows, data_type, label_col)
        feature_columns = [spec]
    pipeline = build_pipeline(data_type, algorithm, spec, folder_root, random_state)
    X = rows[feature_columns]
    metrics: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        if data_type in ("image", "sound"):
            # Files are read once: the feature step is stateless, so cross-validating
            # the rest of the pipeline on its output is equivalent and much cheaper.
            feats = pipeline[:1].fit_transform(X)
            if cv:
                metrics.update(cv_metrics(pipeline[1:], feats, y, classes, random_state))
            pipeline[1:].fit(feats, y)
        else:
            if cv:
                metrics.update(cv_metrics(pipeline, X, y, classes, random_state))
            pipeline.fit(X, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append("the solver did not fully converge; more labels usually fix this")
    if not cv:
        metrics["cv"] = "skipped: disabled"
    counts = y.value_counts()
    metrics["train_rows"] = len(y)
    metrics["class_counts"] = {str(py_value(k)): int(v) for k, v in counts.items()}
    return TrainResult(
        pipeline=pipeline,
        classes=[py_value(c) for c in pipeline.classes_],
        n_rows=len(y),
        metrics=metrics,
        notes=notes,
        data_type=data_type,
        algorithm=algorithm,
        feature_columns=[str(c) for c in feature_columns],
    )


def _single_column(rows: pd.DataFrame, data_type: str, label_col: str) -> str:
    if data_type in ("image", "sound"):
        if PATH_COLUMN not in rows.columns:
            raise LabelloopError(
                f"{data_type} data needs a {PATH_COLUMN!r} column of file paths relative "
                f"to the folder; the dataset has {', '.join(map(str, rows.columns))}"
            )
        return PATH_COLUMN
    excluded = excluded_columns(label_col)
    strings = [c for c in rows.columns if c not in excluded and is_string_column(rows[c])]
    if not strings:
        raise LabelloopError(
            "text data needs a column of strings besides the label and metadata columns"
        )
    if "text" in strings:
        return "text"
    return max(strings, key=lambda c: mean_length(rows[c]))


# --------------------------------------------------------------------------- scoring


def model_classes(pipeline: Any) -> list[Any]:
    """The classes a fitted classifier predicts, as plain Python values."""
    classes = getattr(pipeline, "classes_", None)
    if classes is None:
        raise LabelloopError("the model is not fitted: train it before scoring")
    return [py_value(c) for c in classes]


def input_columns(pipeline: Any) -> list[str] | None:
    """The raw columns a fitted pipeline reads, or None when it does not record them."""
    try:
        names = pipeline.feature_names_in_
    except AttributeError:
        return None
    return [str(c) for c in names]


def check_scoring_input(pipeline: Any, df: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``df`` the model reads, in order; a clear error if it cannot score them."""
    if not is_classifier(pipeline) or not hasattr(pipeline, "predict_proba"):
        final = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
        raise LabelloopError(
            f"the model ({type(final).__name__}) is not a classifier with predict_proba; "
            "the Query Sampler needs class probabilities: retrain with the Train classifier "
            "recipe"
        )
    classes = model_classes(pipeline)
    if len(classes) < 2:
        check_proba(np.empty((0, len(classes))), classes)
    columns = input_columns(pipeline)
    if columns is None:
        return df
    present = {str(c): c for c in df.columns}
    missing = [c for c in columns if c not in present]
    if missing:
        raise LabelloopError(
            f"the model was trained on columns {', '.join(columns)}; the pool lacks "
            f"{', '.join(missing)}: score a dataset with the same columns or retrain"
        )
    return df[[present[c] for c in columns]]


def score_rows(
    pipeline: Any,
    df: pd.DataFrame,
    strategy: str = "margin",
    registry: StrategyRegistry | None = None,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Score one chunk of raw rows: ``uncertainty``, ``prediction`` (class index), ``confidence``.

    ``prediction`` is an index into ``model_classes(pipeline)`` (compact to keep across
    chunks); ``confidence`` is the probability of the predicted class. The probability
    matrix lives only for this chunk.
    """
    registry = registry or default_registry()
    X = check_scoring_input(pipeline, df)
    proba = pipeline.predict_proba(X)
    uncertainty = registry.score(strategy, proba, seed=seed, rng=rng, classes=pipeline.classes_)
    prediction = np.argmax(proba, axis=1).astype(np.int32)
    confidence = np.take_along_axis(proba, prediction[:, None].astype(np.intp), axis=1)[:, 0]
    return {"uncertainty": uncertainty, "prediction": prediction, "confidence": confidence}


__all__: Sequence[str] = (
    "ALGORITHMS",
    "DATA_TYPES",
    "METADATA_COLUMNS",
    "SCORE_COLUMNS",
    "TRUSTED_TYPES",
    "ColumnPlan",
    "TrainResult",
    "algorithm_choices",
    "build_pipeline",
    "check_scoring_input",
    "data_type_choices",
    "detect_data_type",
    "input_columns",
    "model_classes",
    "plan_columns",
    "score_rows",
    "select_training_rows",
    "set_folder_root",
    "train",
)
