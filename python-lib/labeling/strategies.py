"""Active-learning query strategies: uncertainty scores and their registry and hook.

A strategy maps a probability matrix ``proba`` (n rows x k classes, rows summing to 1)
to one uncertainty score per row; a higher score means "ask a human first".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelloop.errors import LabelloopError
from labelloop.hookspecs import hookspec

# The ranking itself is in `ranking.py`; its names are re-exported here, where tests, bench
# scripts and the ml-backend-predict recipe import them.
from .ranking import StreamingRanker as StreamingRanker
from .ranking import clean_scores, rank_order
from .ranking import merge_rankings as merge_rankings
from .ranking import top_k as top_k

# Rows per block when scoring: a block's temporaries stay in the CPU cache, so a
# 1M x 10 matrix is never copied whole (np.partition / np.log on it would copy 80 MB).
_BLOCK_ROWS = 4096
_TINY = np.finfo(np.float64).tiny

StrategyFunc = Callable[..., np.ndarray]
BatchFunc = Callable[..., np.ndarray]


# --------------------------------------------------------------------------- scores


def check_proba(proba: Any, classes: Iterable[Any] | None = None) -> np.ndarray:
    """Validate a probability matrix (2-D, at least two classes) and return it as an array."""
    proba = np.asarray(proba)
    if proba.ndim != 2:
        raise LabelloopError(
            f"expected a 2-D probability matrix (rows x classes), got an array of shape "
            f"{proba.shape}; pass the output of predict_proba"
        )
    if proba.shape[1] < 2:
        known = list(classes) if classes is not None else []
        which = f" {known[0]!r}" if known else ""
        raise LabelloopError(
            f"the model knows only one class{which}: label items of at least two "
            "categories and retrain"
        )
    if not np.issubdtype(proba.dtype, np.floating):
        proba = proba.astype(np.float64)
    return proba


def _blocks(n: int) -> Iterable[slice]:
    for start in range(0, n, _BLOCK_ROWS):
        yield slice(start, min(start + _BLOCK_ROWS, n))


def confidence(proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Least confidence: 1 - max p."""
    proba = check_proba(proba)
    out = proba.max(axis=1).astype(np.float64, copy=False)
    np.subtract(1.0, out, out=out)
    return out


def margin(proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Margin: 1 - (p1 - p2) for the two most probable classes."""
    proba = check_proba(proba)
    n, k = proba.shape
    out = np.empty(n, dtype=np.float64)
    if k == 2:
        # Binary: p1 - p2 = |p0 - p1|; no partition needed.
        np.subtract(proba[:, 0], proba[:, 1], out=out)
        np.abs(out, out=out)
    else:
        for s in _blocks(n):
            top = np.partition(proba[s], k - 2, axis=1)
            np.subtract(top[:, k - 1], top[:, k - 2], out=out[s])
    np.subtract(1.0, out, out=out)
    return out


def entropy(proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Shannon entropy -sum p log p (natural log, 0 log 0 = 0)."""
    proba = check_proba(proba)
    n, k = proba.shape
    out = np.empty(n, dtype=np.float64)
    buf = np.empty((min(n, _BLOCK_ROWS), k), dtype=proba.dtype)
    tiny = np.finfo(proba.dtype).tiny
    for s in _blocks(n):
        block = proba[s]
        logs = buf[: block.shape[0]]
        # log(max(p, tiny)) makes p = 0 contribute 0 * finite = 0 without a mask.
        np.maximum(block, tiny, out=logs)
        np.log(logs, out=logs)
        np.multiply(logs, block, out=logs)
        np.sum(logs, axis=1, out=out[s])
    np.subtract(0.0, out, out=out)  # 0 - x, not -x: no "-0.0" for certain rows
    return out


def random(proba: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Random scores in [0, 1): the passive-learning baseline (seeded through ``rng``)."""
    proba = check_proba(proba)
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.random(proba.shape[0])


# --------------------------------------------------------------------------- batches

# Candidates per batch item of the diversity-aware strategy: the batch of k is chosen among
# the beta * k most uncertain rows (beta = 1 is plain margin). While the model has seen
# fewer than FEW_LABELS labels its uncertainty says little, so the candidates are wider
# (DIVERSITY_BETA_FEW): the batch then covers more of the pool. Chosen on simulated loops
# of the digits demo (held-out splits other than the benches' own), see bench/bench_loop.py.
DIVERSITY_BETA = 10.0
DIVERSITY_BETA_FEW = 20.0
FEW_LABELS = 100


def diverse_batch(points: Any, scores: np.ndarray, k: int,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices of ``k`` rows of ``points``: the most central row of each of ``k`` clusters.

    ``points`` are the candidates as the model sees them (its input features after the
    pipeline's own preprocessing: a dense array or a sparse matrix). They are clustered by
    k-means weighted by ``scores`` (uncertain rows pull the centres; k-means++ seeded from
    ``rng``, so the choice is deterministic under a seed), and the row nearest each centre
    is taken: rows the model is unsure about *for the same reason* fall together, and each
    pick stands for its group. The picks are ordered by score (ties by index).
    """
    from scipy import sparse
    from sklearn.cluster import KMeans
    from sklearn.metrics.pairwise import euclidean_distances

    points = points.astype(np.float64) if sparse.issparse(points) \
        else np.asarray(points, dtype=np.float64)
    if points.ndim == 1:
        points = points.reshape(-1, 1)
    scores = clean_scores(scores)
    n = scores.shape[0]
    if points.shape[0] != n:
        raise LabelloopError(f"got {points.shape[0]} points for {n} scores")
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    if n <= k:
        return rank_order(scores, None, np.arange(n))
    rng = rng if rng is not None else np.random.default_rng(0)
    dense = points.toarray() if sparse.issparse(points) and n * points.shape[1] <= 4e6 \
        else points
    distinct = np.unique(dense, axis=0).shape[0] if not sparse.issparse(dense) else n
    clusters = min(k, distinct)
    seed = int(rng.integers(0, 2**31 - 1))
    # Weights: the scores (shifted up if some are negative; a NaN score, -inf here, and an
    # infinite one weigh as the least and the most uncertain finite one).
    finite = np.where(np.isfinite(scores), scores, np.nan)
    low, high = (np.nanmin(finite), np.nanmax(finite)) if np.isfinite(finite).any() \
        else (0.0, 0.0)
    weights = np.where(scores == np.inf, high, np.nan_to_num(finite, nan=low))
    weights = weights - min(low, 0.0) + 1e-6
    km = KMeans(n_clusters=clusters, n_init=1, random_state=seed).fit(
        dense, sample_weight=weights)
    picks = []
    for c in range(clusters):
        members = np.flatnonzero(km.labels_ == c)
        if members.size:
            dist = euclidean_distances(dense[members], km.cluster_centers_[c:c + 1]).ravel()
            # nearest the centre; ties by higher score, then lower index
            picks.append(members[np.lexsort((members, -scores[members], dist))[0]])
    picks = np.asarray(picks, dtype=np.intp)
    if picks.shape[0] < k:  # identical points: fill up with the next most uncertain
        rest = np.setdiff1d(rank_order(scores, None, np.arange(n)), picks, assume_unique=True)
        rest = rank_order(scores, None, rest)[: k - picks.shape[0]]
        picks = np.concatenate([picks, rest])
    return rank_order(scores, None, picks)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Strategy:
    """A registered query strategy."""

    name: str
    func: StrategyFunc
    label: str
    description: str = ""
    takes_rng: bool = field(default=True, repr=False)
    # A batch step: ``batch(points, scores, k, rng) -> indices`` picks ``k`` of the
    # best-scored candidates (rows of ``points``) to go first; ``beta`` candidates per pick.
    batch: BatchFunc | None = field(default=None, repr=False)
    beta: float = 1.0
    # While fewer than ``few_labels`` items are labeled, ``beta_few`` candidates per pick.
    beta_few: float | None = None
    few_labels: int = 0

    def candidates_per_pick(self, n_labeled: int | None = None) -> float:
        """``beta``, or ``beta_few`` while ``n_labeled`` (when known) is under ``few_labels``."""
        if self.beta_few is not None and n_labeled is not None and n_labeled < self.few_labels:
            return self.beta_few
        return self.beta


def _takes_rng(func: StrategyFunc) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return True
    if "rng" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return True
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params.values())


class StrategyRegistry:
    """Named query strategies; plugins add theirs through ``register_query_strategies``."""

    def __init__(self) -> None:
        self._strategies: dict[str, Strategy] = {}

    def register(
        self,
        name: str,
        func: StrategyFunc,
        label: str | None = None,
        description: str | None = None,
        batch: BatchFunc | None = None,
        beta: float = 1.0,
        beta_few: float | None = None,
        few_labels: int = 0,
    ) -> None:
        """Add (or replace) strategy ``name``: ``func(proba, rng) -> scores`` (``rng`` optional).

        ``batch`` (optional) makes it a batch strategy: the Query Sampler keeps the best
        ``beta * k`` rows by score and ``batch(points, scores, k, rng)`` returns the indices
        of the ``k`` of them that go first (``points``: the rows as the model's last step
        sees them, i.e. its input features). ``beta_few`` (optional) replaces ``beta`` while
        fewer than ``few_labels`` items are labeled.
        """
        if not isinstance(name, str) or not name.strip():
            raise LabelloopError(f"a query strategy needs a non-empty string name, got {name!r}")
        if not callable(func):
            raise LabelloopError(f"query strategy {name!r}: {func!r} is not callable")
        self._strategies[name] = Strategy(
            name=name,
            func=func,
            label=label or name.replace("_", " ").capitalize(),
            description=description or (inspect.getdoc(func) or "").split("\n")[0],
            takes_rng=_takes_rng(func),
            batch=batch,
            beta=float(beta),
            beta_few=None if beta_few is None else float(beta_few),
            few_labels=int(few_labels),
        )

    def names(self) -> list[str]:
        """Registered strategy names, in registration order."""
        return list(self._strategies)

    def choices(self) -> list[dict[str, str]]:
        """DSS ``selectChoices``: ``[{"value": name, "label": label}]``."""
        return [{"value": s.name, "label": s.label} for s in self._strategies.values()]

    def get(self, name: str) -> Strategy:
        """The strategy called ``name``; unknown names raise LabelloopError."""
        try:
            return self._strategies[name]
        except KeyError:
            known = ", ".join(self._strategies) or "(none)"
            raise LabelloopError(
                f"unknown query strategy {name!r}; known strategies: {known}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._strategies

    def __len__(self) -> int:
        return len(self._strategies)

    def score(
        self,
        name: str,
        proba: Any,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        classes: Iterable[Any] | None = None,
    ) -> np.ndarray:
        """Uncertainty scores (float64, one per row) of ``proba`` by strategy ``name``.

        Pass one ``rng`` across the chunks of a stream so random scores do not repeat per
        chunk; otherwise ``seed`` seeds a fresh generator.
        """
        strategy = self.get(name)
        proba = check_proba(proba, classes)
        if strategy.takes_rng:
            rng = rng if rng is not None else np.random.default_rng(seed)
            scores = strategy.func(proba, rng)
        else:
            scores = strategy.func(proba)
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (proba.shape[0],):
            raise LabelloopError(
                f"query strategy {name!r} returned an array of shape {scores.shape}; "
                f"expected one score per row, shape ({proba.shape[0]},)"
            )
        return scores


def register_builtin_strategies(register: Callable[..., None]) -> None:
    """Register confidence, margin, entropy and random through ``register``."""
    register(
        "confidence",
        confidence,
        label="Least confidence",
        description="1 - probability of the most likely class",
    )
    register(
        "margin",
        margin,
        label="Smallest margin",
        description="1 - (p1 - p2), the gap between the two most likely classes",
    )
    register(
        "entropy",
        entropy,
        label="Entropy",
        description="Shannon entropy of the predicted class distribution",
    )
    register(
        "random",
        random,
        label="Random",
        description="Random order (seeded): the passive-learning baseline",
    )


def register_batch_strategies(register: Callable[..., None]) -> None:
    """Register the diversity-aware ``diverse_margin`` (the labeling plugin does it through
    the ``register_query_strategies`` hook, as a third-party plugin would)."""
    register(
        "diverse_margin",
        margin,
        label="Margin, diverse batch",
        description="the most central item of each of k clusters (margin-weighted "
                    f"k-means on the model's features) among the {DIVERSITY_BETA:g}k smallest "
                    f"margins ({DIVERSITY_BETA_FEW:g}k under {FEW_LABELS} labels)",
        batch=diverse_batch,
        beta=DIVERSITY_BETA,
        beta_few=DIVERSITY_BETA_FEW,
        few_labels=FEW_LABELS,
    )


class QueryStrategySpecs:
    """Hook specifications the labeling plugin adds to the host's plugin manager."""

    @hookspec
    def register_query_strategies(self, register):
        """Register query strategies: ``register(name, func, label=None, description=None)``."""


def default_registry() -> StrategyRegistry:
    """A registry holding only the built-in strategies."""
    registry = StrategyRegistry()
    register_builtin_strategies(registry.register)
    return registry


def collect_strategies(pm: Any = None) -> StrategyRegistry:
    """Built-in strategies plus those every plugin of ``pm`` registers through the hook."""
    registry = default_registry()
    hook = getattr(getattr(pm, "hook", None), "register_query_strategies", None)
    if hook is not None:
        hook(register=registry.register)
    return registry
