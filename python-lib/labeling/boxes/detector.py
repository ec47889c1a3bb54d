"""The box detector: region proposals, region features, a classifier with a background
class, then non-maximum suppression per class.

``BoxDetector.fit`` takes images and their boxes. Each training image's proposals
(``proposals.propose``) are labeled by their best IoU with a true box: >= 0.5 the box's
class, < 0.3 ``background``, in between left out (neither clearly right nor wrong); the true
boxes themselves are positives too. A scikit-learn logistic regression on standardised
region features (``regions.features``) learns the classes plus background. ``analyse``
gives an image's proposals with their class probabilities; ``detect`` keeps each proposal's
most probable object class with that probability as its score, and suppresses, per class, a
box overlapping a higher-scored one by IoU > 0.3.

A saved detector holds plain values, arrays and the scikit-learn pipeline (skops stores it
without pickle; ``labeling.training.TRUSTED_TYPES`` names ``BoxDetector``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelloop.errors import LabelloopError

from .proposals import iou_matrix, propose
from .regions import features, view

BACKGROUND = "background"
POSITIVE_IOU = 0.5
BACKGROUND_IOU = 0.3
NMS_IOU = 0.3
MIN_SCORE = 0.05  # a detection scored lower is not kept at all
MAX_BACKGROUND_PER_IMAGE = 40  # background examples kept from one training image (seeded)
MAX_SIDE = 1024  # px: a larger image is analysed shrunk to this size


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB array (Pillow)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise LabelloopError(f"cannot read image {str(path)!r}: {exc}") from None


def shrink(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """An image array no larger than ``MAX_SIDE`` a side, and the scale it was shrunk by (a
    photo's thousands of pixels a side would only slow the proposals down)."""
    from PIL import Image

    height, width = pixels.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale == 1.0:
        return pixels, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize(
        size, Image.Resampling.BILINEAR))
    return small, size[0] / width


def box_array(boxes: list[dict]) -> np.ndarray:
    """``[{"x","y","w","h",...}]`` as an (N, 4) float array."""
    return np.asarray([[b["x"], b["y"], b["w"], b["h"]] for b in boxes],
                      dtype=np.float64).reshape(-1, 4)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first: a box
    overlapping a kept one by IoU > ``threshold`` is dropped."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if not len(order):
        return order
    iou = iou_matrix(boxes, boxes)
    keep: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for rank, i in enumerate(order):
        if not alive[rank]:
            continue
        keep.append(int(i))
        alive[rank + 1:] &= iou[i, order[rank + 1:]] <= threshold
    return np.asarray(keep, dtype=np.int64)


@dataclass
class Analysis:
    """One image's proposals and their class probabilities (column 0: background)."""

    boxes: np.ndarray  # (N, 4)
    proba: np.ndarray  # (N, 1 + classes)

    @property
    def object_proba(self) -> np.ndarray:
        """Per proposal: the probability that it is an object of any class."""
        return 1.0 - self.proba[:, 0] if len(self.proba) else np.empty(0)


@dataclass
class Regions:
    """One image's proposals with their features, and, for a labeled image, their training
    targets (class index, 0 background, -1 left out) and its true boxes' features."""

    boxes: np.ndarray
    features: np.ndarray
    target: np.ndarray | None = None
    truth_features: np.ndarray | None = None
    truth_target: np.ndarray | None = None


class BoxDetector:
    """A fitted box detector (see the module docstring): ``fit`` then ``detect``."""

    def __init__(self, C: float = 0.1, random_state: int = 0) -> None:  # noqa: N803
        self.C = C
        self.random_state = random_state
        self.classes: list[str] = []
        self.window_sizes = np.empty((0, 2))
        self.model = None

    # ------------------------------------------------------------------ fitting
    def set_classes(self, classes: list[str], boxes: list[list[dict]]) -> None:
        """The classes to learn, and the sliding windows' sizes from the true boxes (the
        quartiles of their widths and heights)."""
        self.classes = list(classes)
        every = box_array([b for row in boxes for b in row])
        if not len(every):
            raise LabelloopError("no box to learn from: draw some boxes before training")
        self.window_sizes = np.unique(np.round(np.quantile(every[:, 2:], [0.25, 0.5, 0.75],
                                                           axis=0)), axis=0)

    def regions(self, pixels: np.ndarray, boxes: list[dict] | None = None) -> Regions:
        """An image's proposals (in its pixels) and their features; with its true ``boxes``,
        the targets. An image larger than ``MAX_SIDE`` is analysed shrunk to it."""
        pixels, scale = shrink(pixels)
        v = view(pixels)
        proposals = propose(v.contrast, self.window_sizes * scale)
        found = Regions(proposals / scale, features(v, proposals))
        if boxes is None:
            return found
        truth = box_array(boxes) * scale
        index = {c: i + 1 for i, c in enumerate(self.classes)}
        target = np.zeros(len(proposals), dtype=np.int64)
        if len(truth) and len(proposals):
            iou = iou_matrix(proposals, truth)
            best, which = iou.max(axis=1), iou.argmax(axis=1)
            target[best >= BACKGROUND_IOU] = -1
            positive = best >= POSITIVE_IOU
            target[positive] = [index[boxes[j]["label"]] for j in which[positive]]
        found.target = target
        found.truth_features = features(v, truth)
        found.truth_target = np.asarray([index[b["label"]] for b in boxes], dtype=np.int64)
        return found

    def fit_regions(self, regions: list[Regions]) -> BoxDetector:
        """Fit the classifier on labeled images' regions (background examples capped per
        image, seeded)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(self.random_state)
        xs, ys = [], []
        for r in regions:
            target = r.target.copy()
            bg = np.nonzero(target == 0)[0]
            if len(bg) > MAX_BACKGROUND_PER_IMAGE:
                target[rng.choice(bg, len(bg) - MAX_BACKGROUND_PER_IMAGE, replace=False)] = -1
            used = target >= 0
            xs += [r.features[used], r.truth_features]
            ys += [target[used], r.truth_target]
        y = np.concatenate(ys)
        if not (y == 0).any():
            raise LabelloopError("every candidate region of the labeled images overlaps a box: "
                                 "the detector has no background to learn from; label images "
                                 "with empty areas too")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))
        model.fit(np.concatenate(xs), y)
        self.model = model
        return self

    def fit(self, images: list[np.ndarray], boxes: list[list[dict]],
            classes: list[str]) -> BoxDetector:
        """Learn from images (RGB arrays) and their boxes (``[{"x","y","w","h","label"}]``)."""
        self.set_classes(classes, boxes)
        return self.fit_regions([self.regions(px, row)
                                 for px, row in zip(images, boxes, strict=True)])

    # ------------------------------------------------------------------ inference
    def analyse_regions(self, regions: Regions) -> Analysis:
        """Probabilities of background and of each class for an image's regions."""
        if self.model is None:
            raise LabelloopError("the detector is not trained yet")
        proba = np.zeros((len(regions.boxes), 1 + len(self.classes)))
        if len(regions.boxes):
            p = self.model.predict_proba(regions.features)
            proba[:, np.asarray(self.model.classes_, dtype=np.int64)] = p
        return Analysis(regions.boxes, proba)

    def analyse(self, pixels: np.ndarray) -> Analysis:
        """An image's proposals and their probabilities of background and of each class."""
        return self.analyse_regions(self.regions(pixels))
    def detection_indices(self, analysis: Analysis, min_score: float = MIN_SCORE
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept proposals (index, object class index, score), best score first: each
        proposal's most probable object class, its probability as the score, per-class NMS."""
        if not len(analysis.boxes) or not self.classes:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        objects = analysis.proba[:, 1:]
        label, score = objects.argmax(axis=1), objects.max(axis=1)
        kept = []
        for k in range(len(self.classes)):
            idx = np.nonzero((label == k) & (score >= min_score))[0]
            kept.append(idx[nms(analysis.boxes[idx], score[idx])])
        idx = np.concatenate(kept)
        idx = idx[np.argsort(-score[idx], kind="stable")]
        return idx, label[idx], score[idx]

    def detections(self, analysis: Analysis, min_score: float = MIN_SCORE) -> list[dict]:
        """The boxes found, best score first: ``{"x","y","w","h","label","score"}``."""
        out = []
        for i, k, score in zip(*self.detection_indices(analysis, min_score), strict=True):
            x, y, w, h = analysis.boxes[i]
            out.append({"x": round(float(x), 2), "y": round(float(y), 2),
                        "w": round(float(w), 2), "h": round(float(h), 2),
                        "label": self.classes[k], "score": round(float(score), 4)})
        return out

    def detect(self, pixels: np.ndarray, min_score: float = MIN_SCORE) -> list[dict]:
        """The boxes found in one image (RGB array), with their scores."""
        return self.detections(self.analyse(pixels), min_score)
