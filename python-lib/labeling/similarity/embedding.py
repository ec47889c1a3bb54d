"""Embeddings: the base embedding per data type, the tuned projection, the saved pipeline.

When the webapp is given no embedding model, a base embedding is fitted on the pool itself:

| data type | base embedding |
|---|---|
| tabular | numeric columns imputed and standardised, short string columns one-hot, then PCA |
| text | TF-IDF of the text column, then truncated SVD (latent semantic analysis) |
| image | gray pixels (``labeling.features.ImageFeatures``), then PCA |
| sound | log band energies (``labeling.features.SoundFeatures``), standardised, then PCA |

Every base ends with a ``Normalizer``: base vectors have unit length. The tuned embedding is
``A @ x`` with the matrix learned by ``labeling.similarity.tuning`` (the base vector and a few
learned coordinates); in a saved pipeline it is
the last step, a scikit-learn ``GaussianRandomProjection`` whose ``components_`` is ``A``
(its ``transform`` is exactly ``X @ components_.T``). Why that class: skops trusts scikit-learn's
estimators by default, so a saved embedding loads with the same trusted-types list as the
classifiers (``labeling.training.TRUSTED_TYPES``) and needs no type of its own.

A saved embedding model is a scikit-learn pipeline with ``transform`` that takes raw rows
(tabular, text) or a ``path`` column (image, sound, paths relative to the folder set with
``labeling.training.set_folder_root``), like the classifiers.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, OneHotEncoder, StandardScaler
from sklearn.random_projection import GaussianRandomProjection

from labeling.columns import plan_columns
from labeling.features import AsStrings, ImageFeatures, SoundFeatures
from labeling.training import TRUSTED_TYPES, set_folder_root
from labelloop.errors import LabelloopError

MAX_DIM = 32  # base embedding size (fewer when the pool or its features are smaller)
TUNE_STEP = "tune"

__all__ = ["base_pipeline", "linear_map", "tuned_pipeline", "embed", "TRUSTED_TYPES",
           "MAX_DIM", "set_folder_root"]


def _dim(n_rows: int, n_features: int, limit: int = MAX_DIM, svd: bool = False) -> int:
    """Components of the PCA (at most rows, features) or truncated SVD (fewer than features)."""
    return max(1, min(limit, n_rows - 1, n_features - 1 if svd and n_features > 1 else n_features))


def _tabular_steps(frame: pd.DataFrame, exclude: set[str]) -> list[tuple[str, Any]]:
    plan = plan_columns(frame.drop(columns=[c for c in exclude if c in frame.columns]))
    parts: list[tuple[str, Any, Any]] = []
    if plan.numeric:
        parts.append(("numeric", Pipeline([("impute", SimpleImputer(strategy="median")),
                                           ("scale", StandardScaler())]), plan.numeric))
    if plan.categorical:
        parts.append(("categorical", Pipeline([("strings", AsStrings()), (
            "onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
            plan.categorical))
    for col in plan.text:
        parts.append((f"text_{col}", Pipeline([("strings", AsStrings()), (
            "tfidf", TfidfVectorizer(max_features=2000, sublinear_tf=True))]), col))
    if not parts:
        raise LabelloopError("the pool has no column to embed (numbers, short strings or "
                             "texts); choose another pool or give an embedding model")
    return [("columns", ColumnTransformer(parts, sparse_threshold=0.0))]


def base_pipeline(data_type: str, sample: pd.DataFrame, text_column: str | None = None,
                  exclude: set[str] | None = None, root: str | None = None,
                  dim: int = MAX_DIM, seed: int = 0) -> Pipeline:
    """The built-in base embedding for `data_type`, fitted on `sample` (raw rows or paths)."""
    n = len(sample)
    if n < 2:
        raise LabelloopError(f"the pool has {n} item(s): a similarity webapp needs at least 2")
    if data_type == "text":
        col = text_column or "text"
        if col not in sample.columns:
            raise LabelloopError(f"text column {col!r} is not in the pool (columns: "
                                 f"{', '.join(map(str, sample.columns))}): set text_column")
        features = ColumnTransformer([("text", Pipeline([
            ("strings", AsStrings()),
            ("tfidf", TfidfVectorizer(sublinear_tf=True, min_df=1, max_features=50_000))]),
            col)])
        width = features.fit_transform(sample).shape[1]
        steps = [("features", features), ("svd", TruncatedSVD(_dim(n, width, dim, svd=True),
                                                              random_state=seed))]
    elif data_type in ("image", "sound"):
        cls = ImageFeatures if data_type == "image" else SoundFeatures
        steps = [("features", cls(column="path", root=root))]
        if data_type == "sound":
            steps.append(("scale", StandardScaler()))
        width = 256 + 24 if data_type == "image" else 64
        steps.append(("pca", PCA(_dim(n, width, dim), random_state=seed)))
    elif data_type == "tabular":
        steps = _tabular_steps(sample, exclude or set())
        width = Pipeline(steps).fit_transform(sample).shape[1]
        steps = _tabular_steps(sample, exclude or set())
        steps.append(("pca", PCA(_dim(n, width, dim), random_state=seed)))
    else:
        raise LabelloopError(f"unknown data type {data_type!r}: tabular, text, image or sound")
    steps.append(("normalize", Normalizer()))
    pipe = Pipeline(steps)
    pipe.fit(sample)
    return pipe


def linear_map(matrix: np.ndarray) -> GaussianRandomProjection:
    """A fitted scikit-learn transformer computing `X @ matrix.T` (skops-trusted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    out_dim, in_dim = matrix.shape
    proj = GaussianRandomProjection(n_components=out_dim)
    proj.components_ = matrix.copy()
    proj.n_components_ = out_dim
    proj.n_features_in_ = in_dim
    return proj


def tuned_pipeline(base: Any, matrix: np.ndarray | None) -> Pipeline:
    """`base`, unit length, then the tuned projection: one pipeline to save (no folder root)."""
    base = copy.deepcopy(base)
    set_folder_root(base, None)
    steps = list(base.steps) if isinstance(base, Pipeline) else [("base", base)]
    if not isinstance(steps[-1][1], Normalizer):  # the tuning worked on unit vectors
        steps.append(("normalize", Normalizer()))
    dim = _out_dim(base) if matrix is None else None
    steps.append((TUNE_STEP, linear_map(np.eye(dim) if matrix is None else matrix)))
    return Pipeline(steps)


def _out_dim(base: Any) -> int:
    last = base.steps[-1][1] if isinstance(base, Pipeline) else base
    for est in ([last] + [s[1] for s in reversed(getattr(base, "steps", []))]):
        for attr in ("n_components_", "n_components"):
            value = getattr(est, attr, None)
            if isinstance(value, int | np.integer):
                return int(value)
    raise LabelloopError("cannot tell the size of the embedding model's output")


def embed(model: Any, frame: pd.DataFrame, unit: bool = True) -> np.ndarray:
    """Rows -> vectors with `model.transform` (unit length when `unit`: base embeddings)."""
    transform = getattr(model, "transform", None)
    if transform is None:
        raise LabelloopError(f"the embedding model ({type(model).__name__}) has no transform(): "
                             "give a saved model whose pipeline ends with a transformer")
    out = transform(frame)
    if hasattr(out, "toarray"):
        out = out.toarray()
    out = np.asarray(out, dtype=np.float64)
    if out.ndim != 2:
        raise LabelloopError(f"the embedding model returned a {out.ndim}-d array: expected one "
                             "row of numbers per item")
    if not unit:
        return out
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)
