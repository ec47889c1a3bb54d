"""Which columns of a dataset are features, and how: the labeling's own columns that never
are (`excluded_columns`), the plan of a tabular dataset's columns (`plan_columns`: numeric,
categorical, free text, dropped) and the guess of a dataset's data type (`detect_data_type`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from labeling.features import folder_extension_kind
from labelloop.errors import LabelloopError

# Columns of the labels / metadata datasets that describe the labeling, not the item.
METADATA_COLUMNS: tuple[str, ...] = ("date", "data_id", "comment", "session", "status", "annotator")
# Columns the Query Sampler adds to the queries dataset; never features.
SCORE_COLUMNS: tuple[str, ...] = ("uncertainty", "prediction", "confidence", "model_version",
                                  "query_rank")
PATH_COLUMN = "path"

_TEXT_MEAN_LENGTH = 50  # a string column with longer values on average is free text
_MAX_CATEGORIES = 50  # more distinct short strings than this look like ids: dropped


@dataclass
class ColumnPlan:
    """How each feature column of a tabular dataset becomes features."""

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """The columns the pipeline reads."""
        return self.numeric + self.categorical + self.text


def excluded_columns(label_col: str | None) -> set[str]:
    """Columns that are never features: the label, its id, metadata and score columns."""
    excluded = set(METADATA_COLUMNS) | set(SCORE_COLUMNS)
    if label_col is not None:
        excluded |= {label_col, f"{label_col}_id"}
    return excluded


def is_string_column(series: pd.Series) -> bool:
    return (
        pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def mean_length(series: pd.Series) -> float:
    values = series.dropna().astype(str)
    return float(values.str.len().mean()) if len(values) else 0.0


def plan_columns(df: pd.DataFrame, label_col: str | None = None) -> ColumnPlan:
    """Sort the feature columns of ``df`` into numeric, categorical and free-text ones."""
    plan = ColumnPlan()
    excluded = excluded_columns(label_col)
    for col in df.columns:
        if col in excluded:
            continue
        series = df[col]
        name = str(col)
        if series.isna().all():
            plan.dropped[name] = "all values are empty"
        elif pd.api.types.is_bool_dtype(series.dtype):
            plan.categorical.append(col)
        elif pd.api.types.is_numeric_dtype(series.dtype):
            plan.numeric.append(col)
        elif is_string_column(series):
            if mean_length(series) > _TEXT_MEAN_LENGTH:
                plan.text.append(col)
            elif series.nunique(dropna=True) <= _MAX_CATEGORIES:
                plan.categorical.append(col)
            else:
                plan.dropped[name] = (
                    f"more than {_MAX_CATEGORIES} distinct short values (looks like an id)"
                )
        else:
            plan.dropped[name] = f"unsupported type {series.dtype}"
    return plan


def detect_data_type(
    df: pd.DataFrame | None, folder_files: Iterable[str] | None = None, label_col: str | None = None
) -> str:
    """Guess "tabular", "text", "image" or "sound" from a dataset (and/or a folder listing)."""
    if df is not None and PATH_COLUMN in df.columns:
        kind = folder_extension_kind(df[PATH_COLUMN].dropna().head(1000).tolist())
        if kind is not None:
            return kind
    if folder_files is not None and (df is None or PATH_COLUMN in df.columns):
        kind = folder_extension_kind(list(folder_files)[:1000])
        if kind is not None:
            return kind
    if df is None:
        raise LabelloopError(
            "cannot detect the data type: the folder holds no image or sound files; "
            "set the data type explicitly"
        )
    excluded = excluded_columns(label_col)
    features = [c for c in df.columns if c not in excluded]
    if len(features) == 1:
        series = df[features[0]]
        if is_string_column(series) and mean_length(series) > 20:
            return "text"
    return "tabular"
