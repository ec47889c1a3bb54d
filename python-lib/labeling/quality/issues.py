"""Likely-mislabeled items: confident learning on out-of-fold probabilities (cleanlab).

Each label (a row of the labels dataset, or an item's consensus label) gets a probability for
every category from a clone of the current model pipeline that did not see it
(`labeling.quality.oof`). cleanlab's ``find_label_issues`` (prune by noise rate: the labels
whose given class is least likely where the estimated joint of given and true classes says
errors are) flags the issues, and ``get_label_quality_scores`` (self-confidence: the out-of-
fold probability of the given label) scores every label, lower = more likely wrong. The result
is the ``label_issues`` dataset: ``<id>, given_label, suggested_label, quality, reason,
model_version``, one row per item (with several answers, its most doubtful one), most
suspicious first; the review queue (``GET review``) reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from labeling.crossval import py_value
from labeling.quality.oof import (
    DEFAULT_FOLDS,
    DEFAULT_MAX_TRAIN_ROWS,
    TooFewLabels,
    check_labels,
    out_of_fold_proba,
)
from labeling.quality.train_sets import check_consensus, consensus_rows, item_column, item_keys
from labeling.training import TRUSTED_TYPES, select_training_rows, set_folder_root
from labelloop.errors import ConfigError, LabelloopError

LABELS_FROM: tuple[str, ...] = ("labels", "consensus")
ISSUE_COLUMNS: tuple[str, ...] = ("given_label", "suggested_label", "quality", "reason",
                                  "model_version")

__all__ = ["LABELS_FROM", "TooFewLabels", "find_issues", "load_pipeline", "reason",
           "score_labels", "write_issues"]


def load_pipeline(saved_model: Any, folder_root: str | None) -> tuple[Any, dict]:
    """The newest version of a saved classifier and its metadata; refuses span taggers."""
    meta = saved_model.latest()
    if meta is None:
        raise LabelloopError(f"saved model {saved_model.name!r} has no version yet: run the "
                             "Train classifier recipe first")
    if meta.get("kind") == "spans":
        raise ConfigError(f"saved model {saved_model.name!r} is a span tagger; label issues "
                          "are found for category (choice) labels: give the classifier")
    if meta.get("data_type") in ("image", "sound") and folder_root is None:
        raise ConfigError(f"the model reads {meta['data_type']} files: set the managed folder "
                          "of the files (the 'folder' input role or param)")
    pipeline = saved_model.load(meta["version"], trusted=TRUSTED_TYPES)
    set_folder_root(pipeline, folder_root)
    if not hasattr(pipeline, "predict_proba"):
        raise ConfigError(f"saved model {saved_model.name!r} has no predict_proba: retrain it "
                          "with the Train classifier recipe")
    return pipeline, meta


def reason(given: Any, suggested: Any, p_suggested: float, p_given: float) -> str:
    """One sentence on why a label is doubted (or not)."""
    if str(given) == str(suggested):
        return f"the model agrees out of fold: {given!r} {p_given:.2f}"
    return (f"the model gives {suggested!r} {p_suggested:.2f} out of fold; {given!r} was "
            f"given ({p_given:.2f})")


def score_labels(labels: pd.Series, proba: np.ndarray, classes: np.ndarray) -> pd.DataFrame:
    """Per label: given, suggested, quality, whether cleanlab flags it, and the reason."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {str(c): i for i, c in enumerate(classes)}
    given = np.asarray([index[str(v)] for v in labels.tolist()], dtype=np.int64)
    flagged = find_label_issues(given, proba, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(given, proba, method="self_confidence")
    best = np.argmax(proba, axis=1)
    rows = np.arange(len(given))
    return pd.DataFrame({
        "given_label": [py_value(classes[i]) for i in given],
        "suggested_label": [py_value(classes[i]) for i in best],
        "quality": quality.astype("float64"),
        "is_issue": flagged.astype(bool),
        "reason": [reason(py_value(classes[g]), py_value(classes[b]), proba[r, b], proba[r, g])
                   for r, g, b in zip(rows, given, best, strict=True)],
    }, index=labels.index)


def find_issues(labels: pd.DataFrame, pipeline: Any, meta: dict, label_col: str,
                id_column: str | None = None, consensus: Any = None, labels_from: str = "labels",
                folds: int = DEFAULT_FOLDS, random_state: int = 0,
                max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS, only_issues: bool = True,
                consensus_where: str = "the recipe's 'consensus' input role"
                ) -> tuple[pd.DataFrame, dict]:
    """The label_issues rows for ``labels`` (the labels dataset's rows), most suspicious first,
    and details (counts). ``labels_from="consensus"`` judges the consensus dataset's labels
    (``consensus``: its Dataset handle) instead of every answer (``labels_from`` as the
    recipe's or step's schema checked it: one of LABELS_FROM)."""
    id_col = item_column(list(labels.columns), id_column)
    rows, _ = select_training_rows(labels, label_col)
    if labels_from == "consensus":
        rows, _ = consensus_rows(rows, check_consensus(consensus, consensus_where), label_col,
                                 id_col)
    columns = [c for c in meta.get("feature_columns") or [] if c != label_col]
    missing = [c for c in columns if c not in rows.columns]
    if not columns or missing:
        raise LabelloopError(
            f"the model version {meta.get('version')} reads columns "
            f"{', '.join(columns) or '(none recorded)'}; the labels lack "
            f"{', '.join(missing) or 'them'}: retrain the model on this labels dataset")
    y = item_keys(rows[label_col])  # canonical strings: 3.0 read back from a float column is "3"
    classes = check_labels(y, folds)
    keys = item_keys(rows[id_col])
    proba = out_of_fold_proba(pipeline, rows[columns], y, groups=keys.to_numpy(), folds=folds,
                              random_state=random_state, max_train_rows=max_train_rows)
    scored = score_labels(y, proba, classes)
    scored.insert(0, id_col, rows[id_col].to_numpy())
    scored["model_version"] = int(meta["version"])
    scored["_key"] = keys.to_numpy()
    details = {"labels": len(scored), "issues": int(scored["is_issue"].sum()),
               "folds": folds, "model_version": int(meta["version"]), "labels_from": labels_from}
    if only_issues:
        scored = scored[scored["is_issue"]]
    # One row per item (the review queue reads it by id): with several answers, the most
    # doubtful one speaks for the item.
    scored = scored.sort_values("quality", kind="stable").drop_duplicates("_key")
    return scored[[id_col, *ISSUE_COLUMNS]].reset_index(drop=True), details


def write_issues(dataset: Any, issues: pd.DataFrame) -> None:
    """Replace the label_issues dataset with ``issues`` (one write: readers see old or new)."""
    frame = issues.copy()
    for col in ("given_label", "suggested_label"):
        frame[col] = frame[col].astype(str)
    frame["quality"] = frame["quality"].astype("float64")
    frame["model_version"] = frame["model_version"].astype("Int64")
    dataset.write(frame)
