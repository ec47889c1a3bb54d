"""Training a box detector on a labels dataset, with mAP@0.5 from cross-validation.

The labels dataset names each image by its ``path`` in a managed folder and holds, in the
label column, its boxes as JSON text (``[]``: nothing to box; read with the `boxes` kind's
``parse_boxes``, checked against the image's size). The detector (``detector.BoxDetector``)
is scored by k-fold cross-validation over images: each image's boxes are detected by the
detector trained on the other folds, and all out-of-fold detections are scored at once with
pycocotools' COCOeval at IoU 0.5 (``evaluate.mean_average_precision``): ``map50`` and the
average precision per class. Each image's proposals and their features are computed once
and shared by the folds (the sliding windows' sizes come from all labeled boxes, the
classifier from the fold's images only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from ..columns import PATH_COLUMN
from ..features import resolve_path
from ..kinds.boxes import parse_boxes
from .detector import BoxDetector, Regions, read_image
from .evaluate import mean_average_precision

MIN_IMAGES = 3  # labeled images needed to train at all
MIN_CV_IMAGES = 10  # and to cross-validate
DEFAULT_FOLDS = 5


@dataclass
class LabeledImage:
    """One labeled image: its path in the folder, its size and its boxes."""

    path: str
    width: int
    height: int
    boxes: list[dict]
    pixels: np.ndarray


def labeled_images(df: pd.DataFrame, label_col: str, root: str | Path | None
                   ) -> list[LabeledImage]:
    """The labeled images of a labels dataset (skipped and unanswered rows left out)."""
    columns = ", ".join(map(str, df.columns))
    if PATH_COLUMN not in df.columns:
        raise LabelloopError(f"the labels dataset has no column {PATH_COLUMN!r} (columns: "
                             f"{columns}): give the labels of an image-boxes webapp")
    if label_col not in df.columns:
        raise LabelloopError(f"the labels dataset has no column {label_col!r} (columns: "
                             f"{columns}): set the label column")
    if root is None:
        raise LabelloopError("boxes are drawn on images: set the recipe's 'folder' input role "
                             "to the managed folder holding them")
    rows = df
    if "status" in rows.columns:
        rows = rows[~rows["status"].astype(str).str.upper().eq("SKIPPED")]
    values = rows[label_col]
    rows = rows[values.notna() & ~values.astype(str).str.strip().eq("")]
    out = []
    for k, (path, value) in enumerate(zip(rows[PATH_COLUMN], rows[label_col], strict=True)):
        try:
            full = resolve_path(str(path), str(root))
        except LabelloopError:
            raise LabelloopError(f"labels row {k + 1}: image {path!r} is not in folder "
                                 f"{str(root)!r}: set the 'folder' input role to the folder "
                                 "the webapp labeled") from None
        pixels = read_image(full)
        height, width = pixels.shape[:2]
        boxes = parse_boxes(value, f"labels row {k + 1} ({path})", width, height)
        out.append(LabeledImage(str(path), width, height, boxes, pixels))
    return out


def cross_validate(detector: BoxDetector, images: list[LabeledImage], regions: list[Regions],
                   random_state: int = 0, folds: int = DEFAULT_FOLDS) -> dict[str, Any]:
    """mAP@0.5 and per-class AP of the out-of-fold detections of every image."""
    from sklearn.model_selection import KFold

    n = len(images)
    if n < MIN_CV_IMAGES:
        return {"cv": f"skipped: {n} labeled images, cross-validation needs at least "
                      f"{MIN_CV_IMAGES}", "map50": None}
    folds = min(folds, n)
    found: list[list[dict]] = [[] for _ in range(n)]
    for train_idx, test_idx in KFold(folds, shuffle=True,
                                     random_state=random_state).split(np.arange(n)):
        fold = BoxDetector(detector.C, detector.random_state)
        fold.classes, fold.window_sizes = detector.classes, detector.window_sizes
        fold.fit_regions([regions[i] for i in train_idx])
        for i in test_idx:
            found[i] = fold.detections(fold.analyse_regions(regions[i]))
    scores = mean_average_precision(
        [{"width": im.width, "height": im.height, "boxes": im.boxes} for im in images],
        found, detector.classes)
    return {"cv": f"{folds}-fold", "folds": folds, "map50": scores["map50"],
            "per_class_ap": scores["per_class"]}


@dataclass
class DetectorTrainResult:
    """A fitted detector and what its saved model version records."""

    detector: BoxDetector
    n_images: int
    metrics: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The saved model version's metadata (``kind: boxes``, DESIGN.md)."""
        return {"kind": "boxes", "data_type": "image", "algorithm": "proposals+hog+logreg",
                "classes": list(self.detector.classes), "train_rows": self.n_images,
                "feature_columns": [PATH_COLUMN], "metrics": self.metrics,
                "notes": self.notes}


def train_detector(df: pd.DataFrame, label_col: str = "label",
                   folder_root: str | Path | None = None, cv: bool = True,
                   random_state: int = 0) -> DetectorTrainResult:
    """Fit a box detector on the labeled images of ``df``; cross-validate when they allow."""
    images = labeled_images(df, label_col, folder_root)
    if len(images) < MIN_IMAGES:
        raise LabelloopError(f"{len(images)} labeled image(s): the detector needs at least "
                             f"{MIN_IMAGES} to train; box more images first")
    boxes = [im.boxes for im in images]
    classes = sorted({b["label"] for row in boxes for b in row})
    if not classes:
        raise LabelloopError(f"the {len(images)} labeled images have no box at all: draw "
                             "boxes around some objects before training")
    detector = BoxDetector(random_state=random_state)
    detector.set_classes(classes, boxes)
    regions = [detector.regions(im.pixels, im.boxes) for im in images]
    metrics: dict[str, Any] = (cross_validate(detector, images, regions, random_state) if cv
                               else {"cv": "skipped: disabled", "map50": None})
    detector.fit_regions(regions)
    counts = pd.Series([b["label"] for row in boxes for b in row]).value_counts()
    metrics["train_rows"] = len(images)
    metrics["boxes"] = int(counts.sum())
    metrics["class_counts"] = {str(k): int(v) for k, v in counts.items()}
    notes = []
    empty = sum(1 for row in boxes if not row)
    if empty:
        notes.append(f"{empty} of the {len(images)} labeled images have no box: they teach "
                     "the detector what background looks like")
    return DetectorTrainResult(detector, len(images), metrics, notes)
