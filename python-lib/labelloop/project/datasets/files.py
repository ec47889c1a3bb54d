"""Reading and writing CSV and Parquet files (`Dataset.import_file|export_file`,
`labelloop.formats`), with clear errors; CSV with a chosen text encoding and separator."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import LabelloopError

# A separator given by name, since a tab is hard to type on a command line.
SEPARATORS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
              "space": " "}


def _format_of(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    if ext in ("csv", "tsv", "txt"):
        return "csv"
    if ext in ("parquet", "pq"):
        return "parquet"
    raise LabelloopError(f"cannot tell the format of {path.name!r} from its extension: "
                         "use a .csv or .parquet file, or pass --format")


def check_encoding(encoding: str | None) -> str:
    """A text encoding's name, checked (`utf-8` when None)."""
    if encoding is None or encoding == "":
        return "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise LabelloopError(f"unknown encoding {encoding!r}: use a Python codec name such as "
                             "utf-8, latin-1 or cp1252") from None
    return encoding


def csv_separator(path: Path, sep: str | None) -> str:
    """The CSV separator: `sep` (a character, or tab / comma / semicolon / pipe / space), else
    a tab for a .tsv file and a comma otherwise."""
    if sep is None or sep == "":
        return "\t" if path.suffix.lower() == ".tsv" else ","
    sep = SEPARATORS.get(sep.lower(), sep)
    if len(sep) != 1 or sep in "\"\r\n":
        raise LabelloopError(f"separator {sep!r} must be one character other than a quote or "
                             f"a line break, or one of {', '.join(SEPARATORS)}")
    return sep


def not_decoded(path: Path, encoding: str, exc: UnicodeDecodeError,
                where: str | None = None) -> LabelloopError:
    """The error of a file that is not `encoding` text: what to pass instead."""
    byte = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, bytes) else "?"
    where = f" {where}" if where else ""
    other = "latin-1" if codecs.lookup(encoding).name != "iso8859-1" else "cp1252"
    return LabelloopError(
        f"cannot read {path}: it is not {encoding} text (byte 0x{byte}{where}): give the "
        f"file's encoding, e.g. `-o encoding={other}`; nothing was imported")


def read_csv(path: Path, source: Any = None, encoding: str | None = None,
             sep: str | None = None) -> pd.DataFrame:
    """Read a CSV file (from `source`, a binary file object, when given) with clear errors."""
    encoding = check_encoding(encoding)
    try:
        return pd.read_csv(path if source is None else source, sep=csv_separator(path, sep),
                           encoding=encoding)
    except UnicodeDecodeError as exc:
        raise not_decoded(path, encoding, exc) from None
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LabelloopError(f"cannot read {path} as csv: {exc}") from exc


def write_csv(frame: pd.DataFrame, target: Path, path: Path, encoding: str | None = None,
              sep: str | None = None, append: bool = False) -> None:
    """Write `frame` as CSV to `target` (the file being made for `path`), header first unless
    `append`; an encoding that cannot hold a value is a clear error."""
    encoding = check_encoding(encoding)
    try:
        frame.to_csv(target, index=False, sep=csv_separator(path, sep), encoding=encoding,
                     mode="a" if append else "w", header=not append)
    except UnicodeEncodeError as exc:
        raise LabelloopError(f"cannot write {path} in {encoding}: it has no character for "
                             f"{exc.object[exc.start:exc.end]!r}: choose an encoding that has "
                             "it, e.g. `-o encoding=utf-8`") from None


def read_table_file(path: Path, fmt: str | None = None, encoding: str | None = None,
                    sep: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame with a clear error when it can't be read."""
    fmt = (fmt or _format_of(path)).lower()
    if fmt not in ("csv", "parquet"):
        raise LabelloopError(f"unknown import format {fmt!r}: use csv or parquet")
    if fmt == "csv":
        return read_csv(path, encoding=encoding, sep=sep)
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise LabelloopError(f"cannot read {path} as {fmt}: {exc}") from exc
