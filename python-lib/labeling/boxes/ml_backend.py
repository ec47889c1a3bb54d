"""Boxes and Label Studio's ML-backend protocol, both ways.

- Labelloop as an ML backend (`labeling.interop.ml_backend` over an image-boxes webapp):
  `predict` answers a `<RectangleLabels>` config with the detector's boxes from the webapp's
  queries dataset (the Query Sampler's `prediction`), as `rectanglelabels` results in
  percentages of the image, each with its score, and the image's uncertainty as the
  prediction's `score`; `webhook` records an annotation's rectangles as a boxes answer.
- An external ML backend as the model of the loop (the `ml-backend-predict` recipe with a
  `<RectangleLabels>` config): `prediction_boxes` turns one of its predictions into the
  queries dataset's `prediction` (boxes in pixels with their scores) and an uncertainty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from labelloop.errors import LabelloopError

from ..interop.labelstudio import RectangleLabelsControl
from ..kinds.boxes import FIELDS, image_size
from .formats import boxes_of_results, has_box_results

_CACHE = "_labeling_box_queries"  # where an MlBackend keeps the queries rows it read


def queries_rows(mb: Any) -> dict[str, dict]:
    """The webapp's queries rows by image path (read again when the dataset changes)."""
    name = mb.cfg.queries_ds
    if not name:
        return {}
    ds = mb.project.dataset(name, create=True)
    if not ds.exists() or "path" not in ds.columns:
        return {}
    key = (name, ds.generation(), ds.updated())
    kept = vars(mb).get(_CACHE)
    if kept is not None and kept[0] == key:
        return kept[1]
    columns = [c for c in ("path", "prediction", "uncertainty", "model_version")
               if c in ds.columns]
    rows: dict[str, dict] = {}
    for chunk in ds.iter_chunks(columns=columns):
        for r in chunk.to_dict("records"):
            rows.setdefault(str(r["path"]).replace("\\", "/"), r)
    vars(mb)[_CACHE] = (key, rows)
    return rows


def _root(mb: Any) -> Path:
    return Path(mb.project.folder(mb.cfg.unlabeled).root)


def predict_boxes(mb: Any, tasks: list, keys: list[str],
                  control: RectangleLabelsControl | None) -> list[dict]:
    """Per task: the queries' boxes of its image as `rectanglelabels` results (each with
    its score) and the image's uncertainty as the prediction's `score`."""
    if control is None:
        control = RectangleLabelsControl("label", "image", list(mb.cfg.categories), "image")
    rows = queries_rows(mb)
    fallback = mb.model_version()
    results = []
    for task in tasks:
        item_id = mb.item_of(task, keys)
        row = rows.get(item_id) if item_id is not None else None
        suggestion = None if row is None else mb.engine.kind.suggestion(
            row.get("prediction"), None, row.get("model_version"))
        if suggestion is None:
            results.append({"model_version": fallback, "score": None, "result": []})
            continue
        width, height = image_size(_root(mb) / item_id)
        boxes = [b for b in suggestion["boxes"] if b["label"] in control.labels]
        uncertainty = row.get("uncertainty")
        results.append({
            "model_version": str(suggestion["model_version"]),
            "score": None if uncertainty is None or uncertainty != uncertainty
            else round(float(uncertainty), 6),
            "result": control.result(boxes, width, height)})
    return results


def answer_boxes(mb: Any, action: str, annotation: dict, item_id: str) -> list[dict]:
    """The boxes of a Label Studio annotation (its `rectanglelabels` results) in pixels of
    the pool's image; no result at all is an answer ("nothing to box")."""
    where = f"{action}: annotation {annotation.get('id')}"
    if annotation.get("result") and not has_box_results(annotation):
        raise LabelloopError(f"{where} has no rectanglelabels result (this webapp records "
                             "boxes: a <RectangleLabels> config)")
    size = image_size(_root(mb) / item_id)
    return [{k: b[k] for k in (*FIELDS, "label")}
            for b in boxes_of_results(annotation, where, size)]


def prediction_boxes(prediction: dict, size: tuple[int, int] | None, where: str
                     ) -> tuple[str, float, float | None]:
    """An external backend's prediction as the queries' `prediction` (JSON boxes in pixels,
    with scores), the image's uncertainty from its boxes (the least sure box's 1 - score,
    0 with no box) and its best box score (None with no box)."""
    boxes = boxes_of_results(prediction, where, size)
    scores = [float(b["score"]) for b in boxes if b.get("score") is not None]
    uncertainty = max((1.0 - s for s in scores), default=0.0)
    return (json.dumps(boxes), float(np.clip(uncertainty, 0.0, 1.0)),
            max(scores) if scores else None)
