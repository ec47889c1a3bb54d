"""Active-learning query strategies: uncertainty scores, their registry, and ranking.

A strategy maps a probability matrix ``proba`` (n rows x k classes, rows summing to 1)
to one uncertainty score per row; a higher score means "ask a human first".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.hookspecs import hookspec

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
    scores = _clean_scores(scores)
    n = scores.shape[0]
    if points.shape[0] != n:
        raise LabelloopError(f"got {points.shape[0]} points for {n} scores")
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    if n <= k:
        return _order(scores, None, np.arange(n))
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
        rest = np.setdiff1d(_order(scores, None, np.arange(n)), picks, assume_unique=True)
        rest = _order(scores, None, rest)[: k - picks.shape[0]]
        picks = np.concatenate([picks, rest])
    return _order(scores, None, picks)


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


# --------------------------------------------------------------------------- selection


def _clean_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise LabelloopError(f"expected one score per item (1-D), got shape {scores.shape}")
    if np.isnan(scores).any():
        # NaN (a model that returned NaN probabilities) goes last, never first.
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


def _order(scores: np.ndarray, ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """Sort positions ``idx`` by score descending, ties by id (or position) ascending."""
    if ids is None:
        idx = np.sort(idx)
        return idx[np.argsort(-scores[idx], kind="stable")]
    by_id = idx[np.argsort(ids[idx], kind="stable")]
    return by_id[np.argsort(-scores[by_id], kind="stable")]


def _check_ids(ids: Any, n: int) -> np.ndarray | None:
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise LabelloopError(f"got {ids.shape[0] if ids.ndim else 0} ids for {n} scores")
    return ids


def top_k(scores: Any, k: int, ids: Any = None) -> np.ndarray:
    """Indices of the ``k`` most uncertain items, in rank order: the one order of a ranking.

    Most uncertain first, NaN last, ties by item id (or index) ascending; ``k`` >= the
    number of items orders them all."""
    scores = _clean_scores(scores)
    n = scores.shape[0]
    ids = _check_ids(ids, n)
    if k < 0:
        raise LabelloopError(f"k must be >= 0, got {k}")
    if k == 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    if k >= n:
        return _order(scores, ids, np.arange(n))
    part = np.argpartition(scores, n - k)[n - k :]
    threshold = scores[part].min()
    # Items tied with the k-th score may lie outside the partition: gather them all so
    # the cut at k follows the id order, not the partition's arbitrary one.
    if np.count_nonzero(scores[part] == threshold) < np.count_nonzero(scores == threshold):
        part = np.flatnonzero(scores >= threshold)
    return _order(scores, ids, part)[:k]


@dataclass
class Ranked:
    """A ranking of streamed rows: positions, scores and extra columns, best first.

    ``rows`` holds the rows themselves (a DataFrame in the same order) when they were kept.
    """

    positions: np.ndarray
    scores: np.ndarray
    columns: dict[str, np.ndarray]
    rows: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.positions.shape[0])


class StreamingRanker:
    """The one top-k reducer: rank rows scored chunk by chunk, keeping only what can win.

    ``add(scores, positions, rows=None, **columns)`` per chunk; ``result()`` gives the
    ranking. With ``k`` set only the best ``k`` rows are kept (memory O(k + chunk)), their
    ``rows`` (a DataFrame) too when given; otherwise 16 bytes per row (float64 score + int64
    position) plus any extra columns. Ties are broken by row position, stable for a given
    pool order. Rankings of parts of a pool merge with ``merge`` (a tree reduction gives the
    same ranking as one pass, whatever the partitioning).
    """

    def __init__(self, k: int | None = None) -> None:
        if k is not None and k < 0:
            raise LabelloopError(f"k must be >= 0 or None, got {k}")
        self.k = k
        self._scores: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._columns: dict[str, list[np.ndarray]] = {}
        self._rows: list[pd.DataFrame] | None = None
        self._buffered = 0
        self._seen = 0

    @property
    def seen(self) -> int:
        """Rows added so far."""
        return self._seen

    def add(self, scores: Any, positions: Any = None, rows: pd.DataFrame | None = None,
            **columns: Any) -> None:
        """Add one chunk: its scores, the rows' positions in the pool, extra per-row columns."""
        scores = _clean_scores(scores)
        n = scores.shape[0]
        if positions is None:
            positions = np.arange(self._seen, self._seen + n, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        if positions.shape != (n,):
            raise LabelloopError(f"got {positions.shape} positions for {n} scores")
        if self._seen and set(columns) != set(self._columns):
            raise LabelloopError(
                f"every chunk must carry the same columns: {sorted(self._columns)}, "
                f"got {sorted(columns)}"
            )
        if self._seen and (rows is None) != (self._rows is None):
            raise LabelloopError("either every chunk carries its rows or none does")
        if rows is not None and len(rows) != n:
            raise LabelloopError(f"got {len(rows)} rows for {n} scores")
        if self.k is not None and n > self.k:
            # Only a chunk's own best k can be in the overall best k.
            best = top_k(scores, self.k, ids=positions)
            scores, positions = scores[best], positions[best]
            columns = {name: np.asarray(v)[best] for name, v in columns.items()}
            rows = rows.iloc[best] if rows is not None else None
            n = best.shape[0]
        self._scores.append(scores)
        self._positions.append(positions)
        for name, values in columns.items():
            values = np.asarray(values)
            if values.shape[0] != n:
                raise LabelloopError(f"column {name!r} has {values.shape[0]} rows, expected {n}")
            self._columns.setdefault(name, []).append(values)
        if rows is not None:
            if self._rows is None:
                self._rows = []
            # A copy: the kept rows must not pin the whole chunk they were cut from.
            self._rows.append(rows.reset_index(drop=True).copy())
        self._seen += n
        self._buffered += n
        if self.k is not None and self._buffered > max(2 * self.k, 65536):
            self._compact()

    def merge(self, ranked: Ranked) -> None:
        """Add another ranking (of other rows of the same pool), as a chunk."""
        self.add(ranked.scores, ranked.positions, rows=ranked.rows, **ranked.columns)

    def _concat(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray],
                               pd.DataFrame | None]:
        if not self._scores:
            return np.empty(0), np.empty(0, dtype=np.int64), {}, None
        scores = np.concatenate(self._scores) if len(self._scores) > 1 else self._scores[0]
        positions = (
            np.concatenate(self._positions) if len(self._positions) > 1 else self._positions[0]
        )
        columns = {
            name: np.concatenate(parts) if len(parts) > 1 else parts[0]
            for name, parts in self._columns.items()
        }
        rows = None
        if self._rows is not None:
            rows = pd.concat(self._rows, ignore_index=True) if len(self._rows) > 1 \
                else self._rows[0]
        return scores, positions, columns, rows

    def _compact(self) -> None:
        scores, positions, columns, rows = self._concat()
        keep = top_k(scores, self.k, ids=positions)
        self._scores = [scores[keep]]
        self._positions = [positions[keep]]
        self._columns = {name: [values[keep]] for name, values in columns.items()}
        if rows is not None:
            self._rows = [rows.take(keep).reset_index(drop=True)]
        self._buffered = keep.shape[0]

    def result(self) -> Ranked:
        """The ranking: most uncertain first (the best ``k`` when ``k`` was given)."""
        scores, positions, columns, rows = self._concat()
        if self.k is None:
            order = _order(scores, positions, np.arange(scores.shape[0]))
        else:
            order = top_k(scores, self.k, ids=positions)
        return Ranked(
            positions=positions[order],
            scores=scores[order],
            columns={name: values[order] for name, values in columns.items()},
            rows=None if rows is None else rows.take(order).reset_index(drop=True),
        )


def merge_rankings(parts: Iterable[Ranked], k: int | None = None) -> Ranked:
    """One ranking of several (a node of a tree reduction): the best ``k`` of their union."""
    ranker = StreamingRanker(k)
    for part in parts:
        ranker.merge(part)
    return ranker.result()
