"""When to stop labeling: per-item halting values, and the model's metrics history.

Two signals tell an annotator that more labels may not pay off:

* **Halting values** (per item): where an item's uncertainty sits in the distribution of the
  current queries session. The session's queries are ranked most uncertain first, so while
  an annotator works down the queue the value falls from 1 (the model learns much from this
  item) to 0 (it learns little: better wait for the next retrain).
* **Stall warnings** (per project): the labeling-metrics step appends one row per retrain to
  a metrics dataset (labels, cross-validated AUC, contradictions between successive model
  versions). When both AUC and contradictions have stopped moving, labeling more is
  unlikely to help.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from labelloop.project import Dataset, Project

# The metrics history dataset the labeling-metrics step writes (one row per computation).
METRICS_COLUMNS: tuple[str, ...] = (
    "date", "labels", "model_version", "auc", "contradictions", "accuracy", "f1", "map50"
)
DEFAULT_METRICS_DATASET = "metrics"
STALL_WINDOW = 3
STALL_TOLERANCE = 0.01
STALL_WARNING = (
    "Labeling more is unlikely to help: over the last {window} retrains the model's AUC "
    "(entity F1 for a span tagger, mAP@0.5 for a detector) "
    "moved by {auc:.3f} and its contradictions by {contradictions:.3f} (both under "
    "{tolerance:g}). Review the labels, add features or stop here."
)
# Quantiles of the session's uncertainties: above the high one an item is clearly worth
# labeling, below the low one the model learns little from it.
HALTING_LOW_QUANTILE = 0.5
HALTING_HIGH_QUANTILE = 0.9


# --------------------------------------------------------------------------- halting values


def halting_thresholds(
    uncertainties: Any,
    low_quantile: float = HALTING_LOW_QUANTILE,
    high_quantile: float = HALTING_HIGH_QUANTILE,
) -> tuple[float, float] | None:
    """The session's ``(low, high)`` uncertainty thresholds, or None without finite values."""
    if not 0.0 <= low_quantile < high_quantile <= 1.0:
        raise ValueError(
            f"halting quantiles must satisfy 0 <= low < high <= 1, got low={low_quantile} "
            f"and high={high_quantile}"
        )
    values = np.asarray(uncertainties, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = np.quantile(values, [low_quantile, high_quantile])
    return float(low), float(high)


def halting_values(uncertainties: Any, low: float, high: float) -> np.ndarray:
    """Per-item halting values in [0, 1]: 0 at or under ``low``, 1 at or over ``high``."""
    u = np.asarray(uncertainties, dtype=np.float64)
    if high <= low:
        # A session whose uncertainties are all equal: nothing to tell items apart.
        out = np.where(u >= high, 1.0, 0.0)
    else:
        out = np.clip((u - low) / (high - low), 0.0, 1.0)
    return np.where(np.isfinite(u), out, 0.0)


def halting_value(uncertainty: float | None, low: float, high: float) -> float | None:
    """The halting value of one item (None when it has no uncertainty)."""
    if uncertainty is None or not math.isfinite(float(uncertainty)):
        return None
    return float(halting_values([uncertainty], low, high)[0])


def session_thresholds(
    queries: Dataset,
    column: str = "uncertainty",
    low_quantile: float = HALTING_LOW_QUANTILE,
    high_quantile: float = HALTING_HIGH_QUANTILE,
) -> tuple[float, float] | None:
    """Thresholds from a queries dataset's uncertainty column (None if empty or absent)."""
    if not queries.exists() or column not in queries.columns:
        return None
    # One column read; a queries dataset is stored column-wise so this stays cheap.
    values = queries.read(columns=[column])[column]
    return halting_thresholds(values.to_numpy(dtype=np.float64, na_value=np.nan),
                              low_quantile, high_quantile)


# --------------------------------------------------------------------------- contradictions


def contradictions(previous: Any, new: Any) -> float | None:
    """Share of items whose predicted class differs between two model versions."""
    a = np.asarray(previous, dtype=object).astype(str)
    b = np.asarray(new, dtype=object).astype(str)
    if a.shape != b.shape:
        raise ValueError(f"predictions differ in length: {a.shape} and {b.shape}")
    if a.size == 0:
        return None
    return float(np.mean(a != b))


def sample_pool(
    project: Project, name: str, size: int, seed: int = 0, data_type: str | None = None
) -> tuple[pd.DataFrame, str | None]:
    """A seeded sample of at most ``size`` items of the unlabeled pool ``name``.

    ``name`` is a dataset (rows) or a managed folder (a ``path`` column of image or sound
    files). Returns the rows and the folder root paths are relative to (None for a
    dataset). The same seed gives the same items, so successive computations compare
    model versions on one fixed set. A dataset is streamed: only the sample is kept.
    """
    from labeling.features import IMAGE_EXTENSIONS, SOUND_EXTENSIONS
    from labelloop.errors import LabelloopError

    rng = np.random.default_rng(seed)
    kind, handle = project.resolve_object(name)
    if kind == "folder":
        extensions = {"image": IMAGE_EXTENSIONS, "sound": SOUND_EXTENSIONS}.get(
            data_type or "", IMAGE_EXTENSIONS | SOUND_EXTENSIONS)
        files = [p for p in handle.list() if Path(p).suffix.lower() in extensions]
        if len(files) > size:
            picked = np.sort(rng.choice(len(files), size=size, replace=False))
            files = [files[i] for i in picked]
        return pd.DataFrame({"path": files}), str(handle.root)
    if kind != "dataset":
        raise LabelloopError(
            f"the unlabeled data {name!r} is a saved model: give a dataset or a managed folder"
        )
    total = handle.count()
    if total == 0:
        return pd.DataFrame(), None
    wanted = np.arange(total) if total <= size else np.sort(
        rng.choice(total, size=size, replace=False))
    parts, start = [], 0
    for chunk in handle.iter_chunks():
        lo, hi = np.searchsorted(wanted, [start, start + len(chunk)])
        if hi > lo:
            parts.append(chunk.iloc[wanted[lo:hi] - start])
        start += len(chunk)
        if hi == len(wanted):
            break
    return pd.concat(parts, ignore_index=True), None


# --------------------------------------------------------------------------- history


def _clean(value: Any) -> Any:
    """A JSON-able scalar: NaN/NA -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def history_frame(project: Project, metrics_dataset: str = DEFAULT_METRICS_DATASET
                  ) -> pd.DataFrame:
    """The metrics history as a DataFrame ordered by computation (empty if none yet)."""
    from labelloop.project import Dataset

    ds = Dataset(project, metrics_dataset)
    if not ds.exists():
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in METRICS_COLUMNS})
    df = ds.read()
    for col in METRICS_COLUMNS:
        if col not in df.columns:
            df[col] = None
    return df


def history(project: Project, metrics_dataset: str = DEFAULT_METRICS_DATASET
            ) -> dict[str, list]:
    """The metrics history as JSON-able lists, one per column (labels on the x axis)."""
    df = history_frame(project, metrics_dataset)
    return {col: [_clean(v) for v in df[col].tolist()] for col in METRICS_COLUMNS}


def _spread(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(finite) < len(values):
        return None
    return max(finite) - min(finite)


def stall(
    hist: dict[str, list],
    window: int = STALL_WINDOW,
    tolerance: float = STALL_TOLERANCE,
) -> dict[str, float] | None:
    """How far AUC and contradictions moved over the last ``window`` computations, if both
    moved less than ``tolerance``; None otherwise (or with too short a history). A span
    model has no AUC: its entity F1 stands in for it; a detector's mAP@0.5 likewise."""
    auc = list(hist.get("auc", []))[-window:]
    for stand_in in ("f1", "map50"):
        other = list(hist.get(stand_in, []))[-window:]
        if len(other) == len(auc) and all(a is None for a in auc) \
                and any(v is not None for v in other):
            auc = other
    contradictions = list(hist.get("contradictions", []))[-window:]
    if window < 2 or len(auc) < window or len(contradictions) < window:
        return None
    auc_move, contradiction_move = _spread(auc), _spread(contradictions)
    if auc_move is None or contradiction_move is None:
        return None  # a computation without AUC or without a previous model: can't tell
    if auc_move < tolerance and contradiction_move < tolerance:
        return {"auc": auc_move, "contradictions": contradiction_move}
    return None


def warnings_from_history(
    hist: dict[str, list],
    window: int = STALL_WINDOW,
    tolerance: float = STALL_TOLERANCE,
) -> list[str]:
    """The stopping warnings a metrics history calls for (an empty list when none)."""
    moved = stall(hist, window, tolerance)
    if moved is None:
        return []
    return [STALL_WARNING.format(window=window, tolerance=tolerance, **moved)]


def stopping_warnings(
    project: Project,
    metrics_dataset: str = DEFAULT_METRICS_DATASET,
    window: int = STALL_WINDOW,
    tolerance: float = STALL_TOLERANCE,
) -> list[str]:
    """Warnings for the webapp: "labeling more is unlikely to help" once metrics stall."""
    return warnings_from_history(history(project, metrics_dataset), window, tolerance)


__all__ = [
    "DEFAULT_METRICS_DATASET",
    "METRICS_COLUMNS",
    "STALL_TOLERANCE",
    "STALL_WINDOW",
    "contradictions",
    "halting_thresholds",
    "halting_value",
    "halting_values",
    "history",
    "history_frame",
    "sample_pool",
    "session_thresholds",
    "stall",
    "stopping_warnings",
    "warnings_from_history",
]
