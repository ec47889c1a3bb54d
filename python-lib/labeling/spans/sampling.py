"""The Query Sampler for span models: rank texts by sequence uncertainty, with predictions.

A span strategy maps a chunk's per-token tag marginals to one score per text (higher:
ask first). Scores are normalised for length (a minimum or a mean over the tokens), so a
long text is not asked first only for being long. The built-ins take the classification
strategies' names with their per-token meaning, plus the length-normalised sequence
confidence (the two per-token ones reduce their tokens' uncertainties with the `spans`
kind's item score, `labeling.kinds.AnnotationKind.item_scores`):

- ``confidence``: least-confident token, 1 - min over tokens of the best tag's marginal;
- ``margin``: smallest token margin, 1 - min over tokens of (p1 - p2);
- ``entropy``: mean token entropy;
- ``sequence_confidence``: 1 - the geometric mean of the best tags' marginals
  (1 - P(best path) ** (1 / tokens) when tokens are independent);
- ``random``: the baseline.

The pool is streamed in chunks as for a classifier (``labeling.sampling``: the same pool,
labeled-item index, top-k reducer and kept rows), so memory stays flat; each item's
predicted spans are written as JSON in ``prediction`` with their scores.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from ..kinds.spans import SpansKind
from ..ranking import StreamingRanker
from ..sampling import LabeledIndex, Pool, Progress, SampleResult, _KeepAll, structured_result
from ..strategies import StrategyRegistry
from .tagger import Analysis, SpanTagger
from .tokens import tags_to_spans

# Texts analysed at once inside a pool chunk: the token feature matrix stays small.
ANALYSE_TEXTS = 2048
# The per-token strategies turn token uncertainties into a text's score as the `spans` kind
# says (its item score needs no webapp settings). The mean-based ones (`entropy`,
# `sequence_confidence`) are length-normalised means by definition, not an item score.
SPANS_KIND = SpansKind(None)


def _per_text(values: np.ndarray, lengths: np.ndarray, how: str, empty: float) -> np.ndarray:
    """Reduce per-token ``values`` to one per text (min / mean / sum); ``empty`` for no token."""
    out = np.full(lengths.shape[0], empty, dtype=np.float64)
    has = lengths > 0
    if not has.any():
        return out
    starts = (np.cumsum(lengths) - lengths)[has]
    if how == "min":
        out[has] = np.minimum.reduceat(values, starts)
    else:
        total = np.add.reduceat(values, starts)
        out[has] = total / lengths[has] if how == "mean" else total
    return out


def best_marginals(analysis: Analysis) -> np.ndarray:
    """Per token: the marginal of its tag on the best path."""
    return analysis.marginals[np.arange(analysis.best.shape[0]), analysis.best]


def item_scores(token_uncertainties: np.ndarray, analysis: Analysis) -> np.ndarray:
    """One score per text from its tokens' uncertainties: the `spans` kind's item score
    (`labeling.kinds.AnnotationKind.item_scores`: the most uncertain token)."""
    return SPANS_KIND.item_scores(token_uncertainties, analysis.lengths)


def least_confident_token(analysis: Analysis, rng: np.random.Generator | None = None
                          ) -> np.ndarray:
    """1 - the smallest best-tag marginal of the text's tokens."""
    top = analysis.marginals.max(axis=1) if analysis.marginals.size else np.empty(0)
    return item_scores(1.0 - top, analysis)


def smallest_token_margin(analysis: Analysis, rng: np.random.Generator | None = None
                          ) -> np.ndarray:
    """1 - the smallest gap between a token's two most probable tags."""
    m = analysis.marginals
    if m.shape[0] == 0:
        return np.zeros(analysis.lengths.shape[0])
    top = np.partition(m, m.shape[1] - 2, axis=1)
    return item_scores(1.0 - (top[:, -1] - top[:, -2]), analysis)


def mean_token_entropy(analysis: Analysis, rng: np.random.Generator | None = None
                       ) -> np.ndarray:
    """The mean over tokens of the entropy of their tag marginals."""
    m = analysis.marginals
    ent = -(m * np.log(np.maximum(m, np.finfo(np.float64).tiny))).sum(axis=1)
    return _per_text(ent, analysis.lengths, "mean", 0.0)


def sequence_confidence(analysis: Analysis, rng: np.random.Generator | None = None
                        ) -> np.ndarray:
    """1 - the geometric mean of the best path's marginals (length-normalised)."""
    logs = np.log(np.maximum(best_marginals(analysis), np.finfo(np.float64).tiny))
    return 1.0 - np.exp(_per_text(logs, analysis.lengths, "mean", 0.0))


def random_texts(analysis: Analysis, rng: np.random.Generator | None = None) -> np.ndarray:
    """Random scores in [0, 1): the passive-learning baseline (seeded)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.random(analysis.lengths.shape[0])


def span_strategies() -> StrategyRegistry:
    """The span strategies (see the module docstring)."""
    registry = StrategyRegistry()
    registry.register("confidence", least_confident_token, label="Least confident token",
                      description="1 - the smallest best-tag marginal over the text's tokens")
    registry.register("margin", smallest_token_margin, label="Smallest token margin",
                      description="1 - the smallest gap between a token's two best tags")
    registry.register("entropy", mean_token_entropy, label="Mean token entropy",
                      description="the tag entropy averaged over the text's tokens")
    registry.register("sequence_confidence", sequence_confidence,
                      label="Sequence confidence (spans)",
                      description="1 - the geometric mean of the best tags' marginals")
    registry.register("random", random_texts, label="Random",
                      description="Random order (seeded): the passive-learning baseline")
    return registry


def score_texts(tagger: SpanTagger, texts: list[str], strategy: str,
                registry: StrategyRegistry | None = None,
                rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Per text: ``uncertainty``, ``prediction`` (JSON spans with scores), ``confidence``."""
    registry = registry or span_strategies()
    analysis = tagger.analyse(texts)
    scores = np.asarray(registry.get(strategy).func(analysis, rng), dtype=np.float64)
    best = best_marginals(analysis)
    logs = np.log(np.maximum(best, np.finfo(np.float64).tiny))
    confidence = np.exp(_per_text(logs, analysis.lengths, "mean", 0.0))
    predictions = np.empty(len(texts), dtype=object)
    tags, paths, token_scores = tagger.tags, analysis.best.tolist(), best.tolist()
    start = 0
    for i, tokens in enumerate(analysis.tokens):
        end = start + len(tokens)
        spans = tags_to_spans(tokens, [tags[t] for t in paths[start:end]],
                              token_scores[start:end])
        predictions[i] = json.dumps(spans, separators=(",", ":"))
        start = end
    return {"uncertainty": scores, "prediction": predictions, "confidence": confidence}


def _texts(frame: pd.DataFrame, column: str) -> list[str]:
    return [v if isinstance(v, str) else "" for v in frame[column].tolist()]


def sample_span_queries(tagger: SpanTagger, pool: Pool, strategy: str,
                        text_column: str, labels: pd.DataFrame | None = None,
                        label_col: str = "label", id_column: str | None = None,
                        max_queries: int = 0, seed: int = 0,
                        progress: Progress | None = None,
                        model_version: str | None = None,
                        registry: StrategyRegistry | None = None) -> SampleResult:
    """Rank the pool's texts: their columns plus uncertainty, prediction (JSON spans),
    confidence, model_version and query_rank, most uncertain first."""
    registry = registry or span_strategies()
    registry.get(strategy)  # unknown strategy: a clear error before any work
    if pool.is_folder:
        raise LabelloopError("a span model scores texts: give the Query Sampler a dataset with "
                             "a text column, not a managed folder")
    if text_column not in pool.columns():
        raise LabelloopError(f"the pool has no column {text_column!r}, the text column the "
                             f"span model was trained on (pool columns: "
                             f"{', '.join(pool.columns())})")
    labeled = LabeledIndex(labels, pool.columns(), label_col, id_column, False)
    k = max_queries or None
    ranker = StreamingRanker(k=k)
    keeper = None if k else _KeepAll(len(pool))
    total = excluded = 0
    progress = progress or (lambda it, *a, **kw: it)
    for positions, frame in progress(pool.chunks(), "scoring", total=pool.n_chunks):
        total += len(frame)
        done = labeled.mask(frame)
        if done.any():
            excluded += int(done.sum())
            frame, positions = frame[~done], positions[~done]
        for s in range(0, len(frame), ANALYSE_TEXTS):
            part, pos = frame.iloc[s:s + ANALYSE_TEXTS], positions[s:s + ANALYSE_TEXTS]
            rng = np.random.default_rng([seed, int(pos[0])])
            scored = score_texts(tagger, _texts(part, text_column), strategy, registry, rng)
            ranker.add(scored["uncertainty"], pos, rows=part if k else None,
                       prediction=scored["prediction"], confidence=scored["confidence"])
            if keeper is not None:
                keeper.add(part, pos, scored["uncertainty"])
    return structured_result(ranker, keeper, total, excluded, model_version,
                             "the unlabeled pool", "items of the pool")


def predict_spans(model: Any, rows: pd.DataFrame, text_column: str) -> np.ndarray:
    """Each row's predicted spans as stored (JSON text, without scores): for comparisons."""
    from .tokens import dumps_spans

    return np.asarray([dumps_spans([{k: s[k] for k in ("start", "end", "label")} for s in p])
                       for p in model.predict(_texts(rows, text_column))], dtype=object)
