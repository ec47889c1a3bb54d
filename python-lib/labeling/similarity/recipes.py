"""What the embed and find-similar recipes share: a saved embedding model over a pool, in chunks.

Item ids are the similarity webapp's (and the labeling webapps'): the file path for a folder,
the `id_column` value or else the hash of the row's canonical JSON for a dataset, so the
`embeddings` and `neighbors` datasets join with the `pairs` dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.project import Folder, normalize

from ..datatypes import canonical_id, content_ids, json_lines
from ..sampling import Pool
from ..training import TRUSTED_TYPES, set_folder_root
from .embedding import embed


def load_embedding(model: Any, source: Any) -> tuple[Any, dict]:
    """The newest version of a saved embedding model, pointed at the pool's folder."""
    meta = model.metadata()
    pipeline = model.load(trusted=TRUSTED_TYPES)
    if not hasattr(pipeline, "transform"):
        raise LabelloopError(f"saved model {model.name!r} (v{meta['version']}) has no "
                             "transform(): give an embedding model, not a classifier")
    if isinstance(source, Folder):
        set_folder_root(pipeline, str(source.root))
    return pipeline, meta


def item_ids(source: Any, frame: pd.DataFrame, id_column: str | None) -> list[str]:
    """The webapps' ids of a chunk of the pool."""
    if isinstance(source, Folder):
        return [str(p) for p in frame["path"]]
    if id_column:
        if id_column not in frame.columns:
            raise LabelloopError(f"id column {id_column!r} is not in {source.name!r} (columns: "
                                 f"{', '.join(map(str, frame.columns))})")
        return [canonical_id(v) for v in frame[id_column].tolist()]
    return content_ids(json_lines(normalize(frame, source.schema)))


def embedded_chunks(pipeline: Any, source: Any, chunk_size: int, id_column: str | None,
                    data_type: str | None = None,
                    progress: Callable | None = None) -> Iterator[tuple[list[str], pd.DataFrame,
                                                                         np.ndarray]]:
    """`(ids, rows, vectors)` per chunk of the pool (vectors as the model outputs them)."""
    pool = Pool(source, chunk_size, data_type if isinstance(source, Folder) else None)
    chunks = pool.chunks()
    if progress is not None:
        chunks = progress(chunks, f"embedding {len(pool)} items")
    for _, frame in chunks:
        yield item_ids(source, frame, id_column), frame, embed(pipeline, frame, unit=False)
