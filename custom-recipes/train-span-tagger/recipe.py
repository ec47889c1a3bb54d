"""Train span tagger: span labels -> a new version of a saved model (kind "spans")."""

from __future__ import annotations

from labeling.spans.training import train_span_tagger


def run(ctx):
    labels = ctx.input("labels")
    model = ctx.output("model")
    cfg = ctx.config
    result = train_span_tagger(labels.read(), cfg["label_col"],
                               text_column=cfg.get("text_column") or None,
                               algorithm=cfg["algorithm"], cv=cfg["cross_validate"],
                               random_state=cfg["random_state"])
    meta = result.info()
    meta.update(rows=result.n_rows, label_col=cfg["label_col"], labels_dataset=labels.name)
    version = model.save(result.tagger, meta)
    for note in result.notes:
        ctx.log.info(note)
    ctx.details.update(model=model.name, version=version, rows=result.n_rows,
                       types=len(result.types), f1=result.metrics.get("f1"))
    ctx.log.info("saved %s version %d (%d texts, %d entity types, cross-validated F1 %s)",
                 model.name, version, result.n_rows, len(result.types),
                 result.metrics.get("f1"))
