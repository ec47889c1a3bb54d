"""Find label issues: labels (or consensus) + classifier -> the label_issues dataset."""

from __future__ import annotations

from labeling.quality.issues import find_issues, load_pipeline, write_issues


def run(ctx):
    labels = ctx.input("labels")
    folder = ctx.input("folder")
    cfg = ctx.config
    pipeline, meta = load_pipeline(ctx.input("saved_model"),
                                   str(folder.root) if folder is not None else None)
    issues, details = find_issues(
        labels.read(), pipeline, meta, cfg["label_col"], id_column=cfg.get("id_column") or None,
        consensus=ctx.input("consensus"), labels_from=cfg["labels_from"], folds=cfg["folds"],
        random_state=cfg["random_state"], max_train_rows=cfg["max_train_rows"],
        only_issues=cfg["only_issues"])
    out = ctx.output("label_issues")
    write_issues(out, issues)
    ctx.details.update(dataset=out.name, **details)
    ctx.log.info("label issues: %d of %d labels flagged (model version %d, %d folds)",
                 details["issues"], details["labels"], details["model_version"], details["folds"])
