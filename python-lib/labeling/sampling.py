"""The Query Sampler's work: score the unlabeled pool in chunks and rank it, most uncertain first.

The pool is streamed twice: once to score (only compact per-row arrays are kept: score,
position, predicted class index, confidence; never the probability matrix), once to gather
the ranked rows' columns straight into the output arrays (the only copy of pool data held).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import ConflictError, LabelloopError
from labelloop.project import Dataset, Folder

from .features import IMAGE_EXTENSIONS, SOUND_EXTENSIONS
from .strategies import StrategyRegistry, StreamingRanker, top_k
from .training import (
    METADATA_COLUMNS,
    PATH_COLUMN,
    SCORE_COLUMNS,
    check_scoring_input,
    input_columns,
    model_classes,
    score_rows,
)

Progress = Callable[..., Iterable]


def session_variable(queries_dataset: str) -> str:
    """The project variable counting Query Sampler runs for a queries dataset."""
    return f"{queries_dataset}_session"


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


# Rows converted and stored at a time when the queries are written.
WRITE_ROWS = 100_000


def write_in_pieces(dataset: Dataset, frame: pd.DataFrame, conn: Any,
                    rows: int = WRITE_ROWS) -> None:
    """Replace `dataset` with `frame`, stored a piece at a time within `conn`'s transaction.

    Readers still see the old rows or the new ones, never a mix; the store's conversion
    copies are one piece big instead of a whole 1M-row frame.
    """
    if len(frame) <= rows:
        dataset.write(frame, conn=conn)
        return
    dataset.write(frame.iloc[:rows], conn=conn, storage="columns")
    for start in range(rows, len(frame), rows):
        dataset.append(frame.iloc[start:start + rows], conn=conn)


@dataclass
class SampleResult:
    queries: pd.DataFrame
    pool_rows: int
    excluded: int


def sample_queries(pipeline: Any, pool: Pool, strategy: str, registry: StrategyRegistry,
                   labels: pd.DataFrame | None = None, label_col: str = "label",
                   id_column: str | None = None, max_queries: int = 0, seed: int = 0,
                   progress: Progress | None = None) -> SampleResult:
    """Rank the pool: its columns plus uncertainty, prediction and confidence, best first."""
    registry.get(strategy)  # unknown strategy: a clear error before any work
    # Regressor, one-class model, columns the pool lacks: refused before reading the pool
    # (model_classes alone would call a regressor "not fitted").
    check_scoring_input(pipeline, pd.DataFrame(columns=pool.columns()))
    _check_width(pipeline, pool)
    classes = np.asarray([str(c) for c in model_classes(pipeline)], dtype=object)
    labeled = LabeledIndex(labels, pool.columns(), label_col, id_column, pool.is_folder)
    rng = np.random.default_rng(seed)
    ranker = StreamingRanker(k=max_queries or None)
    # With a cap, the rows that can still make the cut are kept as they stream by, so the
    # pool is read once; a full ranking needs every row's columns: a second pass gathers them.
    candidates = _Candidates(max_queries) if max_queries else None
    progress = progress or (lambda it, *a, **k: it)
    total, excluded = 0, 0
    for positions, frame in progress(pool.chunks(), "scoring", total=pool.n_chunks):
        total += len(frame)
        done = labeled.mask(frame)
        if done.any():
            excluded += int(done.sum())
            keep = ~done
            frame, positions = frame[keep], positions[keep]
        if frame.empty:
            continue
        scored = _score(pipeline, frame, strategy, registry, rng, seed)
        ranker.add(scored["uncertainty"], positions, prediction=scored["prediction"],
                   confidence=scored["confidence"])
        if candidates is not None:
            candidates.add(frame, positions, scored["uncertainty"])
    if total == 0:
        raise LabelloopError("the unlabeled pool is empty: nothing to score (check the "
                             "'unlabeled_samples' input)")
    ranked = ranker.result()
    if len(ranked) == 0:
        raise LabelloopError(f"every one of the {total} items of the pool is already labeled: "
                             "nothing left to rank")
    if candidates is not None:
        out = candidates.take(ranked.positions)
    else:
        out = _gather(pool, ranked.positions, progress)
    out["uncertainty"] = ranked.scores
    out["prediction"] = pd.Series(classes[ranked.columns["prediction"]], dtype=object)
    out["confidence"] = ranked.columns["confidence"].astype(np.float64)
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


class _Candidates:
    """Pool rows that may still be among the best `k`, with their scores: O(k + chunk) rows.

    Only a chunk's own best `k` can be in the overall best `k` (same order as the ranker:
    score descending, position ascending), and the union is cut back to its best `k`
    whenever it grows past a few times `k`.
    """

    def __init__(self, k: int):
        self.k = k
        self.frames: list[pd.DataFrame] = []
        self.positions: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.rows = 0

    def add(self, frame: pd.DataFrame, positions: np.ndarray, scores: np.ndarray) -> None:
        best = top_k(scores, self.k, ids=positions)
        self.frames.append(frame.iloc[best])
        self.positions.append(positions[best])
        self.scores.append(np.asarray(scores, dtype=np.float64)[best])
        self.rows += best.shape[0]
        if self.rows > 4 * self.k:
            frame, positions, scores = self._concat()
            best = top_k(scores, self.k, ids=positions)
            self.frames, self.positions = [frame.iloc[best]], [positions[best]]
            self.scores, self.rows = [scores[best]], best.shape[0]

    def _concat(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        frame = pd.concat(self.frames, ignore_index=True) if len(self.frames) > 1 \
            else self.frames[0].reset_index(drop=True)
        return frame, np.concatenate(self.positions), np.concatenate(self.scores)

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        """The kept rows at `positions`, in that order."""
        frame, kept, _ = self._concat()
        rows = pd.Index(kept).get_indexer(positions)
        if (rows < 0).any():  # cannot happen: the ranker and this keep the same best k
            raise LabelloopError("internal error: a ranked row was not kept")
        return frame.take(rows).reset_index(drop=True)


def _gather(pool: Pool, positions: np.ndarray, progress: Progress) -> pd.DataFrame:
    """The pool columns of the rows at `positions`, in that order (one pass over the pool)."""
    n = positions.shape[0]
    # rank_of[position] -> output row (-1: not wanted); a direct lookup per chunk row is
    # several times faster than a binary search over a million positions.
    rank_of = np.full(int(positions.max()) + 1, -1, dtype=np.int64)
    rank_of[positions] = np.arange(n, dtype=np.int64)
    arrays: dict[str, Any] = {}
    found = 0
    for chunk_pos, frame in progress(pool.chunks(), "gathering", total=pool.n_chunks):
        inside = chunk_pos < rank_of.shape[0]
        ranks = np.full(chunk_pos.shape[0], -1, dtype=np.int64)
        ranks[inside] = rank_of[chunk_pos[inside]]
        hit = ranks >= 0
        if not hit.any():
            continue
        ranks = ranks[hit]
        found += ranks.shape[0]
        for col in frame.columns:
            values = _values(frame[col], hit)
            target = arrays.get(col)
            if target is None:
                target = arrays[col] = _missing_like(values, n)
            elif values.dtype != target.dtype:
                # e.g. a bigint column read as int64 in one chunk, nullable Int64 (it has
                # missing values) in another: both become their common type, never object.
                common = _common_dtype(target, values)
                target = arrays[col] = _as_dtype(target, common)
                values = _as_dtype(values, common)
            target[ranks] = values
    if found != n:
        raise ConflictError("the unlabeled pool changed while it was being scored: run the "
                            "Query Sampler again")
    # No copy of the gathered columns; object columns stay object (as the store reads
    # them), not inferred as pandas strings.
    return pd.DataFrame({col: pd.Series(values, dtype=object, copy=False)
                         if isinstance(values, np.ndarray) and values.dtype == object else values
                         for col, values in arrays.items()}, copy=False)


def _values(series: pd.Series, rows: np.ndarray) -> Any:
    """The series' values at boolean `rows`: a numpy array, or an extension array whose
    dtype (nullable int / boolean, tz-aware date) must survive into the queries."""
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()[rows]
    return series.array[rows]


def _missing_like(values: Any, n: int) -> Any:
    """An array of `n` missing (or uninitialised numeric) values of `values`' type."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "biufcmM":
            return np.empty(n, dtype=values.dtype)  # every slot is filled by the gather
        return np.full(n, None, dtype=object)
    return values.take(np.full(n, -1, dtype=np.intp), allow_fill=True)


def _common_dtype(a: Any, b: Any) -> Any:
    return pd.concat([pd.Series(a[:0]), pd.Series(b[:0])]).dtype


def _as_dtype(values: Any, dtype: Any) -> Any:
    converted = pd.Series(values).astype(dtype)
    return converted.to_numpy() if isinstance(dtype, np.dtype) else converted.array
