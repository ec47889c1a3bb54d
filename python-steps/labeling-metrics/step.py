"""Labeling metrics: after a retrain, how much did the model change, and how good is it?

On a seeded sample of the unlabeled pool, the new model version and the one of the last
computation predict a class for each item; the share that disagrees is the
*contradictions*. With the new version's cross-validated AUC and accuracy (recorded by the
Train classifier recipe) it becomes one row of the metrics dataset, which the webapp plots
and ``labeling.stopping`` watches for a stall.

Params left empty are read from the flow: the model the Train classifier recipe outputs,
the pool the Query Sampler scores, the labels the model is trained on.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from labeling.stopping import contradictions, history_frame, sample_pool
from labeling.training import TRUSTED_TYPES, check_scoring_input, set_folder_root
from labelloop.errors import ConfigError
from labelloop.project import Dataset, Project

BOXES_SAMPLE = 200  # images a detector's two versions are compared on, at most


def _recipes_of(project: Project, suffix: str) -> list[dict]:
    return [r for r in project.config.get("recipes", {}).values()
            if str(r.get("type", "")).endswith(suffix)]


def _names(binding: Any) -> list[str]:
    if binding is None:
        return []
    return [binding] if isinstance(binding, str) else list(binding)


def _first(names: list[str]) -> str | None:
    return names[0] if names else None


def resolve_settings(project: Project, config: dict) -> dict:
    """The step's settings with empty params filled in from the flow."""
    model = config.get("saved_model") or None
    trainers = [*_recipes_of(project, "/train-classifier"),
                *_recipes_of(project, "/train-span-tagger"),
                *_recipes_of(project, "/train-detector")]
    if model is None:
        outputs = [n for r in trainers for n in _names(r.get("outputs", {}).get("model"))]
        models = project.model_names()
        model = _first(outputs) or (models[0] if len(models) == 1 else None)
    if model is None:
        raise ConfigError(
            "labeling-metrics: no model given and none found in the flow: set the step's "
            "'saved_model' param to the classifier the Train classifier recipe writes"
        )
    trainer = next((r for r in trainers if model in _names(r.get("outputs", {}).get("model"))),
                   None)
    samplers = [r for r in _recipes_of(project, "/query-sampler")
                if model in _names(r.get("inputs", {}).get("saved_model"))]
    pool = config.get("unlabeled_samples") or _first(
        [n for r in samplers for n in _names(r.get("inputs", {}).get("unlabeled_samples"))])
    if pool is None:
        raise ConfigError(
            f"labeling-metrics: no unlabeled data given and no Query Sampler recipe reads model "
            f"{model!r}: set the step's 'unlabeled_samples' param to the pool's dataset or folder"
        )
    labels = config.get("ds_labels") or (
        _first(_names(trainer.get("inputs", {}).get("labels"))) if trainer else None)
    return {
        "model": model,
        "pool": pool,
        "labels": labels,
        "label_col": config.get("label_col") or "label",
        "metrics": config.get("ds_metrics") or "metrics",
        "sample_size": int(config.get("sample_size", 1000)),
        "min_new_labels": int(config.get("min_new_labels", 20)),
        "seed": int(config.get("seed", 0)),
    }


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def labels_of(project: Project, meta: dict, labels: str | None, label_col: str) -> int | None:
    """How many labels a model version was trained on (its metadata, else the labels dataset)."""
    for value in (meta.get("train_rows"), (meta.get("metrics") or {}).get("train_rows")):
        if _number(value) is not None:
            return int(value)
    if not labels:
        return None
    ds = Dataset(project, labels)
    if not ds.exists() or label_col not in ds.columns:
        return None
    table = ds.to_rows()
    col = table.c[label_col]
    query = sa.select(sa.func.count()).select_from(table).where(col.is_not(None))
    if "status" in ds.columns:
        query = query.where(sa.func.coalesce(table.c.status, "") != "SKIPPED")
    with ds.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def predict(project: Project, model_name: str, version: int, rows: pd.DataFrame,
            folder_root: str | None) -> np.ndarray:
    """Predicted classes of one saved model version on raw rows (a span model: each row's
    predicted spans as JSON text, so a changed span counts as a contradiction; a detector:
    each image's predicted object classes, so a found, lost or relabeled object counts)."""
    saved = project.model(model_name)
    pipeline = saved.load(version, trusted=TRUSTED_TYPES)
    meta = saved.metadata(version)
    if meta.get("kind") == "spans":
        from labeling.spans.sampling import predict_spans

        return predict_spans(pipeline, rows, meta.get("text_column") or "text")
    if meta.get("kind") == "boxes":
        from labeling.boxes.sampling import predict_boxes

        return predict_boxes(pipeline, rows, folder_root)
    set_folder_root(pipeline, folder_root)
    return np.asarray(pipeline.predict(check_scoring_input(pipeline, rows)), dtype=object)


def run(ctx: Any) -> None:
    """Compute and append one metrics row, or skip with the reason in the run's details."""
    project: Project = ctx.project
    settings = resolve_settings(project, ctx.config)
    details = ctx.details if isinstance(getattr(ctx, "details", None), dict) else {}
    log = ctx.log

    def skip(reason: str) -> None:
        details.update(skipped=reason)
        log.info("labeling metrics skipped: %s", reason)

    versions = project.model(settings["model"], create=True).versions()
    if not versions:
        return skip(f"model {settings['model']!r} has no version yet")
    new = versions[-1]
    labels = labels_of(project, new, settings["labels"], settings["label_col"])
    hist = history_frame(project, settings["metrics"])
    last = hist.iloc[-1] if len(hist) else None
    if last is not None:
        if _number(last["model_version"]) == new["version"]:
            return skip(f"version {new['version']} already has metrics")
        last_labels = _number(last["labels"])
        if labels is not None and last_labels is not None \
                and labels - last_labels < settings["min_new_labels"]:
            return skip(f"{labels - int(last_labels)} labels added since the last computation "
                        f"(fewer than {settings['min_new_labels']})")

    # Compare with the version of the last computation: contradictions then measure the
    # change over the same labels the history's x axis counts.
    known = {v["version"] for v in versions}
    previous = None
    if last is not None and _number(last["model_version"]) in known \
            and int(last["model_version"]) < new["version"]:
        previous = int(last["model_version"])
    elif len(versions) > 1:
        previous = versions[-2]["version"]

    share = None
    sampled = 0
    if previous is not None:
        size = settings["sample_size"]
        if new.get("kind") == "boxes":  # a detector reads and scores whole images: fewer
            size = min(size, BOXES_SAMPLE)
        rows, root = sample_pool(project, settings["pool"], size, settings["seed"],
                                 new.get("data_type"))
        sampled = len(rows)
        if sampled:
            before = predict(project, settings["model"], previous, rows, root)
            after = predict(project, settings["model"], new["version"], rows, root)
            share = contradictions(before, after)

    metrics = new.get("metrics") or {}
    row = {
        "date": pd.Series([pd.Timestamp(dt.datetime.now(dt.UTC))]),
        "labels": pd.Series([labels], dtype="Int64"),
        "model_version": pd.Series([new["version"]], dtype="Int64"),
        "auc": pd.Series([_number(metrics.get("auc", new.get("auc")))], dtype="float64"),
        "contradictions": pd.Series([share], dtype="float64"),
        "accuracy": pd.Series([_number(metrics.get("accuracy", new.get("accuracy")))],
                              dtype="float64"),
    }
    if new.get("kind") == "spans":
        # A span model has no AUC: its cross-validated entity F1 is the quality it tracks.
        metrics_ds = Dataset(project, settings["metrics"])
        if not metrics_ds.exists() or "f1" in metrics_ds.columns:
            row["f1"] = pd.Series([_number(metrics.get("f1"))], dtype="float64")
            details.update(f1=_number(metrics.get("f1")))
    if new.get("kind") == "boxes":
        # A detector has no AUC either: its cross-validated mAP@0.5 is what it tracks.
        metrics_ds = Dataset(project, settings["metrics"])
        if not metrics_ds.exists() or "map50" in metrics_ds.columns:
            row["map50"] = pd.Series([_number(metrics.get("map50"))], dtype="float64")
            details.update(map50=_number(metrics.get("map50")))
    Dataset(project, settings["metrics"]).append(pd.DataFrame(row))
    details.update(model_version=new["version"], previous_version=previous, labels=labels,
                   sampled=sampled, contradictions=share, auc=row["auc"].iloc[0]
                   if pd.notna(row["auc"].iloc[0]) else None)
    log.info("labeling metrics: version %s vs %s on %d items: contradictions %s, auc %s",
             new["version"], previous, sampled, share, details["auc"])
