"""ML backend predict: a Label Studio ML backend scores the pool and writes the queries dataset.

The pool goes to the backend's `/predict` in batches of Label Studio tasks (`{"id", "data"}`);
each prediction's score becomes the item's uncertainty (`1 - score` when the backend scores
its confidence, the usual case), its choice the `prediction`, the choice's score the
`confidence`, and the backend's `model_version` a column. Everything is asked before anything
is written: a backend that is down or answers garbage fails the run and the previous queries
stay as they were.

Boxes (a `<RectangleLabels>` label config, or Annotation kind `boxes`, e.g. a YOLO backend):
each prediction's rectangles become the `prediction` (JSON boxes in pixels of the image, each
with its score: a suggestion of the image-boxes webapp), its best box score the `confidence`,
and without a prediction score the uncertainty is the least sure box's 1 - score.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from labeling.interop.labelstudio import (
    RectangleLabelsControl,
    config_for,
    parse_label_config,
    task_data,
)
from labeling.interop.ml_client import MlBackendError, MlClient, prediction_fields
from labeling.publish import publish_ranking
from labeling.sampling import Pool
from labeling.strategies import top_k
from labelloop.project import Folder


def _exclude_labeled(frame: pd.DataFrame, labels: pd.DataFrame | None, id_column: str | None,
                     label_col: str) -> pd.DataFrame:
    if labels is None or labels.empty:
        return frame
    if id_column and id_column in labels:
        return frame[~frame[id_column].astype(str).isin(labels[id_column].astype(str))]
    keys = [c for c in frame.columns if c in labels.columns and c != label_col]
    if not keys:
        return frame
    seen = set(map(tuple, labels[keys].astype(str).to_numpy()))
    mask = [tuple(r) not in seen for r in frame[keys].astype(str).to_numpy()]
    return frame[np.asarray(mask, dtype=bool)]


def run(ctx):
    cfg = ctx.config
    source = ctx.input("unlabeled_samples")
    labels_ds = ctx.input("labels")
    queries = ctx.output("queries")
    folder = isinstance(source, Folder)
    data_type = "image" if folder else "text"
    data_key = cfg.get("data_key") or ("image" if folder else "text")
    label_config = config_for({**cfg, "data_key": data_key}, data_type,
                              cfg.get("kind") or "choice")
    boxes = isinstance(parse_label_config(label_config), RectangleLabelsControl)
    if boxes and not folder:
        raise MlBackendError("box predictions are of images: the unlabeled input must be a "
                             "managed folder of images")
    password = cfg.get("auth_password") or os.environ.get("LABELLOOP_ML_BACKEND_PASSWORD") or ""
    client = MlClient(cfg["url"], timeout=float(cfg["timeout"]), retries=int(cfg["retries"]),
                      basic_auth=(cfg["auth_user"], password) if cfg.get("auth_user") else None)
    client.health()
    setup_version = client.setup(label_config, project=f"{ctx.project.key}.0")

    pool = Pool(source, 100_000, "image" if folder else None)
    frame = pd.concat([f for _, f in pool.chunks()], ignore_index=True) if len(pool) else \
        pd.DataFrame({c: [] for c in pool.columns()})
    if "_row" in frame.columns:
        frame = frame.drop(columns="_row")
    labels = labels_ds.read() if labels_ds is not None and labels_ds.exists() else None
    before = len(frame)
    frame = _exclude_labeled(frame, labels, cfg.get("id_column"), cfg["label_col"]) \
        .reset_index(drop=True)

    n = len(frame)
    uncertainty = np.full(n, np.nan)
    prediction: list = [None] * n
    confidence = np.full(n, np.nan)
    version: list = [setup_version] * n
    records = frame.to_dict("records")
    batch = int(cfg["batch_size"])
    for start in ctx.progress(range(0, n, batch), "predicting"):
        part = records[start:start + batch]
        tasks = [{"id": start + k, "data": task_data(r, data_key, cfg.get("text_column"))}
                 for k, r in enumerate(part)]
        for k, pred in enumerate(client.predict(tasks, label_config,
                                                project=f"{ctx.project.key}.0")):
            label, score, item_score = prediction_fields(pred)
            i = start + k
            if boxes:  # the boxes with their scores; the least sure box's 1 - score
                from labeling.boxes.ml_backend import prediction_boxes
                from labeling.kinds.boxes import image_size

                path = str(part[k]["path"])
                label, box_unc, item_score = prediction_boxes(
                    pred, image_size(source.root / path), f"ML backend prediction for {path}")
                if score is None:
                    score = box_unc if cfg["score_is"] == "uncertainty" else 1.0 - box_unc
            prediction[i] = label
            confidence[i] = item_score if item_score is not None else \
                (score if cfg["score_is"] == "confidence" and score is not None else np.nan)
            if score is None:
                score = item_score
                if score is not None and cfg["score_is"] == "uncertainty":
                    score = 1.0 - score
            if score is not None:
                uncertainty[i] = 1.0 - score if cfg["score_is"] == "confidence" else score
            if pred.get("model_version") is not None:
                version[i] = str(pred["model_version"])
    if n and np.isnan(uncertainty).all():
        raise MlBackendError(f"ML backend {cfg['url']} gave no score for any task: it must "
                             "set 'score' on its predictions for Labelloop to rank the pool")

    out = frame.copy()
    out["uncertainty"] = uncertainty
    out["prediction"] = pd.Series(prediction, dtype=object)
    out["confidence"] = confidence
    out["model_version"] = pd.Series(version, dtype=object)
    # Most uncertain first (an item without a score last), at most max_queries of them.
    order = top_k(uncertainty, int(cfg["max_queries"]) or n)
    out = out.iloc[order].reset_index(drop=True)
    session = publish_ranking(ctx.project, queries, out,
                              version[0] if version else setup_version)
    ctx.details.update(url=cfg["url"], model_version=setup_version, session=session,
                       pool_rows=before, excluded=before - n, queries=len(out))
    ctx.log.info("ML backend %s scored %d items (session %d)", cfg["url"], n, session)
