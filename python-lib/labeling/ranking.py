"""The one order of a ranking (`top_k`: most uncertain first, NaN last, ties by id) and the
one top-k reducer (`StreamingRanker`, `merge_rankings`): rows scored chunk by chunk keep only
what can win."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError


def clean_scores(scores: Any) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise LabelloopError(f"expected one score per item (1-D), got shape {scores.shape}")
    if np.isnan(scores).any():
        # NaN (a model that returned NaN probabilities) goes last, never first.
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


def rank_order(scores: np.ndarray, ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
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
    scores = clean_scores(scores)
    n = scores.shape[0]
    ids = _check_ids(ids, n)
    if k < 0:
        raise LabelloopError(f"k must be >= 0, got {k}")
    if k == 0 or n == 0:
        return np.empty(0, dtype=np.intp)
    if k >= n:
        return rank_order(scores, ids, np.arange(n))
    part = np.argpartition(scores, n - k)[n - k :]
    threshold = scores[part].min()
    # Items tied with the k-th score may lie outside the partition: gather them all so
    # the cut at k follows the id order, not the partition's arbitrary one.
    if np.count_nonzero(scores[part] == threshold) < np.count_nonzero(scores == threshold):
        part = np.flatnonzero(scores >= threshold)
    return rank_order(scores, ids, part)[:k]


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
        scores = clean_scores(scores)
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
            order = rank_order(scores, positions, np.arange(scores.shape[0]))
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
