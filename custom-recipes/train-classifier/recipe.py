"""Train classifier: labels -> a new version of a saved model (raw-input scikit-learn pipeline)."""

from __future__ import annotations

from labeling.quality.train_sets import training_rows
from labeling.training import set_folder_root, train


def run(ctx):
    labels = ctx.input("labels")
    folder = ctx.input("folder")
    model = ctx.output("model")
    cfg = ctx.config
    data_type = None if cfg["data_type"] == "auto" else cfg["data_type"]
    root = str(folder.root) if folder is not None else None
    if data_type in ("image", "sound") and root is None:
        raise ValueError(f"{data_type} data needs the managed folder of the files: set the "
                         "recipe's 'folder' input role")

    def fit(rows):  # the weighted consensus's first model: trained on the majority labels
        first = train(rows, cfg["label_col"], data_type=data_type, algorithm=cfg["algorithm"],
                      folder_root=root, cv=False, random_state=cfg["random_state"])
        return first.pipeline, first.feature_columns

    train_on = cfg.get("train_on") or "labels"
    df, set_notes, set_details = training_rows(
        train_on, labels.read(), ctx.input("consensus"), cfg["label_col"],
        id_column=cfg.get("id_column") or None, fit=fit, random_state=cfg["random_state"])
    result = train(df, cfg["label_col"], data_type=data_type, algorithm=cfg["algorithm"],
                   folder_root=root, cv=cfg["cross_validate"], random_state=cfg["random_state"])
    if result.data_type in ("image", "sound") and root is None:
        raise ValueError(f"the labels look like {result.data_type} files: set the recipe's "
                         "'folder' input role to the managed folder holding them")
    set_folder_root(result.pipeline, None)  # a saved model never holds an absolute path
    meta = result.info()
    meta.update(rows=result.n_rows, label_col=cfg["label_col"], labels_dataset=labels.name,
                folder=folder.name if folder is not None else None, train_on=train_on)
    if set_details.get("annotator_quality"):
        meta["annotator_quality"] = set_details["annotator_quality"]
    version = model.save(result.pipeline, meta)
    for note in [*set_notes, *result.notes]:
        ctx.log.info(note)
    ctx.details.update(model=model.name, version=version, rows=result.n_rows,
                       classes=len(result.classes), train_on=train_on,
                       accuracy=result.metrics.get("accuracy"), auc=result.metrics.get("auc"))
    ctx.log.info("saved %s version %d (%d rows, %d classes)", model.name, version,
                 result.n_rows, len(result.classes))
