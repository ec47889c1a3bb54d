"""Embed: a saved embedding model x a pool -> the embeddings dataset, chunk by chunk."""

from __future__ import annotations

import pandas as pd

from labeling.similarity.recipes import embedded_chunks, load_embedding


def run(ctx):
    cfg = ctx.config
    source = ctx.input("pool")
    out = ctx.output("embeddings")
    pipeline, meta = load_embedding(ctx.input("saved_model"), source)
    rows = 0
    # One transaction: readers see the old embeddings or all of the new ones.
    with ctx.project.write_transaction() as conn:
        for ids, frame, vectors in embedded_chunks(pipeline, source, cfg["chunk_size"],
                                                   cfg.get("id_column") or None,
                                                   meta.get("data_type"), ctx.progress):
            chunk = pd.DataFrame(vectors, columns=[f"e{j}" for j in range(vectors.shape[1])])
            chunk.insert(0, "id", ids)
            if cfg.get("keep_columns"):
                extra = frame.drop(columns=[c for c in frame.columns if c in chunk.columns])
                chunk = pd.concat([chunk.iloc[:, :1], extra.reset_index(drop=True),
                                   chunk.iloc[:, 1:]], axis=1)
            if rows == 0:
                out.write(chunk, conn=conn)
            else:
                out.append(chunk, conn=conn)
            rows += len(chunk)
    ctx.details.update(model_version=meta["version"], rows=rows)
    ctx.log.info("embedded %d items with %s v%d", rows, ctx.input("saved_model").name,
                 meta["version"])
