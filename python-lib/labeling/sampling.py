"""The Query Sampler's work: score the unlabeled pool in chunks and rank it, most uncertain first.

The pool is streamed once, in chunks. Per row only compact arrays are kept for ranking
(score, position, predicted class index, confidence; never the probability matrix), plus
the row's columns when it can be written: every unlabeled row for a full ranking (that is
the queries dataset, the one copy of pool data held), only rows that can still make the
best `max_queries` otherwise (one top-k reducer, `ranking.StreamingRanker`, so memory
stays flat whatever the pool's size). The same per-chunk work runs on a Dask cluster
(`labeling.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.project import Dataset, Folder

from .columns import METADATA_COLUMNS, PATH_COLUMN, SCORE_COLUMNS
from .features import IMAGE_EXTENSIONS, SOUND_EXTENSIONS
from .ranking import Ranked, StreamingRanker
from .strategies import Strategy, StrategyRegistry
from .training import (
    check_scoring_input,
    input_columns,
    model_classes,
    score_rows,
)

Progress = Callable[..., Iterable]


@dataclass
class Pool:
    """The unlabeled items: a dataset's rows or a folder's files, read in chunks."""

    source: Dataset | Folder
    chunk_size: int
    data_type: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, Folder):
            exts = {"image": IMAGE_EXTENSIONS, "sound": SOUND_EXTENSIONS}.get(
                self.data_type or "", IMAGE_EXTENSIONS | SOUND_EXTENSIONS)
            self._files = [f for f in self.source.list() if _ext(f) in exts]
        else:
            self._files = None

    @property
    def files(self) -> list[str]:
        """A folder pool's files (relative paths), in pool order; [] for a dataset."""
        return list(self._files or [])

    @property
    def is_folder(self) -> bool:
        return self._files is not None

    def __len__(self) -> int:
        return len(self._files) if self._files is not None else self.source.count()

    @property
    def n_chunks(self) -> int:
        return -(-len(self) // self.chunk_size)

    def columns(self) -> list[str]:
        return [PATH_COLUMN] if self.is_folder else self.source.columns

    def chunks(self) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        """`(positions, frame)` per chunk; positions are stable row numbers in the pool."""
        if self._files is not None:
            for start in range(0, len(self._files), self.chunk_size):
                part = self._files[start:start + self.chunk_size]
                yield (np.arange(start, start + len(part), dtype=np.int64),
                       pd.DataFrame({PATH_COLUMN: part}))
            return
        for frame in self.source.iter_chunks(self.chunk_size, with_row=True):
            positions = frame.pop("_row").to_numpy(dtype=np.int64)
            yield positions, frame


def _ext(path: str) -> str:
    dot = path.rfind(".")
    return path[dot:].lower() if dot >= 0 else ""


class LabeledIndex:
    """Which pool rows are already labeled: by id column, by path, or by row content."""

    def __init__(self, labels: pd.DataFrame | None, pool_columns: list[str], label_col: str,
                 id_column: str | None, is_folder: bool):
        self.keys: list[str] = []
        self.hashes = np.empty(0, dtype=np.uint64)
        if labels is None or labels.empty:
            return
        # Labeled means what training uses: not SKIPPED, with a non-empty label; a skipped
        # or unlabeled item stays in the pool.
        if "status" in labels.columns:
            labels = labels[~labels["status"].astype(str).str.upper().eq("SKIPPED")]
        if label_col in labels.columns:
            values = labels[label_col]
            labels = labels[values.notna() & ~values.astype(str).str.strip().eq("")]
        if is_folder:
            self.keys = [PATH_COLUMN]
        elif id_column:
            if id_column not in pool_columns or id_column not in labels.columns:
                raise LabelloopError(f"id column {id_column!r} must exist in both the pool and "
                                     "the labels dataset")
            self.keys = [id_column]
        else:
            ignore = {label_col, f"{label_col}_id", *METADATA_COLUMNS, *SCORE_COLUMNS}
            self.keys = [c for c in pool_columns if c in labels.columns and c not in ignore]
        if not self.keys:
            raise LabelloopError("the labels dataset shares no column with the pool, so labeled "
                                 "items can't be recognised: set the id column, or leave the "
                                 "labels role empty")
        self.hashes = np.unique(row_hashes(labels, self.keys))

    @property
    def n_labeled(self) -> int:
        """How many distinct items are labeled (what a batch step's candidate count follows)."""
        return int(self.hashes.size)

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """True for the rows of `frame` that are already labeled."""
        if not self.hashes.size:
            return np.zeros(len(frame), dtype=bool)
        return np.isin(row_hashes(frame, self.keys), self.hashes)


def row_hashes(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A 64-bit hash per row of `columns`, equal for equal values whatever the dtypes."""
    norm = {}
    for c in columns:
        s = frame[c]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            norm[c] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            norm[c] = s.astype(object).where(s.notna(), None).map(
                lambda v: v if v is None or isinstance(v, str) else str(v))
    return pd.util.hash_pandas_object(pd.DataFrame(norm), index=False).to_numpy()


@dataclass
class SampleResult:
    queries: pd.DataFrame
    pool_rows: int
    excluded: int


def structured_result(ranker: StreamingRanker, keeper: Any, total: int, excluded: int,
                      model_version: Any, pool: str, items: str) -> SampleResult:
    """The queries of a structured kind's model (spans, boxes): the ranked rows with their
    `uncertainty`, `prediction` (JSON), `confidence`, `model_version` and `query_rank`.
    `pool` and `items` word the errors ("the unlabeled pool", "items of the pool")."""
    if total == 0:
        raise LabelloopError(f"{pool} is empty: nothing to score (check the "
                             "'unlabeled_samples' input)")
    ranked = ranker.result()
    if len(ranked) == 0:
        raise LabelloopError(f"every one of the {total} {items} is already labeled: "
                             "nothing left to rank")
    rows = ranked.rows if keeper is None else keeper.take(ranked.positions)
    out = rows.reset_index(drop=True)
    out["uncertainty"] = ranked.scores
    out["prediction"] = pd.Series(ranked.columns["prediction"], dtype=object)
    out["confidence"] = ranked.columns["confidence"].astype(np.float64)
    if model_version is not None:
        out["model_version"] = pd.Series([str(model_version)] * len(out), dtype=object)
    out["query_rank"] = np.arange(len(out), dtype=np.int64)
    return SampleResult(out, total, excluded)


def ranker_size(strategy: Strategy, max_queries: int, batch_size: int,
                n_labeled: int | None = None) -> int | None:
    """How many rows the top-k reducer keeps: `max_queries` and a batch step's candidates."""
    if not max_queries:
        return None
    return max(max_queries, candidates(strategy, batch_size, n_labeled))


def candidates(strategy: Strategy, batch_size: int, n_labeled: int | None = None) -> int:
    """The rows a batch strategy chooses its first `batch_size` among (0: no batch step).

    `n_labeled`: how many items are labeled (a strategy may look wider while they are few).
    """
    if strategy.batch is None or batch_size <= 0:
        return 0
    return int(np.ceil(strategy.candidates_per_pick(n_labeled) * batch_size))


@dataclass
class ChunkScorer:
    """Scores chunks of the pool into a top-k reducer: the per-chunk work of both engines.

    Each chunk gets its own generator seeded by `(seed, first position)`, so a seeded random
    strategy gives the same scores however the chunks are spread over processes.
    """

    pipeline: Any
    strategy: str
    registry: StrategyRegistry
    labeled: LabeledIndex
    seed: int
    keep_rows: bool
    total: int = 0
    excluded: int = 0

    def add(self, ranker: StreamingRanker, positions: np.ndarray, frame: pd.DataFrame,
            keeper: _KeepAll | None = None) -> None:
        self.total += len(frame)
        if frame.empty:
            return
        rng = np.random.default_rng([self.seed, int(positions[0])])
        done = self.labeled.mask(frame)
        if done.any():
            self.excluded += int(done.sum())
            keep = ~done
            frame, positions = frame[keep], positions[keep]
        if frame.empty:
            return
        scored = _score(self.pipeline, frame, self.strategy, self.registry, rng, self.seed)
        ranker.add(scored["uncertainty"], positions, rows=frame if self.keep_rows else None,
                   prediction=scored["prediction"], confidence=scored["confidence"])
        if keeper is not None:
            keeper.add(frame, positions, scored["uncertainty"])


def prepare(pipeline: Any, pool: Pool, strategy: str, registry: StrategyRegistry,
            labels: pd.DataFrame | None, label_col: str, id_column: str | None
            ) -> tuple[Strategy, np.ndarray, LabeledIndex]:
    """Checks before any scoring (clear errors first); the model's classes and labeled items."""
    strat = registry.get(strategy)  # unknown strategy: a clear error before any work
    # Regressor, one-class model, columns the pool lacks: refused before reading the pool
    # (model_classes alone would call a regressor "not fitted").
    check_scoring_input(pipeline, pd.DataFrame(columns=pool.columns()))
    _check_width(pipeline, pool)
    classes = np.asarray([str(c) for c in model_classes(pipeline)], dtype=object)
    labeled = LabeledIndex(labels, pool.columns(), label_col, id_column, pool.is_folder)
    return strat, classes, labeled


def sample_queries(pipeline: Any, pool: Pool, strategy: str, registry: StrategyRegistry,
                   labels: pd.DataFrame | None = None, label_col: str = "label",
                   id_column: str | None = None, max_queries: int = 0, seed: int = 0,
                   progress: Progress | None = None, batch_size: int = 20,
                   model_version: str | None = None) -> SampleResult:
    """Rank the pool: its columns plus uncertainty, prediction and confidence, best first."""
    strat, classes, labeled = prepare(pipeline, pool, strategy, registry, labels, label_col,
                                      id_column)
    k = ranker_size(strat, max_queries, batch_size, labeled.n_labeled)
    # The pool is read once: with a cap, only the rows that can still make the cut are kept
    # as they stream by (with their scores, in the one top-k reducer); a full ranking keeps
    # every unlabeled row (the queries to write).
    ranker = StreamingRanker(k=k)
    keeper = None if k else _KeepAll(len(pool))
    scorer = ChunkScorer(pipeline, strategy, registry, labeled, seed, keep_rows=bool(k))
    progress = progress or (lambda it, *a, **k: it)
    for positions, frame in progress(pool.chunks(), "scoring", total=pool.n_chunks):
        scorer.add(ranker, positions, frame, keeper)
    ranked = ranker.result()
    rows = None if len(ranked) == 0 else (
        ranked.rows if keeper is None else keeper.take(ranked.positions))
    return finish(ranked, rows, scorer.total, scorer.excluded, classes, pipeline, strat,
                  max_queries, batch_size, seed, model_version, labeled.n_labeled)


def finish(ranked: Ranked, rows: pd.DataFrame | None, total: int, excluded: int,
           classes: np.ndarray, pipeline: Any, strategy: Strategy, max_queries: int,
           batch_size: int, seed: int, model_version: str | None,
           n_labeled: int | None = None) -> SampleResult:
    """The queries from a ranking and its rows: a batch step's picks first, cut, scored."""
    if total == 0:
        raise LabelloopError("the unlabeled pool is empty: nothing to score (check the "
                             "'unlabeled_samples' input)")
    if len(ranked) == 0 or rows is None:
        raise LabelloopError(f"every one of the {total} items of the pool is already labeled: "
                             "nothing left to rank")
    scores = ranked.scores
    prediction = ranked.columns["prediction"]
    confidence = ranked.columns["confidence"]
    n_cand = min(len(ranked), candidates(strategy, batch_size, n_labeled))
    if n_cand:
        first = batch_order(pipeline, strategy, rows.iloc[:n_cand], scores[:n_cand],
                            batch_size, np.random.default_rng(seed))
        order = np.concatenate([first, np.setdiff1d(np.arange(len(ranked)), first)])
        rows = rows.take(order).reset_index(drop=True)
        scores, prediction, confidence = scores[order], prediction[order], confidence[order]
    if max_queries:
        rows = rows.iloc[:max_queries]
        scores, prediction = scores[:max_queries], prediction[:max_queries]
        confidence = confidence[:max_queries]
    out = rows.reset_index(drop=True)
    out["uncertainty"] = scores
    out["prediction"] = pd.Series(classes[prediction], dtype=object)
    out["confidence"] = confidence.astype(np.float64)
    if model_version is not None:
        out["model_version"] = pd.Series([str(model_version)] * len(out), dtype=object)
    # The serving order: the queue follows it (a batch step's picks come first although
    # the most uncertain row need not be one of them); `uncertainty` stays the true score.
    out["query_rank"] = np.arange(len(out), dtype=np.int64)
    return SampleResult(out, total, excluded)


def _check_width(pipeline: Any, pool: Pool) -> None:
    """A model fitted without column names reads every pool column: the count must match."""
    if pool.is_folder or input_columns(pipeline) is not None:
        return
    expected = getattr(pipeline, "n_features_in_", None)
    columns = pool.columns()
    if expected is not None and expected != len(columns):
        raise LabelloopError(
            f"the model expects {expected} input columns and the pool has {len(columns)} "
            f"({', '.join(columns)}): score a dataset like the one it was trained on, or "
            "retrain it with the Train classifier recipe")


def _score(pipeline: Any, frame: pd.DataFrame, strategy: str, registry: StrategyRegistry,
           rng: np.random.Generator, seed: int) -> dict[str, np.ndarray]:
    try:
        return score_rows(pipeline, frame, strategy, registry, rng=rng, seed=seed)
    except LabelloopError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        # scikit-learn's words for "these rows are not what I was trained on"
        raise LabelloopError(
            f"the model cannot score the pool's rows ({type(exc).__name__}: {exc}): it was "
            "trained on other data; retrain it on labels of this pool with the Train "
            "classifier recipe") from exc


class _KeepAll:
    """Every unlabeled row's columns, in pool order, to be written in rank order.

    This is the one copy of pool data the Query Sampler holds (the queries it writes).
    Numeric columns are copied into arrays sized for the whole pool as chunks stream by
    (no per-chunk allocations to fragment the heap); other columns (text, nullable ints,
    dates with a zone) are kept as per-chunk pieces. At the end each output column is put
    in rank order and its source dropped, so the peak is this copy plus one column.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows = 0
        self.names: list[str] = []
        self.dense: dict[str, np.ndarray] = {}
        self.pieces: dict[str, list[pd.Series]] = {}
        self.positions: list[np.ndarray] = []

    @staticmethod
    def _is_dense(series: pd.Series) -> bool:
        return isinstance(series.dtype, np.dtype) and series.dtype.kind in "biufcmM"

    def add(self, frame: pd.DataFrame, positions: np.ndarray, scores: np.ndarray) -> None:
        n, end = self.rows, self.rows + len(frame)
        for col in frame.columns:
            series = frame[col]
            if col not in self.dense and col not in self.pieces:
                self.names.append(col)
                if self._is_dense(series):
                    self.dense[col] = np.empty(self.capacity, dtype=series.dtype)
                else:
                    self.pieces[col] = []
            target = self.dense.get(col)
            if target is not None:
                if series.dtype == target.dtype and end <= target.shape[0]:
                    target[n:end] = series.to_numpy()
                    continue
                # Its type changed between chunks (int64, then Int64 with a missing value),
                # or the pool grew: this column continues as pieces.
                self.pieces[col] = [pd.Series(target[:n])]
                del self.dense[col]
            self.pieces[col].append(series.copy(deep=True))
        self.positions.append(positions)
        self.rows = end

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        """The kept rows at `positions`, in that order (each kept row exactly once)."""
        kept = np.concatenate(self.positions)
        rows = pd.Index(kept).get_indexer(positions)
        if (rows < 0).any() or len(rows) != len(kept):
            raise LabelloopError("internal error: the ranking and the kept rows differ")
        out: dict[str, pd.Series] = {}
        for col in self.names:
            if col in self.dense:
                values = self.dense.pop(col)[: self.rows].take(rows)
                out[col] = pd.Series(values, dtype=object, copy=False) \
                    if values.dtype == object else pd.Series(values, copy=False)
                continue
            pieces = self.pieces.pop(col)
            # concat gives the pieces' common type (int64 + nullable Int64 -> Int64)
            whole = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 \
                else pieces[0].reset_index(drop=True)
            del pieces
            out[col] = whole.take(rows).reset_index(drop=True)
        return pd.DataFrame(out, copy=False)  # copy=False: no consolidating 2nd copy


def batch_order(pipeline: Any, strategy: Strategy, rows: pd.DataFrame, scores: np.ndarray,
                k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into `rows` (a batch strategy's candidates) of the `k` that go first."""
    return strategy.batch(model_space(pipeline, rows), np.asarray(scores, dtype=np.float64),
                          k, rng)


def model_space(pipeline: Any, rows: pd.DataFrame) -> Any:
    """`rows` as the model's last step sees them: its input features after the pipeline's
    own preprocessing (pixels and histograms scaled, TF-IDF, one-hot...); a model that is
    not a scikit-learn Pipeline of several steps gives its class probabilities instead."""
    rows = check_scoring_input(pipeline, rows)
    steps = getattr(pipeline, "steps", None)
    if steps and len(steps) > 1:
        return pipeline[:-1].transform(rows)
    return pipeline.predict_proba(rows)
