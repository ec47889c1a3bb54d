"""Dataset schemas: column types, the SQL table of a schema, and `normalize` (a frame typed
after a schema), shared by both storages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ...errors import LabelloopError

ROW = "_row"  # the hidden ordering key of every dataset (1-based insertion order)
SQL_TYPES: dict[str, Any] = {
    "string": sa.Text,
    "bigint": sa.BigInteger,
    "double": sa.Float(precision=53),
    "boolean": sa.Boolean,
    "date": sa.DateTime(timezone=True),
}
STORAGES = ("rows", "columns")


def column_type(series: pd.Series) -> str:
    """The DSS-like storage type of a pandas column."""
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "bigint"
    if pd.api.types.is_float_dtype(series):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "date"
    return "string"


def schema_of(df: pd.DataFrame) -> list[dict]:
    """The schema (ordered `{"name", "type"}` columns) of a DataFrame."""
    cols = [str(c) for c in df.columns]
    if len(set(cols)) != len(cols):
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        raise LabelloopError(f"duplicate column names {dupes}: rename them so each is unique")
    if ROW in cols:
        raise LabelloopError(f"column name {ROW!r} is reserved: rename that column")
    return [{"name": str(c), "type": column_type(df[c])} for c in df.columns]


def _sql_table(table_name: str, schema: Sequence[dict]) -> sa.Table:
    cols = [sa.Column(ROW, sa.Integer, primary_key=True, autoincrement=True)]
    cols += [sa.Column(c["name"], SQL_TYPES[c["type"]]) for c in schema]
    return sa.Table(table_name, sa.MetaData(), *cols)


def _text(v: Any) -> str | None:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def normalize(df: pd.DataFrame, schema: Sequence[dict]) -> pd.DataFrame:
    """A new frame with exactly the schema's columns, typed after it (missing values as NA)."""
    out = {}
    # Schema names are strings; a frame's labels may not be (e.g. 0, 1 from a numpy array).
    labels = {str(c): c for c in df.columns}
    for col in schema:
        name, kind = col["name"], col["type"]
        s = df[labels[name]] if name in labels else pd.Series([None] * len(df), index=df.index)
        if _has_type(s, kind):  # already right: no conversion, no copy
            out[name] = s
        elif kind == "double":
            out[name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind == "bigint":
            num = pd.to_numeric(s, errors="coerce")
            out[name] = num.astype("int64") if not num.isna().any() else num.astype("Int64")
        elif kind == "boolean":
            out[name] = s.astype("boolean") if s.isna().any() else s.astype(bool)
        elif kind == "date":
            out[name] = pd.to_datetime(s, utc=True, errors="coerce", format="mixed")
        else:
            out[name] = pd.Series([_text(v) for v in s.tolist()], index=df.index, dtype=object) \
                if s.dtype != object or not _all_text(s) else s
    frame = pd.DataFrame(out, index=df.index, copy=False)
    return frame if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
        and frame.index.step == 1 else frame.reset_index(drop=True)


def _has_type(s: pd.Series, kind: str) -> bool:
    dtype = s.dtype
    return ((kind == "double" and dtype == np.float64)
            or (kind == "bigint" and dtype in (np.int64, pd.Int64Dtype()))
            or (kind == "boolean" and dtype == np.bool_))


def _all_text(s: pd.Series) -> bool:
    """Whether every value is a str or None (then the column is stored as it is)."""
    # infer_dtype runs in C; "string" means every non-missing value is a str.
    if pd.api.types.infer_dtype(s, skipna=True) not in ("string", "empty"):
        return False
    missing = s.isna()
    return not missing.any() or all(v is None for v in s[missing])
