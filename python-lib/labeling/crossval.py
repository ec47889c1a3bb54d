"""Cross-validation of a classifier pipeline on the labeled rows: accuracy and AUC over
stratified folds, or pooled out-of-fold figures while a class has a single example."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

_MIN_CV_ROWS = 10


def py_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value (anything else as it is)."""
    return value.item() if isinstance(value, np.generic) else value


def _pooled_cross_validate(pipeline: Pipeline, X: Any, y: pd.Series, classes: np.ndarray,
                           random_state: int, rare: str) -> dict[str, Any]:
    """Accuracy and AUC of out-of-fold probabilities pooled over 5 plain folds: for the first
    labels, where a class with a single example rules out stratified folds (and a fold's own
    AUC), yet the first model's quality should still be known. That example is never
    predicted right (no training fold holds its class): the figures are conservative."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import KFold, cross_val_predict

    folds = 5
    with warnings.catch_warnings():
        # a training fold without the rare class: its probability column is 0 there
        warnings.simplefilter("ignore")
        try:
            proba = cross_val_predict(pipeline, X, y, method="predict_proba",
                                      cv=KFold(n_splits=folds, shuffle=True,
                                               random_state=random_state))
        except Exception as exc:  # a fold failing must not stop training: report it
            return {"cv": f"failed: {type(exc).__name__}: {exc}"}
    order = np.unique(y)  # cross_val_predict's column order
    truth = y.to_numpy()
    accuracy = float(np.mean(order[np.argmax(proba, axis=1)] == truth))
    binary = len(order) == 2
    try:
        auc = float(roc_auc_score(truth, proba[:, 1]) if binary else
                    roc_auc_score(truth, proba, multi_class="ovr", labels=order))
    except ValueError:
        auc = None
    return {
        "cv": f"{folds}-fold pooled out-of-fold (class {rare} has a single example: no "
              "stratified folds yet)",
        "folds": folds,
        "accuracy": accuracy,
        "auc": auc,
        "auc_kind": "roc_auc" if binary else "one-vs-rest macro roc_auc",
    }


def cv_metrics(
    pipeline: Pipeline, X: Any, y: pd.Series, classes: np.ndarray, random_state: int
) -> dict[str, Any]:
    """Cross-validated accuracy and AUC of `pipeline` on `X`, `y`; why not, in "cv", when
    there are too few rows or a fold failed."""
    counts = y.value_counts()
    smallest = int(counts.min())
    if len(y) < _MIN_CV_ROWS:
        return {
            "cv": f"skipped: {len(y)} labeled rows, cross-validation needs at least {_MIN_CV_ROWS}"
        }
    if smallest < 2:
        rare = ", ".join(repr(py_value(c)) for c in counts[counts < 2].index)
        return _pooled_cross_validate(pipeline, X, y, classes, random_state, rare)
    folds = min(5, smallest)
    auc = "roc_auc" if len(classes) == 2 else "roc_auc_ovr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            scores = cross_validate(
                pipeline,
                X,
                y,
                cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state),
                scoring={"accuracy": "accuracy", "auc": auc},
                error_score="raise",
            )
        except Exception as exc:  # a fold failing must not stop training: report it
            return {"cv": f"failed: {type(exc).__name__}: {exc}"}
    return {
        "cv": f"{folds}-fold stratified",
        "folds": folds,
        "accuracy": float(np.mean(scores["test_accuracy"])),
        "accuracy_std": float(np.std(scores["test_accuracy"])),
        "auc": float(np.mean(scores["test_auc"])),
        "auc_std": float(np.std(scores["test_auc"])),
        "auc_kind": "roc_auc" if auc == "roc_auc" else "one-vs-rest macro roc_auc",
    }
