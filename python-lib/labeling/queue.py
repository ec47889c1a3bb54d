"""The order of one queries session, read a slice at a time.

A session's order is: the items of the queries dataset, most uncertain first (ties in the
dataset's row order; a repeated id counts where it first appears), then the rest of the pool
in a seeded random order; without queries, the whole pool in that random order.

Why slices: the Query Sampler writes the queries already sorted, so the head of the order is
the head of the dataset. The engine materializes only the positions annotators are about to
reach (a few thousand rows), never the whole million-row order at once; `Ranking.slice`
gives the rows of positions `[start, stop)` straight from the datasets' chunks.

Positions: `0 .. n_scored - 1` are the queries dataset's rows in ranked order; from `n_scored`
on come the rest of the pool. The rest is read by pool row position (no queries: a random
permutation of the pool's rows) or, when queries exist, from the engine's item index (the
pool's ids minus the scored ones, permuted), so it needs the index to be complete.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import ConflictError, LabelloopError

from .datatypes import PATH, DataType, canonical_id, prediction_text
from .stopping import halting_thresholds, halting_values

MODEL_VERSION = "model_version"  # optional column of the queries dataset (OWNERS convention)
# Optional column of the queries dataset: the Query Sampler's serving order (0 first).
QUERY_RANK = "query_rank"
BLOCK = 100_000  # rows read from a dataset at a time when positions are scattered
REST_WINDOW = 20_000  # rest positions prepared at a time (scattered reads amortized)


class RankingChanged(LabelloopError):
    """The datasets a ranking reads were replaced meanwhile: a new session is coming."""


@dataclass
class Slice:
    """Rows of positions of a ranking; `row` None means: take the row from the item index."""

    positions: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    rows: list[str | None] = field(default_factory=list)
    uncertainty: list[float | None] = field(default_factory=list)
    prediction: list[str | None] = field(default_factory=list)
    confidence: list[float | None] = field(default_factory=list)
    halting: list[float | None] = field(default_factory=list)
    model_version: list[str | None] = field(default_factory=list)

    def add(self, pos: int, item_id: str, row: str | None, unc=None, pred=None, conf=None,
            halt=None, version=None) -> None:
        self.positions.append(pos)
        self.ids.append(item_id)
        self.rows.append(row)
        self.uncertainty.append(unc)
        self.prediction.append(pred)
        self.confidence.append(conf)
        self.halting.append(halt)
        self.model_version.append(version)

    def __len__(self) -> int:
        return len(self.ids)

    def records(self, qid: int) -> list[tuple]:
        return list(zip([qid] * len(self.ids), self.positions, self.ids, self.uncertainty,
                        self.prediction, self.confidence, self.halting, self.model_version,
                        self.rows, strict=True))


def _clean(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f or f in (float("inf"), float("-inf")) else f


class Ranking:
    """The order of one session over a pool; `prepare()` first, then `slice()` at will.

    `index_ids()` gives the pool's ids in pool order once the engine's item index is complete
    (None before): the rest of the pool after the scored items is taken from it.
    """

    def __init__(self, dtype: DataType, queries: Any | None, seed: int,
                 index_ids: Callable[[], list[str] | None]):
        self.dtype = dtype
        self.cfg = dtype.cfg
        self.queries = queries
        self.seed = seed
        self.index_ids = index_ids
        self.order: np.ndarray | None = None  # queries row of each scored position
        self.n_scored = 0
        self.n_pool = 0
        self.info: dict[str, Any] = {"scored": 0}
        self.thresholds: tuple[float, float] | None = None
        self.needs_index = False  # the queries name items by id only: rows from the index
        self._columns: list[str] = []
        self._generation: int | None = None
        self._pool_generation: int | None = None
        self._frame: pd.DataFrame | None = None  # whole queries when its order is scattered
        self._block: tuple[int, pd.DataFrame] | None = None
        self._pool_perm: np.ndarray | None = None
        self._rest_ids: list[str] | None = None
        self._rest_cache: tuple[int, int, Slice] | None = None
        self._lock = threading.Lock()  # slices share read caches

    # ------------------------------------------------------------------ preparing
    def prepare(self) -> None:
        """Read what the order needs up front: the uncertainties (one column) and the pool size."""
        self.n_pool = self._pool_size()
        if self.queries is None or not self.queries.exists():
            return
        self._generation = self.queries.generation()
        have = set(self.queries.columns)
        if "uncertainty" not in have or self.queries.count() == 0:
            return
        need = self._needed_columns(have)
        if need is None:
            return
        # The Query Sampler's own order (`query_rank`: a batch strategy's picks first) when
        # it wrote one; otherwise the most uncertain first (queries from elsewhere).
        ranked = QUERY_RANK in have
        head = self.queries.read(columns=["uncertainty"] + ([QUERY_RANK] if ranked else []))
        unc = pd.to_numeric(head["uncertainty"], errors="coerce").to_numpy(dtype="float64")
        if self.queries.generation() != self._generation:
            raise RankingChanged("the queries were replaced while being read")
        if ranked:
            rank = pd.to_numeric(head[QUERY_RANK], errors="coerce").to_numpy(dtype="float64")
            keyed = -np.where(np.isnan(rank), np.inf, rank)
        else:
            keyed = np.where(np.isnan(unc), -np.inf, unc)
        sorted_already = len(keyed) < 2 or bool(np.all(keyed[:-1] >= keyed[1:]))
        self.order = np.arange(len(keyed)) if sorted_already else \
            np.argsort(-keyed, kind="stable")
        self.n_scored = len(keyed)
        self._columns = need + [c for c in ("uncertainty", "prediction", "confidence",
                                            MODEL_VERSION) if c in have]
        # Quantiles of a regular sample: as good for thresholds, and 10x quicker on 1M items.
        self.thresholds = halting_thresholds(unc[::max(1, len(unc) // 100_000)])
        self.info = {"scored": int(self.n_scored)}
        if self.thresholds is not None:
            self.info.update(low=self.thresholds[0], high=self.thresholds[1])

    def _needed_columns(self, have: set[str]) -> list[str] | None:
        if self.dtype.from_folder:
            if PATH not in have:
                self.info["warning"] = (f"the queries dataset {self.queries.name!r} has no "
                                        f"{PATH!r} column: run the Query Sampler on folder "
                                        f"{self.cfg.unlabeled!r}")
                return None
            return [PATH]
        pool_cols = [c["name"] for c in self.dtype.item_schema()]
        missing = [c for c in pool_cols if c not in have]
        if not missing:
            return pool_cols
        if self.cfg.id_column and self.cfg.id_column in have:
            self.needs_index = True  # ids only: the rows come from the item index
            return [self.cfg.id_column]
        self.info["warning"] = (
            f"the queries dataset {self.queries.name!r} lacks the pool's column(s) "
            f"{', '.join(map(repr, missing))}: run the Query Sampler on {self.cfg.unlabeled!r}")
        return None

    def _pool_size(self) -> int:
        if self.dtype.from_folder:
            return len(self.dtype._files())
        pool = self.dtype._pool()
        self._pool_generation = pool.generation()
        return pool.count()

    @property
    def length(self) -> int:
        """Positions in all (an upper bound on items: repeated and scored ids are left out)."""
        return self.n_scored + self.n_pool

    # ------------------------------------------------------------------ reading
    def slice(self, start: int, stop: int) -> Slice:
        """The rows of positions `[start, stop)` (fewer when some are left out)."""
        out = Slice()
        stop = min(stop, self.length)
        with self._lock:
            if start < self.n_scored:
                self._scored(start, min(stop, self.n_scored), out)
            if stop > self.n_scored:
                self._rest(max(start, self.n_scored), stop, out)
        return out

    def _read_queries(self, lo: int, hi: int) -> pd.DataFrame:
        """Queries rows `lo .. hi - 1` (dataset order) with the columns the order needs."""
        assert self.order is not None
        if self._frame is not None:
            return self._frame.iloc[lo:hi]
        frame = self.queries.read(columns=self._columns, offset=lo, limit=hi - lo)
        if self.queries.generation() != self._generation:
            raise RankingChanged("the queries were replaced while being read")
        return frame

    def _scored(self, start: int, stop: int, out: Slice) -> None:
        assert self.order is not None
        rows = self.order[start:stop]
        if len(rows) == 0:
            return
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if self._frame is None and hi - lo > 4 * max(len(rows), 1000):
            # Not sorted by the sampler: keep the whole queries once rather than re-read.
            self._frame = self._read_queries(0, self.n_scored).reset_index(drop=True)
        frame = self._read_queries(lo, hi).reset_index(drop=True).iloc[rows - lo]
        ids, lines = self._ids_rows(frame)
        unc = pd.to_numeric(frame["uncertainty"], errors="coerce").to_numpy(dtype="float64")
        halt = np.full(len(unc), np.nan)
        if self.thresholds is not None:
            halt = np.where(np.isfinite(unc), halting_values(unc, *self.thresholds), np.nan)
        preds = [prediction_text(v) for v in frame["prediction"].tolist()] \
            if "prediction" in frame else [None] * len(frame)
        conf = frame["confidence"].tolist() if "confidence" in frame else [None] * len(frame)
        vers = [canonical_id(v) for v in frame[MODEL_VERSION].tolist()] \
            if MODEL_VERSION in frame else [None] * len(frame)
        for k in range(len(frame)):
            if ids[k] is None:
                continue
            out.add(start + k, ids[k], lines[k], _clean(unc[k]), preds[k], _clean(conf[k]),
                    _clean(halt[k]), vers[k])

    def _ids_rows(self, frame: pd.DataFrame) -> tuple[list, list]:
        if self.dtype.from_folder:
            ids = [None if p is None else str(p).replace("\\", "/") for p in frame[PATH].tolist()]
            return ids, [None if p is None else json.dumps({PATH: p}) for p in ids]
        if self.needs_index:
            col = self.cfg.id_column
            schema = [c for c in self.dtype.item_schema() if c["name"] == col]
            from labelloop.project import normalize

            ids = [canonical_id(v) for v in normalize(frame[[col]], schema)[col].tolist()]
            return ids, [None] * len(ids)
        schema = self.dtype.item_schema()
        return self.dtype._ids_and_lines(frame[[c["name"] for c in schema]], schema)

    # ---- the rest of the pool
    def _rest(self, start: int, stop: int, out: Slice) -> None:
        cache = self._rest_cache
        if cache is None or not cache[0] <= start < cache[1]:
            lo = start
            hi = min(self.length, max(stop, start + REST_WINDOW))
            cache = (lo, hi, self._rest_window(lo, hi))
            self._rest_cache = cache
        part = cache[2]
        for k, pos in enumerate(part.positions):
            if start <= pos < stop:
                out.add(pos, part.ids[k], part.rows[k])
        if stop > cache[1]:
            self._rest(cache[1], stop, out)

    def _rest_window(self, start: int, stop: int) -> Slice:
        out = Slice()
        if self.n_scored == 0:  # no queries: the pool's rows in a random order, read by position
            perm = self._permutation(self.n_pool)
            rows = perm[start:stop]
            if len(rows) == 0:
                return out
            ids, lines = self._pool_rows(rows)
            for k, pos in enumerate(range(start, start + len(rows))):
                if ids[k] is not None:
                    out.add(pos, ids[k], lines[k])
            return out
        rest = self._rest_order()
        for k in range(start - self.n_scored, min(stop - self.n_scored, len(rest))):
            out.add(self.n_scored + k, rest[k], None)
        return out

    def _permutation(self, n: int) -> np.ndarray:
        if self._pool_perm is None or len(self._pool_perm) != n:
            self._pool_perm = np.random.default_rng(self.seed).permutation(n)
        return self._pool_perm

    def _rest_order(self) -> list[str]:
        """The pool's ids not among the scored ones, in the seeded random order."""
        if self._rest_ids is not None:
            return self._rest_ids
        pool = self.index_ids()
        if pool is None:
            raise IndexNotReady("the rest of the pool follows the ranked items once the pool "
                                "is indexed")
        scored: set[str] = set()
        for lo in range(0, self.n_scored, BLOCK):
            ids, _ = self._ids_rows(self._read_queries(lo, min(lo + BLOCK, self.n_scored)))
            scored.update(i for i in ids if i is not None)
        ids = pd.Index(pool, dtype=object)
        rest = ids[~ids.isin(scored)]
        rest = rest[np.random.default_rng(self.seed).permutation(len(rest))]
        self._rest_ids = rest.tolist()
        self.n_pool = len(self._rest_ids)
        return self._rest_ids

    def _pool_rows(self, positions: np.ndarray) -> tuple[list, list]:
        """Ids and rows of pool rows at `positions` (any order), read a block at a time."""
        if self.dtype.from_folder:
            files = self.dtype._files()
            ids = [files[int(p)] if int(p) < len(files) else None for p in positions]
            return ids, [None if i is None else json.dumps({PATH: i}) for i in ids]
        pool = self.dtype._pool()
        schema = self.dtype.item_schema()
        names = [c["name"] for c in schema]
        ids: list = [None] * len(positions)
        lines: list = [None] * len(positions)
        blocks = positions // BLOCK
        for b in np.unique(blocks):
            where = np.flatnonzero(blocks == b)
            block = self._pool_block(pool, int(b), names)
            take = positions[where] - int(b) * BLOCK
            take_ok = take < len(block)
            frame = block.iloc[take[take_ok]]
            got_ids, got_lines = self.dtype._ids_and_lines(frame, schema)
            for k, w in enumerate(where[take_ok]):
                ids[w], lines[w] = got_ids[k], got_lines[k]
        if pool.generation() != self._pool_generation:
            raise RankingChanged("the pool was replaced while being read")
        return ids, lines

    def _pool_block(self, pool: Any, b: int, names: list[str]) -> pd.DataFrame:
        if self._block is not None and self._block[0] == b:
            return self._block[1]
        try:
            frame = pool.read(columns=names, offset=b * BLOCK, limit=BLOCK)
        except ConflictError as exc:
            raise RankingChanged(str(exc)) from exc
        self._block = (b, frame)
        return frame


class IndexNotReady(LabelloopError):
    """The pool's item index is still being built."""

    status = 503
