"""Label issues (scenario step; the recipe is find-label-issues): after a retrain, replace the label_issues dataset.

Params left empty are read from the flow, as the labeling-metrics step does: the model the
Train classifier recipe outputs, its labels input and its folder input. Too few labels for
the folds is not a failure here (the loop's first retrains have few labels): the step skips
with the reason in its details. Anything else wrong is one error, and nothing is written.
"""

from __future__ import annotations

from typing import Any

from labeling.quality.issues import TooFewLabels, find_issues, load_pipeline, write_issues
from labelloop.errors import ConfigError
from labelloop.project import Project


def _names(binding: Any) -> list[str]:
    if binding is None:
        return []
    return [binding] if isinstance(binding, str) else list(binding)


def resolve(project: Project, config: dict) -> dict[str, str | None]:
    """The model, labels and folder to use: the params, else the Train classifier recipe's."""
    trainers = [r for r in project.config.get("recipes", {}).values()
                if str(r.get("type", "")).endswith("/train-classifier")]
    model = config.get("saved_model") or None
    if model is None:
        outputs = [n for r in trainers for n in _names(r.get("outputs", {}).get("model"))]
        models = project.model_names()
        model = outputs[0] if outputs else (models[0] if len(models) == 1 else None)
    if model is None:
        raise ConfigError("label-issues: no model given and none found in the flow: set "
                          "the step's 'saved_model' param to the Train classifier's model")
    trainer = next((r for r in trainers if model in _names(r.get("outputs", {}).get("model"))),
                   {})
    inputs = trainer.get("inputs", {})
    labels = config.get("ds_labels") or next(iter(_names(inputs.get("labels"))), None)
    if labels is None:
        raise ConfigError(f"label-issues: no labels dataset given and no Train classifier "
                          f"recipe writes {model!r}: set the step's 'ds_labels' param")
    folder = config.get("folder") or next(iter(_names(inputs.get("folder"))), None)
    return {"model": model, "labels": labels, "folder": folder}


def run(ctx: Any) -> None:
    """Compute and write the label issues, or skip while the labels are too few."""
    project: Project = ctx.project
    cfg = ctx.config
    names = resolve(project, cfg)
    labels = project.dataset(names["labels"])
    if not labels.exists():
        raise ConfigError(f"label-issues: the labels dataset {names['labels']!r} does not "
                          "exist yet: label some items first")
    root = str(project.folder(names["folder"]).root) if names["folder"] else None
    pipeline, meta = load_pipeline(project.model(names["model"]), root)
    consensus = project.dataset(cfg["ds_consensus"]) if cfg.get("ds_consensus") else None
    try:
        issues, details = find_issues(
            labels.read(), pipeline, meta, cfg["label_col"] or "label",
            id_column=cfg.get("id_column") or None, consensus=consensus,
            labels_from=cfg["labels_from"], folds=cfg["folds"],
            random_state=cfg["random_state"], max_train_rows=cfg["max_train_rows"],
            only_issues=cfg["only_issues"], consensus_where="the step's 'ds_consensus' param")
    except TooFewLabels as exc:
        ctx.details.update(skipped=str(exc))
        ctx.log.info("find label issues skipped: %s", exc)
        return
    write_issues(project.dataset(cfg["ds_label_issues"], create=True), issues)
    ctx.details.update(dataset=cfg["ds_label_issues"], **details)
    ctx.log.info("label issues: %d of %d labels flagged (model version %d)",
                 details["issues"], details["labels"], details["model_version"])
