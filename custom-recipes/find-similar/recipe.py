"""Find similar: top-k neighbours of each query item in a pool, under a saved embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from labeling.similarity.recipes import embedded_chunks, load_embedding
from labelloop.errors import LabelloopError


def _embed_all(pipeline, source, cfg, data_type, progress):
    ids, parts = [], []
    for chunk_ids, _, vectors in embedded_chunks(pipeline, source, cfg["chunk_size"],
                                                 cfg.get("id_column") or None, data_type,
                                                 progress):
        ids.extend(chunk_ids)
        parts.append(vectors)
    if not ids:
        raise LabelloopError(f"{source.name!r} holds no item to embed")
    return ids, np.vstack(parts)


def run(ctx):
    cfg = ctx.config
    pool = ctx.input("pool")
    queries = ctx.input("queries") if ctx.inputs.get("queries") else None
    out = ctx.output("neighbors")
    pipeline, meta = load_embedding(ctx.input("saved_model"), pool)
    data_type = meta.get("data_type")
    ids, Z = _embed_all(pipeline, pool, cfg, data_type, ctx.progress)
    if queries is not None:
        qpipe, _ = load_embedding(ctx.input("saved_model"), queries)
        qids, Q = _embed_all(qpipe, queries, cfg, data_type, ctx.progress)
        same = False
    else:
        qids, Q, same = ids, Z, True
    k = min(int(cfg["k"]), len(ids) - (1 if same else 0))
    if k < 1:
        raise LabelloopError("the pool needs at least two items to find neighbours")
    nn = NearestNeighbors(algorithm="brute").fit(Z)
    frames = []
    step = 2048
    for lo in range(0, len(qids), step):
        dist, idx = nn.kneighbors(Q[lo:lo + step], k + (1 if same else 0))
        if same:  # drop each item itself (wherever ties put it), keep the k nearest others
            rows = np.arange(lo, lo + dist.shape[0])[:, None]
            order = np.argsort(idx == rows, axis=1, kind="stable")[:, :k]
            dist = np.take_along_axis(dist, order, axis=1)
            idx = np.take_along_axis(idx, order, axis=1)
        n = dist.shape[0]
        frames.append(pd.DataFrame({
            "query_id": np.repeat(np.asarray(qids[lo:lo + n], dtype=object), k),
            "neighbor_id": np.asarray(ids, dtype=object)[idx.reshape(-1)],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int64), n),
            "score": (1.0 - dist ** 2 / 2.0).reshape(-1)}))
    result = pd.concat(frames, ignore_index=True)
    out.write(result)
    ctx.details.update(model_version=meta["version"], queries=len(qids), k=k)
    ctx.log.info("%d neighbours for %d items", len(result), len(qids))
