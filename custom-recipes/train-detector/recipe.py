"""Train detector: box labels + their images -> a new version of a saved model (kind "boxes")."""

from __future__ import annotations

from labeling.boxes.training import train_detector


def run(ctx):
    labels = ctx.input("labels")
    folder = ctx.input("folder")
    model = ctx.output("model")
    cfg = ctx.config
    result = train_detector(labels.read(), cfg["label_col"], folder_root=str(folder.root),
                            cv=cfg["cross_validate"], random_state=cfg["random_state"])
    meta = result.info()
    meta.update(rows=result.n_images, label_col=cfg["label_col"], labels_dataset=labels.name,
                folder=folder.name)
    version = model.save(result.detector, meta)
    for note in result.notes:
        ctx.log.info(note)
    ctx.details.update(model=model.name, version=version, images=result.n_images,
                       classes=len(result.detector.classes), map50=result.metrics.get("map50"))
    ctx.log.info("saved %s version %d (%d images, %d classes, cross-validated mAP@0.5 %s)",
                 model.name, version, result.n_images, len(result.detector.classes),
                 result.metrics.get("map50"))
