"""The Query Sampler on a Dask cluster: the pool scored partition by partition, top-k by a tree.

A dataset pool is a `dask.dataframe` over its column-wise chunk files (each partition one
chunk of `chunk_size` rows, read by the worker from the project's file system); a folder of
images or sounds is a `dask.bag` of paths. Each partition is scored with the same per-chunk
code as the local path (`sampling.ChunkScorer`) into the same top-k reducer
(`ranking.StreamingRanker`); the partitions' rankings are merged by a tree reduction
(`split_every` at a time) on the cluster, and the client writes the queries as the local
path does: same ranking for the same model and pool.

The saved model travels to the workers as its skops bytes, loaded there with the same
trusted-types check as `SavedModel.load` (never a pickle of arbitrary objects).

Dask is an optional extra: `pip install 'labelloop[dask]'`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError, UntrustedModelError
from labelloop.project import Dataset, read_chunk_file

from .columns import PATH_COLUMN
from .ranking import Ranked, StreamingRanker, merge_rankings
from .sampling import (
    ChunkScorer,
    LabeledIndex,
    Pool,
    Progress,
    SampleResult,
    finish,
    prepare,
    ranker_size,
)
from .strategies import Strategy, StrategyRegistry
from .training import set_folder_root

SPLIT_EVERY = 8  # rankings merged per node of the tree reduction
ROW = "_row"


def require_dask() -> None:
    """A clear error when the `dask` engine is chosen and Dask is not installed."""
    try:
        import dask  # noqa: F401
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise LabelloopError(
            f"engine 'dask' needs Dask and dask.distributed, which are not installed "
            f"({exc}): install them with  pip install 'labelloop[dask]'  or choose engine "
            "'local'") from None


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Any]:
    """A client of the scheduler at `scheduler`, else of a local cluster of `workers`
    single-threaded worker processes on 127.0.0.1 (closed on exit)."""
    require_dask()
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise LabelloopError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}): "
                                 "check the address, or leave it empty for a local cluster"
                                 ) from None
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        raise LabelloopError(f"a local Dask cluster needs at least 1 worker, got {workers}")
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


# --------------------------------------------------------------------------- worker side


def load_model_bytes(data: bytes, trusted: list[str]) -> Any:
    """A skops model from its bytes, refusing types outside skops' defaults and `trusted`."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - set(trusted))
    if refused:
        raise UntrustedModelError(f"the model holds types that are not trusted: "
                                  f"{', '.join(refused)}")
    return sio.loads(data, trusted=sorted(untrusted))


def _worker_model(model: bytes, trusted: list[str]) -> Any:
    """The model, loaded once per worker process (kept on the worker, keyed by its hash)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a worker (a synchronous scheduler)
        return load_model_bytes(model, trusted)
    key = hashlib.sha256(model).hexdigest()
    cache = worker.__dict__.setdefault("labelloop_models", {})
    if key not in cache:
        cache.clear()  # one model at a time: a new version replaces the old one
        cache[key] = load_model_bytes(model, trusted)
    return cache[key]


def _read_part(spec: tuple[str, int, int, int], columns: list[str]) -> pd.DataFrame:
    """One partition: rows `lo:hi` of a chunk file, with their pool positions in `_row`."""
    path, first_row, lo, hi = spec
    frame = read_chunk_file(path, columns).iloc[lo:hi].reset_index(drop=True)
    frame.insert(0, ROW, np.arange(first_row + lo + 1, first_row + hi + 1, dtype=np.int64))
    return frame


def _score_part(part: Any, model: bytes, trusted: list[str], strategy: Strategy, seed: int,
                k: int | None, labeled: LabeledIndex, folder_root: str | None,
                ) -> tuple[Ranked, int, int]:
    """Score one partition on a worker: its ranking (rows kept), rows seen, rows excluded."""
    pipeline = _worker_model(model, trusted)
    if folder_root is not None:
        set_folder_root(pipeline, folder_root)
    registry = StrategyRegistry()
    registry.register(strategy.name, strategy.func, strategy.label, strategy.description,
                      batch=strategy.batch, beta=strategy.beta, beta_few=strategy.beta_few,
                      few_labels=strategy.few_labels)
    if isinstance(part, pd.DataFrame):
        frame = part
        positions = frame.pop(ROW).to_numpy(dtype=np.int64)
    else:  # a bag partition: (position, path) pairs
        pairs = list(part)
        positions = np.asarray([p for p, _ in pairs], dtype=np.int64)
        frame = pd.DataFrame({PATH_COLUMN: [f for _, f in pairs]})
    ranker = StreamingRanker(k)
    scorer = ChunkScorer(pipeline, strategy.name, registry, labeled, seed, keep_rows=True)
    scorer.add(ranker, positions, frame)
    return ranker.result(), scorer.total, scorer.excluded


def _merge(*parts: tuple[Ranked, int, int], k: int | None) -> tuple[Ranked, int, int]:
    """A node of the tree reduction: the best `k` of its children's rankings."""
    ranked = merge_rankings([p[0] for p in parts], k)
    return ranked, sum(p[1] for p in parts), sum(p[2] for p in parts)


# --------------------------------------------------------------------------- client side


def _partitions(pool: Pool) -> list[Any]:
    """One dask delayed object per partition, partitioned exactly as the local path chunks."""
    import dask
    import dask.bag as db
    import dask.dataframe as dd

    if pool.is_folder:
        files = list(enumerate(pool.files))
        return db.from_sequence(files, partition_size=pool.chunk_size).to_delayed()
    source = pool.source
    assert isinstance(source, Dataset)
    columns = pool.columns()
    specs = [(f["path"], f["first_row"], lo, min(lo + pool.chunk_size, f["rows"]))
             for f in source.chunk_files() for lo in range(0, f["rows"], pool.chunk_size)]
    if not specs:  # stored as rows (a small dataset): the client reads it, chunk by chunk
        parts = []
        for positions, frame in pool.chunks():
            frame = frame.reset_index(drop=True)
            frame.insert(0, ROW, positions)
            parts.append(dask.delayed(frame, pure=True))
        return parts
    meta = _read_part((specs[0][0], specs[0][1], 0, 0), columns)
    ddf = dd.from_map(_read_part, specs, columns=columns, meta=meta, enforce_metadata=False,
                      divisions=None)
    return list(ddf.to_delayed())


def sample_queries_dask(client: Any, pipeline: Any, model_bytes: bytes, trusted: list[str],
                        pool: Pool, strategy: str, registry: StrategyRegistry,
                        labels: pd.DataFrame | None = None, label_col: str = "label",
                        id_column: str | None = None, max_queries: int = 0, seed: int = 0,
                        progress: Progress | None = None, batch_size: int = 20,
                        model_version: str | None = None,
                        split_every: int = SPLIT_EVERY) -> SampleResult:
    """`sampling.sample_queries` on the cluster of `client`: the same queries."""
    import dask
    from distributed import as_completed

    strat, classes, labeled = prepare(pipeline, pool, strategy, registry, labels, label_col,
                                      id_column)
    k = ranker_size(strat, max_queries, batch_size, labeled.n_labeled)
    folder_root = str(pool.source.root) if pool.is_folder else None
    token = hashlib.sha256(model_bytes).hexdigest()[:16]
    model = dask.delayed(model_bytes, pure=True, name=f"labelloop-model-{token}")
    tasks = [dask.delayed(_score_part, pure=False)(part, model, trusted, strat, seed, k,
                                                   labeled, folder_root)
             for part in _partitions(pool)]
    if not tasks:
        raise LabelloopError("the unlabeled pool is empty: nothing to score (check the "
                             "'unlabeled_samples' input)")
    futures = client.compute(tasks)
    level = list(futures)
    while len(level) > 1:  # the tree: merges run on the cluster as their inputs arrive
        level = [client.submit(_merge, *level[i:i + split_every], k=k, pure=False)
                 for i in range(0, len(level), split_every)]
    progress = progress or (lambda it, *a, **kw: it)
    for future in progress(as_completed(futures), "scoring on Dask", total=len(futures)):
        if future.status == "error":
            future.result()  # raises the worker's error here
    ranked, total, excluded = level[0].result()
    return finish(ranked, ranked.rows if len(ranked) else None, total, excluded, classes,
                  pipeline, strat, max_queries, batch_size, seed, model_version,
                  labeled.n_labeled)
