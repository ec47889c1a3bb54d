"""Detection quality with pycocotools: mAP at IoU 0.5 and average precision per class.

Images are dicts with ``width``, ``height`` and ``boxes`` (``[{"x","y","w","h","label"}]``,
pixels, origin top-left) as the scene generator and the labels give them; detections are
the detector's boxes with a ``score``. COCOeval runs with one IoU threshold (0.5), all
areas and up to 100 detections per image; a class without any true box has no AP and is
left out of the mean, as COCOeval does.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np


def coco_dict(images: list[dict], classes: list[str]) -> dict:
    """Images and their boxes as a COCO detection dict (category ids 1.. in ``classes`` order,
    image ids 1.. in list order)."""
    category = {name: i + 1 for i, name in enumerate(classes)}
    out_images, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        entry = {"id": image_id, "width": image["width"], "height": image["height"]}
        if "path" in image:
            entry["file_name"] = image["path"]
        out_images.append(entry)
        for box in image["boxes"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category[box["label"]],
                                "bbox": [box["x"], box["y"], box["w"], box["h"]],
                                "area": box["w"] * box["h"], "iscrowd": 0})
    return {"images": out_images, "annotations": annotations,
            "categories": [{"id": i, "name": name} for name, i in category.items()]}


def mean_average_precision(images: list[dict], detections: list[list[dict]],
                           classes: list[str]) -> dict[str, Any]:
    """``{"map50", "per_class": {class: AP or None}}`` of ``detections`` against ``images``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = coco_dict(images, classes)
    per_class: dict[str, float | None] = {c: None for c in classes}
    if not truth["annotations"]:
        return {"map50": None, "per_class": per_class}
    category = {name: i + 1 for i, name in enumerate(classes)}
    results = [{"image_id": i, "category_id": category[d["label"]],
                "bbox": [d["x"], d["y"], d["w"], d["h"]], "score": float(d["score"])}
               for i, dets in enumerate(detections, start=1) for d in dets
               if d["label"] in category]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it works
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": truth["images"], "annotations": [],
                          "categories": truth["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    # precision: [iou thresholds, recall points, classes, areas, max detections]
    precision = ev.eval["precision"][0, :, :, 0, -1]
    aps = []
    for k, name in enumerate(classes):
        p = precision[:, k]
        if (p > -1).any():
            per_class[name] = float(p[p > -1].mean())
            aps.append(per_class[name])
    return {"map50": float(np.mean(aps)) if aps else None, "per_class": per_class}
