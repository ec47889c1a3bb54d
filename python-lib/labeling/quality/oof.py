"""Out-of-fold predicted probabilities of a classifier pipeline, bounded in time.

Every label gets a probability from a model that never saw it: `cross_val_predict` over
stratified folds (grouped by item when an item has several answers, so that one answer never
teaches the model the item another answer is judged on). The cost is bounded: each of the
`folds` fits sees at most `max_train_rows` rows (a stratified random subset of its training
part), so 100,000 labels cost `folds` fits on `max_train_rows` rows plus one prediction per
label, not 5 fits on 80,000 rows. File features (images, sounds) are read once, not per fold:
that step is stateless.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

from labeling.crossval import py_value
from labeling.features import ImageFeatures, SoundFeatures
from labelloop.errors import LabelloopError

DEFAULT_FOLDS = 5
DEFAULT_MAX_TRAIN_ROWS = 20_000


class TooFewLabels(LabelloopError):
    """The labels cannot be cross-validated yet (none, a single class, or a class too rare)."""


def check_labels(y: pd.Series, folds: int, what: str = "labels") -> np.ndarray:
    """The sorted classes of ``y``; TooFewLabels when ``folds`` stratified folds are impossible."""
    if len(y) == 0:
        raise TooFewLabels(f"no {what} to check: label some items first")
    counts = y.value_counts()
    if len(counts) < 2:
        raise TooFewLabels(
            f"all {len(y)} {what} have the same label {py_value(counts.index[0])!r}: "
            "out-of-fold probabilities need at least two categories")
    rare = counts[counts < folds]
    if len(rare):
        shown = ", ".join(f"{py_value(c)!r} ({int(n)})" for c, n in rare.items())
        raise TooFewLabels(
            f"{folds} folds need at least {folds} {what} per category; too few for {shown}: "
            "label more items of those categories or lower 'folds' (at least 2)")
    return np.unique(y.to_numpy())


def _bounded(splits: Iterator[tuple[np.ndarray, np.ndarray]], y: np.ndarray, cap: int,
             rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each split's training part cut to at most ``cap`` rows, every class kept."""
    out = []
    for train, test in splits:
        if len(train) > cap:
            keep = rng.permutation(train)[:cap]
            missing = np.setdiff1d(np.unique(y[train]), np.unique(y[keep]))
            extra = [train[y[train] == c][0] for c in missing]
            train = np.sort(np.concatenate([keep, np.asarray(extra, dtype=keep.dtype)]))
        out.append((train, test))
    return out


def out_of_fold_proba(pipeline: Any, X: Any, y: pd.Series, groups: Any = None,
                      folds: int = DEFAULT_FOLDS, random_state: int = 0,
                      max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS) -> np.ndarray:
    """Probabilities of each row's classes (columns: ``np.unique(y)``) from models that did not
    see the row (nor, with ``groups``, any row of its group). ``pipeline`` may be fitted: a
    clone is cross-validated."""
    model = clone(pipeline)
    steps = getattr(model, "steps", [])
    if steps and isinstance(steps[0][1], ImageFeatures | SoundFeatures) and len(steps) > 1:
        X = model[:1].fit_transform(X)  # stateless file reading: once, not once per fold
        model = model[1:]
    labels = y.to_numpy()
    if groups is not None and pd.Series(groups).duplicated().any():
        splitter: Any = StratifiedGroupKFold(n_splits=folds, shuffle=True,
                                             random_state=random_state)
        splits = splitter.split(np.zeros(len(labels)), labels, groups)
    else:
        splits = StratifiedKFold(n_splits=folds, shuffle=True,
                                 random_state=random_state).split(np.zeros(len(labels)), labels)
    cv = _bounded(splits, labels, max_train_rows, np.random.default_rng(random_state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence on small folds; a class absent in a fold
        return cross_val_predict(model, X, y, cv=cv, method="predict_proba", n_jobs=1)
