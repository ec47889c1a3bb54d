"""Query Sampler: rank the unlabeled pool with the saved classifier, most uncertain first."""

from __future__ import annotations

from labeling.publish import publish_ranking
from labeling.sampling import Pool, sample_queries
from labeling.strategies import collect_strategies
from labeling.training import TRUSTED_TYPES, set_folder_root
from labelloop.errors import LabelloopError
from labelloop.project import Folder, trusted_types


def param_choices(param_name, registry):
    """The strategy choices: built-ins plus strategies registered by plugins."""
    if param_name == "strategy":
        from labeling.boxes.sampling import box_strategies
        from labeling.spans.sampling import span_strategies

        choices = collect_strategies(registry.pm).choices()
        known = {c["value"] for c in choices}
        for extra in (span_strategies(), box_strategies()):
            choices += [c for c in extra.choices() if c["value"] not in known]
            known |= {c["value"] for c in extra.choices()}
        return choices
    return None


def run(ctx):
    cfg = ctx.config
    engine = cfg.get("engine") or "local"
    if engine not in ("local", "dask"):
        raise LabelloopError(f"unknown engine {engine!r}: choose 'local' or 'dask'")
    if engine == "dask":
        from labeling.distributed import require_dask

        require_dask()  # before any work: a clear error when the extra is not installed
    model = ctx.input("saved_model")
    source = ctx.input("unlabeled_samples")
    labels_ds = ctx.input("labels")
    queries = ctx.output("queries")
    meta = model.metadata()
    pipeline = model.load(meta["version"], trusted=TRUSTED_TYPES)
    if isinstance(source, Folder):
        set_folder_root(pipeline, str(source.root))
    pool = Pool(source, cfg["chunk_size"], meta.get("data_type"))
    labels = labels_ds.read() if labels_ds is not None and labels_ds.exists() else None
    options = dict(labels=labels, label_col=cfg["label_col"],
                   id_column=cfg.get("id_column") or None, max_queries=cfg["max_queries"],
                   seed=cfg["seed"], progress=ctx.progress, batch_size=cfg["batch_size"],
                   model_version=str(meta["version"]))
    registry = collect_strategies(ctx.registry.pm)
    if meta.get("kind") == "spans":  # a span tagger: per-token uncertainties, spans predicted
        from labeling.spans.sampling import sample_span_queries

        if engine == "dask":
            raise LabelloopError("span models are scored by the local engine: set engine to "
                                 "'local'")
        del options["batch_size"]
        result = sample_span_queries(pipeline, pool, cfg["strategy"],
                                     meta.get("text_column") or "text", **options)
    elif meta.get("kind") == "boxes":  # a detector: box and proposal uncertainties, boxes
        from labeling.boxes.sampling import sample_box_queries

        if engine == "dask" or not isinstance(source, Folder):
            raise LabelloopError("a detector scores the images of a managed folder with the "
                                 "local engine: set 'unlabeled_samples' to the folder and "
                                 "engine to 'local'")
        result = sample_box_queries(pipeline, pool, cfg["strategy"], source.root, **options)
    elif engine == "dask":
        from labeling.distributed import dask_client, sample_queries_dask

        # The model travels as its skops bytes, loaded on the workers with the same check.
        model_bytes = (ctx.project.dir / meta["file"]).read_bytes()
        with dask_client(cfg.get("dask_scheduler") or None, cfg["dask_workers"]) as client:
            result = sample_queries_dask(client, pipeline, model_bytes,
                                         [*TRUSTED_TYPES, *trusted_types()], pool,
                                         cfg["strategy"], registry, **options)
    else:
        result = sample_queries(pipeline, pool, cfg["strategy"], registry, **options)
    # The new ranking and its session number land together: a webapp never sees one without
    # the other.
    session = publish_ranking(ctx.project, queries, result.queries, meta["version"])
    ctx.details.update(model_version=meta["version"], strategy=cfg["strategy"], session=session,
                       pool_rows=result.pool_rows, excluded=result.excluded,
                       queries=len(result.queries), engine=engine)
    ctx.log.info("wrote %d queries (session %d, %d labeled items left out)",
                 len(result.queries), session, result.excluded)
