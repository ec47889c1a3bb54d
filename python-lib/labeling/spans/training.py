"""Training a span tagger on a labels dataset, with entity-level cross-validation.

The labels dataset holds the item's text and, in the label column, the answer's spans as
JSON text (`[]`: no entities). Scores are seqeval's entity-level precision, recall and F1
(its default, conlleval-like mode) per entity type, micro-averaged into an overall ``f1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from .tagger import FAMILIES, SpanTagger
from .tokens import TOKENIZER, parse_spans, spans_to_tags, tokenize

ALGORITHM_LABELS = {"crf": "Linear-chain CRF (CRFsuite)",
                    "logreg": "Logistic regression per token (scikit-learn)"}
MIN_CV_ROWS = 10
DEFAULT_FOLDS = 5


def guess_text_column(df: pd.DataFrame, label_col: str) -> str:
    """The text column: ``text`` if present, else the string column with the longest values."""
    if "text" in df.columns and label_col != "text":
        return "text"
    from ..columns import METADATA_COLUMNS, SCORE_COLUMNS

    skip = {label_col, f"{label_col}_id", *METADATA_COLUMNS, *SCORE_COLUMNS}
    best, best_len = None, -1.0
    for c in df.columns:
        if c in skip or df[c].dtype != object and not pd.api.types.is_string_dtype(df[c]):
            continue
        length = df[c].dropna().astype(str).str.len().mean()
        if pd.notna(length) and length > best_len:
            best, best_len = c, float(length)
    if best is None:
        raise LabelloopError(f"the labels dataset has no text column (columns: "
                             f"{', '.join(map(str, df.columns))}): set the text column")
    return str(best)


def training_examples(df: pd.DataFrame, label_col: str, text_column: str
                      ) -> tuple[list[str], list[list[dict]], list[str]]:
    """Texts and their spans from the labeled rows (skipped and empty rows left out)."""
    for col in (label_col, text_column):
        if col not in df.columns:
            raise LabelloopError(f"the labels dataset has no column {col!r} (columns: "
                                 f"{', '.join(map(str, df.columns))})")
    rows = df
    if "status" in rows.columns:
        rows = rows[~rows["status"].astype(str).str.upper().eq("SKIPPED")]
    values = rows[label_col]
    rows = rows[values.notna() & ~values.astype(str).str.strip().eq("")]
    texts, spans = [], []
    for k, (text, value) in enumerate(zip(rows[text_column], rows[label_col], strict=True)):
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
        spans.append(parse_spans(value, text, where=f"labels row {k + 1}"))
        texts.append(text)
    return texts, spans, []


def bio_tags(texts: list[str], spans: list[list[dict]]) -> tuple[list[list[str]], int]:
    """BIO tags of each text; and how many spans overlapped another and were left out."""
    out, dropped = [], 0
    for text, s in zip(texts, spans, strict=True):
        tags, d = spans_to_tags(tokenize(text), s)
        out.append(tags)
        dropped += d
    return out, dropped


def entity_scores(y_true: list[list[str]], y_pred: list[list[str]], types: list[str]
                  ) -> dict[str, Any]:
    """seqeval's entity-level precision / recall / F1 per type and overall (micro)."""
    from seqeval.metrics import classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type = {}
    for t in types:
        r = report.get(t, {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
        per_type[t] = {"precision": float(r["precision"]), "recall": float(r["recall"]),
                       "f1": float(r["f1-score"]), "support": int(r["support"])}
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]), "per_type": per_type}


def cross_validate(texts: list[str], tags: list[list[str]], types: list[str], family: str,
                   random_state: int = 0, folds: int = DEFAULT_FOLDS) -> dict[str, Any]:
    """Out-of-fold tags of every text, scored once with seqeval (k-fold, shuffled)."""
    from sklearn.model_selection import KFold

    n = len(texts)
    if n < MIN_CV_ROWS:
        return {"cv": f"skipped: {n} labeled texts, cross-validation needs at least "
                      f"{MIN_CV_ROWS}"}
    folds = min(folds, n)
    predicted: list[list[str]] = [[] for _ in range(n)]
    for train_idx, test_idx in KFold(folds, shuffle=True,
                                     random_state=random_state).split(np.arange(n)):
        model = SpanTagger(family, random_state=random_state).fit(
            [texts[i] for i in train_idx], [tags[i] for i in train_idx], types)
        for i, p in zip(test_idx, model.predict_tags([texts[i] for i in test_idx]),
                        strict=True):
            predicted[i] = p
    return {"cv": f"{folds}-fold", "folds": folds, **entity_scores(tags, predicted, types)}


@dataclass
class SpanTrainResult:
    """A fitted span tagger and what its saved model version records."""

    tagger: SpanTagger
    types: list[str]
    n_rows: int
    text_column: str
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The saved model version's metadata (``kind: spans``, DESIGN.md)."""
        return {"kind": "spans", "data_type": "text", "algorithm": self.tagger.family,
                "classes": self.types, "text_column": self.text_column,
                "tokenizer": TOKENIZER, "train_rows": self.n_rows,
                "feature_columns": [self.text_column], "metrics": self.metrics,
                "notes": self.notes}


def train_span_tagger(df: pd.DataFrame, label_col: str = "label",
                      text_column: str | None = None, algorithm: str = "crf",
                      cv: bool = True, random_state: int = 0,
                      entity_types: list[str] | None = None) -> SpanTrainResult:
    """Fit a span tagger on the labeled rows of ``df``; cross-validate when labels allow."""
    if algorithm not in FAMILIES:
        raise LabelloopError(f"unknown span model {algorithm!r}; choose one of "
                             f"{', '.join(FAMILIES)}")
    text_column = text_column or guess_text_column(df, label_col)
    texts, spans, notes = training_examples(df, label_col, text_column)
    if not texts:
        raise LabelloopError(f"no labeled rows to train on: column {label_col!r} is empty (or "
                             "every row was skipped); label some texts first")
    types = sorted({s["label"] for row in spans for s in row} | set(entity_types or []))
    if not types:
        raise LabelloopError(f"the {len(texts)} labeled texts have no span at all: mark some "
                             "entities before training")
    tags, dropped = bio_tags(texts, spans)
    if dropped:
        notes.append(f"{dropped} spans overlap another span and were left out of training "
                     "(BIO tags hold one span per token)")
    metrics: dict[str, Any] = cross_validate(texts, tags, types, algorithm, random_state) \
        if cv else {"cv": "skipped: disabled"}
    tagger = SpanTagger(algorithm, random_state=random_state).fit(texts, tags, types)
    counts = pd.Series([s["label"] for row in spans for s in row]).value_counts()
    metrics["train_rows"] = len(texts)
    metrics["class_counts"] = {str(k): int(v) for k, v in counts.items()}
    return SpanTrainResult(tagger, types, len(texts), text_column, metrics, notes)
