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
from .regions import ImageView, features, view

BACKGROUND = "background"
POSITIVE_IOU = 0.5
BACKGROUND_IOU = 0.3
NMS_IOU = 0.3
MIN_SCORE = 0.05  # a detection scored lower is not kept at all
MAX_BACKGROUND_PER_IMAGE = 40  # background examples kept from one training image (seeded)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB array (Pillow)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise LabelloopError(f"cannot read image {str(path)!r}: {exc}") from None


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


class BoxDetector:
    """A fitted box detector (see the module docstring): ``fit`` then ``detect``."""

    def __init__(self, C: float = 0.1, random_state: int = 0) -> None:  # noqa: N803
        self.C = C
        self.random_state = random_state
        self.classes: list[str] = []
        self.window_sizes = np.empty((0, 2))
        self.model = None

    # ------------------------------------------------------------------ fitting
    def training_regions(self, v: ImageView, truth: np.ndarray, labels: list[str],
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An image's training examples: (features, class index; 0 = background)."""
        boxes = propose(v.contrast, self.window_sizes)
        target = np.full(len(boxes), -1, dtype=np.int64)
        index = {c: i + 1 for i, c in enumerate(self.classes)}
        if len(truth) and len(boxes):
            iou = iou_matrix(boxes, truth)
            best, which = iou.max(axis=1), iou.argmax(axis=1)
            target[best >= POSITIVE_IOU] = [index[labels[j]] for j in which[best >= POSITIVE_IOU]]
            target[best < BACKGROUND_IOU] = 0
        else:
            target[:] = 0
        bg = np.nonzero(target == 0)[0]
        if len(bg) > MAX_BACKGROUND_PER_IMAGE:
            drop = rng.choice(bg, len(bg) - MAX_BACKGROUND_PER_IMAGE, replace=False)
            target[drop] = -1
        used = target >= 0
        boxes = np.concatenate([boxes[used], truth])
        y = np.concatenate([target[used], [index[c] for c in labels]]).astype(np.int64)
        return features(v, boxes), y

    def fit(self, images: list[np.ndarray], boxes: list[list[dict]],
            classes: list[str]) -> BoxDetector:
        """Learn from images (RGB arrays) and their boxes (``[{"x","y","w","h","label"}]``)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.classes = list(classes)
        every = box_array([b for row in boxes for b in row])
        if not len(every):
            raise LabelloopError("no box to learn from: draw some boxes before training")
        # The sliding windows take the typical object sizes: the quartiles of width, height.
        self.window_sizes = np.unique(np.round(np.quantile(every[:, 2:], [0.25, 0.5, 0.75],
                                                           axis=0)), axis=0)
        rng = np.random.default_rng(self.random_state)
        xs, ys = [], []
        for pixels, row in zip(images, boxes, strict=True):
            x, y = self.training_regions(view(pixels), box_array(row),
                                         [b["label"] for b in row], rng)
            xs.append(x)
            ys.append(y)
        y = np.concatenate(ys)
        model = make_pipeline(StandardScaler(),
                              LogisticRegression(C=self.C, max_iter=2000))
        model.fit(np.concatenate(xs), y)
        self.model = model
        return self

    # ------------------------------------------------------------------ inference
    def analyse(self, pixels: np.ndarray) -> Analysis:
        """An image's proposals and their probabilities of background and of each class."""
        if self.model is None:
            raise LabelloopError("the detector is not trained yet")
        v = view(pixels)
        boxes = propose(v.contrast, self.window_sizes)
        proba = np.zeros((len(boxes), 1 + len(self.classes)))
        if len(boxes):
            p = self.model.predict_proba(features(v, boxes))
            proba[:, np.asarray(self.model.classes_, dtype=np.int64)] = p
        return Analysis(boxes, proba)

    def detections(self, analysis: Analysis, min_score: float = MIN_SCORE) -> list[dict]:
        """The boxes found: each proposal's best object class, its probability as the score,
        per-class NMS; sorted best score first."""
        if not len(analysis.boxes) or not self.classes:
            return []
        objects = analysis.proba[:, 1:]
        label = objects.argmax(axis=1)
        score = objects.max(axis=1)
        out = []
        for k, name in enumerate(self.classes):
            idx = np.nonzero((label == k) & (score >= min_score))[0]
            for i in idx[nms(analysis.boxes[idx], score[idx])]:
                x, y, w, h = analysis.boxes[i]
                out.append({"x": round(float(x), 2), "y": round(float(y), 2),
                            "w": round(float(w), 2), "h": round(float(h), 2),
                            "label": name, "score": round(float(score[i]), 4)})
        out.sort(key=lambda b: -b["score"])
        return out

    def detect(self, pixels: np.ndarray, min_score: float = MIN_SCORE) -> list[dict]:
        """The boxes found in one image (RGB array), with their scores."""
        return self.detections(self.analyse(pixels), min_score)
