"""Data types of labeling webapps: item ids, how an item renders, how it becomes features.

An item is stored by the engine as its id and its *row*: a JSON object holding every column of
the pool (tabular, text) or `{"path": ...}` (image, sound). The row is what goes into the
labels dataset, so the Train classifier recipe gets raw rows or file paths, as
`labeling.training` expects.

Ids:
- tabular / text: the `id_column` value when configured, else the first 20 hex digits of the
  SHA-1 of the row's canonical JSON (all pool columns, typed after the pool's schema), so the
  same row in the pool and in the queries dataset gets the same id;
- image / sound: the file's path inside the managed folder (`..`, absolute paths refused).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import mimetypes
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError, NotFoundError
from labelloop.project import UnsafePathError, normalize
from labelloop.web import FileResponse

from .settings import EngineConfig

PATH = "path"
SCORE_COLUMNS = ("uncertainty", "prediction", "confidence")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
SOUND_EXTENSIONS = (".wav", ".mp3", ".ogg", ".flac", ".m4a")
ID_HEX = 20
READ_CHUNK = 100_000
FOLDER_CHECK_SECONDS = 3.0
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".bmp": "image/bmp", ".webp": "image/webp",
               ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".flac": "audio/flac", ".m4a": "audio/mp4"}


class BadItemId(LabelloopError):
    """An item id that can't name an item (e.g. a folder path with `..`)."""


def canonical_id(value: Any) -> str | None:
    """An id column value as the id string (integral floats as integers, missing as None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return value.isoformat()
    return str(value)


def json_lines(frame: pd.DataFrame) -> list[str]:
    """One canonical JSON object per row (fast: pandas' C encoder)."""
    if frame.empty:
        return []
    text = frame.to_json(orient="records", lines=True, double_precision=15,
                         date_format="iso", date_unit="us", force_ascii=False)
    lines = text.split("\n")  # JSON escapes newlines inside strings, so this split is exact
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def content_ids(lines: Sequence[str]) -> list[str]:
    """Stable ids of rows from their canonical JSON."""
    return [hashlib.sha1(line.encode("utf-8")).hexdigest()[:ID_HEX] for line in lines]


def prediction_text(v: Any) -> str | None:
    """A prediction value as the category name it stands for."""
    return canonical_id(v)


class DataType:
    """Base of the four data types; `cfg` is the webapp's engine config."""

    name = ""
    from_folder = False

    def __init__(self, cfg: EngineConfig, project: Any):
        self.cfg = cfg
        self.project = project

    # ---- the pool ----
    def pool_key(self) -> str:
        """Identifies the pool's current content; a change rebuilds the engine's item index."""
        raise NotImplementedError

    def iter_items(self) -> Iterator[tuple[list[str], list[str]]]:
        """The pool in chunks: (ids, rows as JSON strings); ids may repeat (first wins)."""
        raise NotImplementedError

    def item_schema(self) -> list[dict]:
        """The item columns of the labels dataset (before the label columns)."""
        raise NotImplementedError

    def check_id(self, item_id: Any) -> str:
        """Refuse ids that can't name an item; return the id."""
        if not isinstance(item_id, str) or not item_id or len(item_id) > 4096:
            raise BadItemId(f"item id must be a non-empty string, got {item_id!r}")
        return item_id

    # ---- the queries dataset ----
    def iter_scores(self, queries: Any) -> Iterator[pd.DataFrame]:
        """The queries dataset in chunks: `id, uncertainty, prediction, confidence`."""
        raise NotImplementedError

    @staticmethod
    def _score_frame(ids: list, chunk: pd.DataFrame) -> pd.DataFrame:
        n = len(ids)
        out = pd.DataFrame({"id": pd.Series(ids, dtype=object)})
        unc = chunk["uncertainty"] if "uncertainty" in chunk else pd.Series([np.nan] * n)
        out["uncertainty"] = pd.to_numeric(unc, errors="coerce").to_numpy(dtype="float64")
        if "prediction" in chunk:
            out["prediction"] = [prediction_text(v) for v in chunk["prediction"].tolist()]
        else:
            out["prediction"] = None
        conf = chunk["confidence"] if "confidence" in chunk else pd.Series([np.nan] * n)
        out["confidence"] = pd.to_numeric(conf, errors="coerce").to_numpy(dtype="float64")
        return out

    # ---- one item ----
    def render(self, item_id: str, row: dict) -> dict:
        """The item as JSON for the page."""
        raise NotImplementedError

    def labels_row(self, row: dict) -> dict:
        """The item's columns in the labels dataset (raw row or path), typed for SQL."""
        out = {}
        for col in self.item_schema():
            v = row.get(col["name"])
            if v is not None and col["type"] == "date" and isinstance(v, str):
                v = dt.datetime.fromisoformat(v)
            elif v is not None and col["type"] == "bigint":
                v = int(v)
            elif v is not None and col["type"] == "double":
                v = float(v)
            elif v is not None and col["type"] == "boolean":
                v = bool(v)
            out[col["name"]] = v
        return out

    def features(self, rows: Sequence[dict]) -> pd.DataFrame:
        """Items as the raw frame a `labeling.training` pipeline scores (rows or paths)."""
        names = [c["name"] for c in self.item_schema()]
        return normalize(pd.DataFrame([self.labels_row(r) for r in rows], columns=names),
                         self.item_schema())


class _DatasetType(DataType):
    """Items are rows of a dataset."""

    def _pool(self) -> Any:
        return self.project.dataset(self.cfg.unlabeled)

    _schema: tuple[int, list[dict]] | None = None

    def pool_key(self) -> str:
        ds = self._pool()
        generation = ds.generation()
        if self._schema is not None and self._schema[0] != generation:
            self._schema = None
        return f"dataset:{self.cfg.unlabeled}:{generation}:{self.cfg.id_column or ''}"

    def item_schema(self) -> list[dict]:
        # Cached: read on every label otherwise; pool_key() drops it when the pool changes.
        if self._schema is None:
            ds = self._pool()
            self._schema = (ds.generation(), ds.schema)
        return self._schema[1]

    def _ids_and_lines(self, frame: pd.DataFrame, schema: list[dict]) -> tuple[list, list[str]]:
        frame = normalize(frame, schema)
        lines = json_lines(frame)
        if self.cfg.id_column:
            ids = [canonical_id(v) for v in frame[self.cfg.id_column].tolist()]
        else:
            ids = content_ids(lines)
        return ids, lines

    def iter_items(self) -> Iterator[tuple[list[str], list[str]]]:
        ds = self._pool()
        schema = ds.schema
        for chunk in ds.iter_chunks(chunksize=READ_CHUNK, columns=[c["name"] for c in schema]):
            ids, lines = self._ids_and_lines(chunk, schema)
            keep = [i for i, v in enumerate(ids) if v is not None]
            if len(keep) < len(ids):
                ids = [ids[i] for i in keep]
                lines = [lines[i] for i in keep]
            yield ids, lines

    def iter_scores(self, queries: Any) -> Iterator[pd.DataFrame]:
        schema = self._pool().schema
        have = set(queries.columns)
        need = [self.cfg.id_column] if self.cfg.id_column else [c["name"] for c in schema]
        missing = [c for c in need if c not in have]
        if missing:
            raise LabelloopError(
                f"the queries dataset {queries.name!r} lacks the pool's column(s) "
                f"{', '.join(map(repr, missing))}: run the Query Sampler on {self.cfg.unlabeled!r}"
            )
        scores = [c for c in SCORE_COLUMNS if c in have]
        id_schema = [c for c in schema if c["name"] in need]
        for chunk in queries.iter_chunks(chunksize=READ_CHUNK, columns=need + scores):
            if self.cfg.id_column:
                ids = [canonical_id(v) for v in
                       normalize(chunk[need], id_schema)[self.cfg.id_column].tolist()]
            else:
                ids, _ = self._ids_and_lines(chunk[need], schema)
            yield self._score_frame(ids, chunk)

    def check_id(self, item_id: Any) -> str:
        return super().check_id(item_id)

    def _shown(self) -> list[str]:
        return self.cfg.columns or [c["name"] for c in self.item_schema()]


class Tabular(_DatasetType):
    """A row of a dataset, shown as ordered key/value pairs."""

    name = "tabular"

    def render(self, item_id: str, row: dict) -> dict:
        return {"type": self.name, "fields": [[c, row.get(c)] for c in self._shown()]}


class Text(_DatasetType):
    """A text (one column of a dataset), shown with its line breaks."""

    name = "text"

    def render(self, item_id: str, row: dict) -> dict:
        text_col = self.cfg.text_column or "text"
        text = row.get(text_col)
        others = [c for c in (self.cfg.columns or []) if c != text_col]
        return {"type": self.name, "text": "" if text is None else str(text),
                "fields": [[c, row.get(c)] for c in others]}


class _FolderType(DataType):
    """Items are files of a managed folder; the id is the path inside the folder."""

    from_folder = True
    extensions: tuple[str, ...] = ()

    @property
    def media_types(self) -> list[str]:
        """The content types `media` answers with (those of the extensions)."""
        return sorted({MEDIA_TYPES[e] for e in self.extensions})

    def _folder(self) -> Any:
        return self.project.folder(self.cfg.unlabeled)

    def _files(self) -> list[str]:
        return [p for p in self._folder().list() if p.lower().endswith(self.extensions)]

    _key: tuple[float, str] | None = None

    def pool_key(self) -> str:
        # Listing a big folder is slow: look again at most every FOLDER_CHECK_SECONDS.
        if self._key is not None and time.monotonic() - self._key[0] < FOLDER_CHECK_SECONDS:
            return self._key[1]
        files = self._files()
        digest = hashlib.sha1("\n".join(files).encode("utf-8")).hexdigest()[:16]
        key = f"folder:{self.cfg.unlabeled}:{len(files)}:{digest}"
        self._key = (time.monotonic(), key)
        return key

    def item_schema(self) -> list[dict]:
        return [{"name": PATH, "type": "string"}]

    def iter_items(self) -> Iterator[tuple[list[str], list[str]]]:
        files = self._files()
        for lo in range(0, len(files), READ_CHUNK):
            part = files[lo:lo + READ_CHUNK]
            yield part, [json.dumps({PATH: p}) for p in part]

    def check_id(self, item_id: Any) -> str:
        item_id = super().check_id(item_id)
        pure = PurePosixPath(item_id.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or "\x00" in item_id:
            raise BadItemId(f"item id {item_id!r} escapes folder {self.cfg.unlabeled!r}: ids "
                            "are paths inside the folder, without '..'")
        return item_id

    def iter_scores(self, queries: Any) -> Iterator[pd.DataFrame]:
        have = set(queries.columns)
        if PATH not in have:
            raise LabelloopError(f"the queries dataset {queries.name!r} has no {PATH!r} column: "
                                 f"run the Query Sampler on folder {self.cfg.unlabeled!r}")
        scores = [c for c in SCORE_COLUMNS if c in have]
        for chunk in queries.iter_chunks(chunksize=READ_CHUNK, columns=[PATH] + scores):
            ids = [None if p is None else str(p).replace("\\", "/") for p in chunk[PATH].tolist()]
            yield self._score_frame(ids, chunk)

    def _file(self, item_id: str) -> Path:
        """The item's file, after the folder's escape checks (`..`, absolute, links out)."""
        item_id = self.check_id(item_id)
        if not item_id.lower().endswith(self.extensions):
            raise BadItemId(f"{item_id!r} is not a {self.name} item of folder "
                            f"{self.cfg.unlabeled!r} (extensions: {', '.join(self.extensions)})")
        if PurePosixPath(item_id.replace("\\", "/")).name.startswith("."):
            # Folder.list() leaves dot-files out of the pool: they are not items.
            raise NotFoundError(f"{item_id!r} is not an item of folder {self.cfg.unlabeled!r} "
                                "(files whose name starts with '.' are not in the pool)")
        folder = self._folder()
        try:
            path = folder.resolve(item_id)
        except UnsafePathError as exc:
            raise BadItemId(str(exc)) from None
        if not path.is_file():
            raise NotFoundError(f"no file {item_id!r} in folder {self.cfg.unlabeled!r}")
        return path

    def media(self, item_id: Any) -> FileResponse:
        """The item's file for `GET media?id=`: its content type, an ETag, long caching (the
        page's URL carries the version, so a changed file gets a new URL)."""
        path = self._file(item_id)
        kind = MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        return FileResponse(kind or "application/octet-stream", path=path,
                            etag=_version(path), cache_control="private, max-age=86400")

    def render(self, item_id: str, row: dict) -> dict:
        # The file itself comes from the webapp's media route (relative to its API prefix).
        try:
            version = _version(self._file(item_id))
        except (LabelloopError, OSError):
            version = "missing"
        return {"type": self.name, "path": item_id,
                "media": f"media?id={quote(item_id, safe='')}&v={version}"}


def _version(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


class Image(_FolderType):
    """An image file, served by the webapp's media route."""

    name = "image"
    extensions = IMAGE_EXTENSIONS


class Sound(_FolderType):
    """A sound file, served by the webapp's media route to the page's player."""

    name = "sound"
    extensions = SOUND_EXTENSIONS


DATA_TYPES: dict[str, type[DataType]] = {"tabular": Tabular, "text": Text, "image": Image,
                                          "sound": Sound}


def data_type(cfg: EngineConfig, project: Any) -> DataType:
    """The data type object of a webapp's config."""
    return DATA_TYPES[cfg.data_type](cfg, project)
