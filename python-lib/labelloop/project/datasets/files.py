"""Reading a CSV or Parquet file into a frame (`Dataset.import_file`, `labelloop.formats`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import LabelloopError


def _format_of(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext in ("csv", "tsv", "txt"):
        return "csv"
    if ext in ("parquet", "pq"):
        return "parquet"
    raise LabelloopError(f"cannot tell the format of {path.name!r} from its extension: "
                         "use a .csv or .parquet file, or pass --format")


def read_table_file(path: Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame with a clear error when it can't be read."""
    fmt = (fmt or _format_of(path)).lower()
    if fmt not in ("csv", "parquet"):
        raise LabelloopError(f"unknown import format {fmt!r}: use csv or parquet")
    try:
        if fmt == "csv":
            return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LabelloopError(f"cannot read {path} as {fmt}: {exc}") from exc
