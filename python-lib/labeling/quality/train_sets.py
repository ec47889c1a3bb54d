"""What a classifier trains on: the raw labels, the consensus, or an annotator-weighted consensus.

- ``labels``: every answer of the labels dataset (as the Train classifier recipe always did);
- ``consensus``: one row per item, labelled by the consensus dataset (majority vote, or the
  reviewer's label); the item's features come from its first row in the labels dataset;
- ``weighted``: the annotator-quality-weighted consensus of cleanlab's CROWDLAB
  (``cleanlab.multiannotator.get_label_quality_multiannotator``): each item's answers (the
  consensus dataset's ``answers``) weighed by how reliable each annotator is, together with
  out-of-fold probabilities of a model trained on the majority consensus. Reviewed items keep
  the reviewer's label.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from labeling.columns import PATH_COLUMN
from labeling.datatypes import canonical_id
from labeling.quality.oof import DEFAULT_FOLDS, check_labels, out_of_fold_proba
from labelloop.errors import ConfigError, LabelloopError

TRAIN_ON: tuple[str, ...] = ("labels", "consensus", "weighted")
CONSENSUS_COLUMNS: tuple[str, ...] = ("label", "answers", "source")


def item_column(columns: Sequence[str], given: str | None = None) -> str:
    """The column naming each item: ``given``, else ``path`` (files), else ``data_id``, else ``id``."""
    if given:
        if given not in columns:
            raise ConfigError(f"item id column {given!r} not found; the dataset has columns "
                              f"{', '.join(map(str, columns))}")
        return given
    for name in (PATH_COLUMN, "data_id", "id"):
        if name in columns:
            return name
    raise ConfigError("no item id column found (path, data_id or id): set 'id_column' to the "
                      "column naming each item, as the labeling webapp's id_column")


def item_keys(values: pd.Series) -> pd.Series:
    """Item ids (or labels) as the engine's canonical strings (integral floats as integers)."""
    return pd.Series([canonical_id(v) for v in values.tolist()], index=values.index, dtype=object)


def check_consensus(consensus: Any, where: str = "the recipe's 'consensus' input role"
                    ) -> pd.DataFrame:
    """The consensus dataset's rows; a clear error when it is not given or not there (yet)."""
    if consensus is None:
        raise ConfigError(f"this needs the consensus dataset: set {where} to the labeling "
                          "webapp's consensus_ds")
    if not consensus.exists():
        raise LabelloopError(f"the consensus dataset {consensus.name!r} does not exist yet: it "
                             "is written as answers come in with annotators_per_item > 1")
    df = consensus.read()
    missing = [c for c in CONSENSUS_COLUMNS if c not in df.columns]
    if missing:
        raise LabelloopError(f"dataset {consensus.name!r} is not a consensus dataset: it lacks "
                             f"{', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    return df


def consensus_rows(labels: pd.DataFrame, consensus: pd.DataFrame, label_col: str,
                   id_col: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per item of the consensus: the item's columns from the labels dataset, its label
    from the consensus; plus notes on what was left out."""
    if id_col not in consensus.columns:
        raise LabelloopError(f"the consensus dataset has no {id_col!r} column (it names items "
                             "like the labels dataset): check 'id_column'")
    notes: list[str] = []
    items = labels.assign(_key=item_keys(labels[id_col])).drop_duplicates("_key")
    cons = consensus.assign(_key=item_keys(consensus[id_col]))
    cons = cons[cons["label"].notna() & cons["label"].astype(str).str.strip().ne("")]
    merged = items.drop(columns=[label_col], errors="ignore").merge(
        cons[["_key", "label", "source"]].rename(columns={"label": label_col}), on="_key")
    lost = len(cons) - len(merged)
    if lost:
        notes.append(f"{lost} consensus items not in the labels dataset excluded")
    merged = merged.drop(columns=["_key"])
    notes.append(f"trained on the consensus of {len(merged)} items "
                 f"({int((merged['source'] == 'reviewed').sum())} reviewed)")
    return merged.drop(columns=["source"]), notes


def answers_matrix(consensus: pd.DataFrame, classes: np.ndarray) -> pd.DataFrame:
    """Items x annotators class indices (NaN where an annotator did not answer), from the
    consensus dataset's ``answers`` JSON; answers outside ``classes`` count as not given."""
    index = {str(c): i for i, c in enumerate(classes)}
    rows: list[dict[str, float]] = []
    for text in consensus["answers"].tolist():
        answers = json.loads(text) if isinstance(text, str) and text else []
        rows.append({str(a.get("annotator")): float(index[str(a.get("label"))])
                     for a in answers if str(a.get("label")) in index})
    return pd.DataFrame(rows, index=consensus.index, dtype="float64")


def weighted_labels(majority: pd.DataFrame, consensus: pd.DataFrame, label_col: str,
                    id_col: str, fit: Any, folds: int = DEFAULT_FOLDS,
                    random_state: int = 0) -> tuple[pd.Series, dict]:
    """CROWDLAB consensus labels for the rows of ``majority`` (aligned on its index), and the
    annotators' quality scores. ``fit(rows)`` returns a fitted pipeline and its feature columns."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    y = item_keys(majority[label_col])
    classes = check_labels(y, folds, "consensus labels")
    pipeline, columns = fit(majority)
    proba = out_of_fold_proba(pipeline, majority[columns], y, folds=folds,
                              random_state=random_state)
    by_key = consensus.assign(_key=item_keys(consensus[id_col])).drop_duplicates("_key")
    by_key = by_key.set_index("_key").loc[item_keys(majority[id_col]).tolist()]
    matrix = answers_matrix(by_key.reset_index(drop=True), classes)
    answered = matrix.notna().any(axis=1).to_numpy()
    if not answered.any():
        raise LabelloopError("the consensus dataset's 'answers' hold no answer in the "
                             "categories the consensus uses: nothing to weigh")
    result = get_label_quality_multiannotator(matrix[answered].reset_index(drop=True),
                                              proba[answered], verbose=False)
    labels = y.copy()
    picked = result["label_quality"]["consensus_label"].to_numpy().astype(int)
    labels.iloc[np.flatnonzero(answered)] = classes[picked]
    reviewed = (by_key["source"].astype(str) == "reviewed").to_numpy()
    labels.iloc[np.flatnonzero(reviewed)] = y.iloc[np.flatnonzero(reviewed)]
    stats = result["annotator_stats"]
    quality = {str(a): float(q) for a, q in stats["annotator_quality"].items()}
    return labels, {"annotator_quality": quality,
                    "changed": int((labels != y).sum())}


def training_rows(train_on: str, labels: pd.DataFrame, consensus: Any, label_col: str,
                  id_column: str | None = None, fit: Any = None, folds: int = DEFAULT_FOLDS,
                  random_state: int = 0) -> tuple[pd.DataFrame, list[str], dict]:
    """The rows to train on for ``train_on`` (one of TRAIN_ON, as the recipe's schema checked
    it), notes, and details to record.

    ``consensus``: the consensus Dataset handle (or None); ``fit`` (for ``weighted``): a
    function fitting a pipeline on rows, returning ``(pipeline, feature_columns)``."""
    if train_on == "labels":
        return labels, [], {}
    cons = check_consensus(consensus)
    id_col = item_column(list(labels.columns), id_column)
    rows, notes = consensus_rows(labels, cons, label_col, id_col)
    if train_on == "consensus":
        return rows, notes, {"items": len(rows)}
    rows = rows.reset_index(drop=True)
    weighted, info = weighted_labels(rows, cons, label_col, id_col, fit, folds, random_state)
    rows[label_col] = weighted.to_numpy()
    notes.append(f"annotator-weighted consensus (cleanlab CROWDLAB) changed {info['changed']} "
                 "of the majority labels")
    return rows, notes, {"items": len(rows), **info}
