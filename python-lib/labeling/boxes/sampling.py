"""The Query Sampler for box detectors: rank images by detection uncertainty, with the
detector's boxes as suggestions.

For each image the detector gives its proposals' probabilities of background and of each
class (``detector.Analysis``). Its *boxes* are its suggestions: per-class NMS over the
proposals whose most probable object class has probability >= ``SUGGEST_MIN``
(``BoxDetector.detections``), each with that probability as its score. Two quantities
follow:

- a box's uncertainty, 1 - its top class probability;
- the *near-threshold* term: how many proposals sit near the object / background decision,
  ``1 - prod_i (1 - w_i)`` with ``w_i = max(0, 1 - |p_i - 0.5| / 0.25)`` and ``p_i`` the
  proposal's object probability (1 - P(background)). It is 0 when every proposal is
  clearly an object or clearly background, about 1 as soon as one sits at 0.5, and grows
  with their number: an image holding objects the model half-sees, which its boxes alone
  miss (a half-seen object is often not a box at all), comes first.

The strategies (higher: ask first):

- ``box_max``: the largest box uncertainty (reduced with the `boxes` kind's item score,
  `labeling.kinds.AnnotationKind.item_scores`) + the near-threshold term;
- ``box_mean``: the mean box uncertainty + the near-threshold term;
- ``margin``: the largest of 1 - (p1 - p2) over the boxes, p1 and p2 their two most probable
  classes (background included) + the near-threshold term;
- ``near_threshold``: the near-threshold term alone;
- ``random``: the baseline (seeded).

An image without boxes scores its near-threshold term only. ``confidence`` is the model's
certainty about its least sure box or candidate: min(the boxes' scores, 1 - the
near-threshold term), 1 for an image with neither. ``prediction`` is the JSON list of the
boxes ``{"x","y","w","h","label","score"}``, best first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from ..columns import PATH_COLUMN
from ..features import resolve_path
from ..kinds.boxes import BoxesKind
from ..ranking import StreamingRanker
from ..sampling import LabeledIndex, Pool, Progress, SampleResult, _KeepAll, structured_result
from ..strategies import StrategyRegistry
from .detector import Analysis, BoxDetector, read_image

SUGGEST_MIN = 0.3  # a box scored lower is not suggested (the page's slider hides more)
BAND = 0.25  # how far from 0.5 an object probability still counts as near the threshold
IMAGES_PER_STEP = 64  # images scored between two progress updates
# `box_max` reduces box uncertainties as the `boxes` kind says (its item score needs no
# webapp settings).
BOXES_KIND = BoxesKind(None)


@dataclass
class Scored:
    """Many images' analyses in flat arrays: each image's boxes one after another."""

    analyses: list[Analysis]
    boxes: list[list[dict]]  # per image: its suggested boxes with scores

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(b) for b in self.boxes], dtype=np.int64)

    def box_values(self, per_box: Callable[[dict], float]) -> np.ndarray:
        return np.asarray([per_box(b) for row in self.boxes for b in row], dtype=np.float64)


def near_threshold(scored: Scored, rng: np.random.Generator | None = None) -> np.ndarray:
    """Per image: 1 - prod over proposals of (1 - w), w the closeness of the proposal's object
    probability to 0.5 (1 at 0.5, 0 beyond ``BAND``)."""
    out = np.zeros(len(scored.analyses))
    for i, a in enumerate(scored.analyses):
        w = np.clip(1.0 - np.abs(a.object_proba - 0.5) / BAND, 0.0, 1.0)
        out[i] = 1.0 - float(np.prod(1.0 - w)) if len(w) else 0.0
    return out


def _per_image(values: np.ndarray, lengths: np.ndarray, how: str) -> np.ndarray:
    if how == "max":
        return BOXES_KIND.item_scores(values, lengths)
    out = np.zeros(len(lengths))
    has = lengths > 0
    if has.any():
        starts = (np.cumsum(lengths) - lengths)[has]
        out[has] = np.add.reduceat(values, starts) / lengths[has]
    return out


def box_max(scored: Scored, rng: np.random.Generator | None = None) -> np.ndarray:
    """The least sure box's uncertainty (1 - top class probability) + the near-threshold term."""
    u = scored.box_values(lambda b: 1.0 - b["top"])
    return _per_image(u, scored.lengths, "max") + near_threshold(scored)


def box_mean(scored: Scored, rng: np.random.Generator | None = None) -> np.ndarray:
    """The mean box uncertainty (1 - top class probability) + the near-threshold term."""
    u = scored.box_values(lambda b: 1.0 - b["top"])
    return _per_image(u, scored.lengths, "mean") + near_threshold(scored)


def box_margin(scored: Scored, rng: np.random.Generator | None = None) -> np.ndarray:
    """The smallest gap between a box's two most probable classes, as 1 - gap, + the
    near-threshold term."""
    u = scored.box_values(lambda b: 1.0 - b["margin"])
    return _per_image(u, scored.lengths, "max") + near_threshold(scored)


def random_images(scored: Scored, rng: np.random.Generator | None = None) -> np.ndarray:
    """Random scores in [0, 1): the passive-learning baseline (seeded)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.random(len(scored.analyses))


def box_strategies() -> StrategyRegistry:
    """The box strategies (see the module docstring)."""
    registry = StrategyRegistry()
    registry.register("box_max", box_max, label="Least sure box (boxes)",
                      description="1 - the top class probability of the image's least sure "
                                  "box, plus the proposals near the object threshold")
    registry.register("box_mean", box_mean, label="Mean box uncertainty (boxes)",
                      description="1 - the top class probability averaged over the image's "
                                  "boxes, plus the proposals near the object threshold")
    registry.register("margin", box_margin, label="Smallest margin",
                      description="1 - the smallest gap between a box's two best classes, "
                                  "plus the proposals near the object threshold")
    registry.register("near_threshold", near_threshold, label="Near the threshold (boxes)",
                      description="how many proposals sit near the object / background "
                                  "decision")
    registry.register("random", random_images, label="Random",
                      description="Random order (seeded): the passive-learning baseline")
    return registry


def suggested_boxes(detector: BoxDetector, analysis: Analysis) -> list[dict]:
    """The image's boxes with scores, each also with its top class probability (background
    included) and the margin between its two best classes (for the strategies)."""
    idx, _, _ = detector.detection_indices(analysis, SUGGEST_MIN)
    boxes = detector.detections(analysis, SUGGEST_MIN)
    for b, i in zip(boxes, idx, strict=True):
        p = np.sort(analysis.proba[i])
        b["top"], b["margin"] = float(p[-1]), float(p[-1] - p[-2])
    return boxes


def score_analyses(detector: BoxDetector, analyses: list[Analysis], strategy: str,
                   registry: StrategyRegistry | None = None,
                   rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Per image: ``uncertainty``, ``prediction`` (JSON boxes with scores), ``confidence``."""
    registry = registry or box_strategies()
    scored = Scored(analyses, [suggested_boxes(detector, a) for a in analyses])
    scores = np.asarray(registry.get(strategy).func(scored, rng), dtype=np.float64)
    near = near_threshold(scored)
    predictions = np.empty(len(analyses), dtype=object)
    confidence = np.empty(len(analyses), dtype=np.float64)
    for i, boxes in enumerate(scored.boxes):
        shown = [{k: b[k] for k in ("x", "y", "w", "h", "label", "score")} for b in boxes]
        predictions[i] = json.dumps(shown, separators=(",", ":"))
        confidence[i] = min([b["score"] for b in boxes] + [1.0 - near[i]])
    return {"uncertainty": scores, "prediction": predictions, "confidence": confidence}


def sample_box_queries(detector: BoxDetector, pool: Pool, strategy: str, root: str | Path,
                       labels: pd.DataFrame | None = None, label_col: str = "label",
                       max_queries: int = 0, seed: int = 0,
                       progress: Progress | None = None, model_version: str | None = None,
                       registry: StrategyRegistry | None = None, **_: Any) -> SampleResult:
    """Rank the folder's images: ``path`` plus uncertainty, prediction (JSON boxes with
    scores), confidence, model_version and query_rank, most uncertain first."""
    registry = registry or box_strategies()
    registry.get(strategy)  # unknown strategy: a clear error before any work
    if not pool.is_folder:
        raise LabelloopError("a detector scores images: give the Query Sampler the managed "
                             "folder of images, not a dataset")
    labeled = LabeledIndex(labels, pool.columns(), label_col, None, True)
    k = max_queries or None
    ranker = StreamingRanker(k=k)
    keeper = None if k else _KeepAll(len(pool))
    total = excluded = 0
    progress = progress or (lambda it, *a, **kw: it)
    steps = _steps(pool, labeled)
    for positions, frame in progress(steps, "scoring", total=len(steps)):
        total += int(frame.attrs.get("pool_rows", len(frame)))
        excluded += int(frame.attrs.get("excluded", 0))
        if frame.empty:
            continue
        rng = np.random.default_rng([seed, int(positions[0])])
        analyses = [detector.analyse(read_image(resolve_path(str(p), str(root))))
                    for p in frame[PATH_COLUMN]]
        scored = score_analyses(detector, analyses, strategy, registry, rng)
        ranker.add(scored["uncertainty"], positions, rows=frame if k else None,
                   prediction=scored["prediction"], confidence=scored["confidence"])
        if keeper is not None:
            keeper.add(frame, positions, scored["uncertainty"])
    return structured_result(ranker, keeper, total, excluded, model_version,
                             "the folder of images", "images of the folder")


def _steps(pool: Pool, labeled: LabeledIndex) -> list[tuple[np.ndarray, pd.DataFrame]]:
    """The pool's unlabeled images in steps of ``IMAGES_PER_STEP`` (each frame records how
    many pool rows it stands for and how many of them were labeled)."""
    out = []
    for positions, frame in pool.chunks():
        done = labeled.mask(frame)
        first = True
        frame, positions = frame[~done].reset_index(drop=True), positions[~done]
        for s in range(0, max(len(frame), 1), IMAGES_PER_STEP):
            part = frame.iloc[s:s + IMAGES_PER_STEP].reset_index(drop=True)
            part.attrs = {"pool_rows": len(done) if first else 0,
                          "excluded": int(done.sum()) if first else 0}
            out.append((positions[s:s + IMAGES_PER_STEP], part))
            first = False
    return out


def predict_boxes(detector: BoxDetector, rows: pd.DataFrame, root: str | Path) -> np.ndarray:
    """Each image's predicted objects, for comparing two versions (labeling-metrics'
    contradictions): the sorted classes of its suggested boxes, as text."""
    out = []
    for path in rows[PATH_COLUMN]:
        image = read_image(resolve_path(str(path), str(root)))
        boxes = detector.detections(detector.analyse(image), SUGGEST_MIN)
        out.append(",".join(sorted(b["label"] for b in boxes if b["score"] >= 0.5)))
    return np.asarray(out, dtype=object)
