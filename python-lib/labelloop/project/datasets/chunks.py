"""Chunk storage: a dataset stored column-wise as Arrow IPC chunk files.

The files live under the project's `data/` directory, one directory per generation of a
dataset, and are listed in `ll_dataset_chunks`. A file is written and synced before the
database refers to it; directories no dataset refers to any more are swept.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ...errors import ConflictError, LabelloopError
from ..db import dataset_chunks_table
from .schema import ROW

if TYPE_CHECKING:
    from .. import Project
    from .dataset import Dataset

COLUMNAR_MIN_ROWS = 10_000  # write() stores a frame this long or longer column-wise
CHUNK_ROWS = 100_000
DATA_DIR = "data"  # column-wise chunk files, under the project directory
SWEEP_GRACE = 600  # seconds an unreferenced chunk directory may be a write in progress


def _encode(frame: pd.DataFrame) -> bytes:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = pa.Table.from_pandas(frame, preserve_index=False)
    # lz4 saves nothing on float columns but costs time both ways; it pays on text.
    numeric = all(pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)
                  for t in table.schema.types)
    options = ipc.IpcWriteOptions(compression=None if numeric else "lz4")
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return sink.getvalue()


def _decode(data: bytes, columns: Sequence[str] | None, lo: int = 0,
            hi: int | None = None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.ipc as ipc

    table = ipc.open_stream(pa.py_buffer(data)).read_all()  # zero-copy over the bytes
    if columns is not None:
        table = table.select(list(columns))
    if lo or hi is not None:  # rows lo..hi-1 only: converting the rest to pandas is wasted
        table = table.slice(lo, (table.num_rows if hi is None else hi) - lo)
    # One block per column: no consolidation copy, and columns can be freed one by one.
    frame = table.to_pandas(split_blocks=True)
    for name in frame.columns:  # same dtype as row storage gives (object), whatever pandas infers
        if pd.api.types.is_string_dtype(frame[name]) and frame[name].dtype != object:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (new files, a rename) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_chunk_file(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of one chunk file listed by `Dataset.chunk_files()`, typed as `read()` gives."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConflictError(f"chunk file {path} is gone: the dataset was replaced; "
                            "read it again") from None
    return _decode(data, columns)


class PreparedWrite:
    """A dataset replacement made ready outside the write lock (see `Dataset.prepare`)."""

    def __init__(self, dataset: Dataset, schema: list[dict], storage: str,
                 frame: pd.DataFrame | None, staging: str | None, chunks: list[tuple]):
        self.dataset = dataset
        self.schema = schema
        self.storage = storage
        self.frame = frame
        self.staging = staging  # the chunk files' directory until the commit moves it
        self.chunks = chunks  # (seq, first row, rows) per chunk file
        self.committed = False

    def commit(self, conn: sa.Connection) -> None:
        """Swap the prepared data in, in `conn`'s write transaction (once)."""
        if self.committed:
            raise LabelloopError(f"this prepared write of {self.dataset.name!r} was already "
                                 "committed: prepare it again")
        self.dataset._write(conn, None, self.schema, self.storage, prepared=self)
        self.committed = True

    def discard(self) -> None:
        """Remove the prepared files if the commit did not take them."""
        if self.staging is not None:
            shutil.rmtree(self.dataset._data_dir / self.staging, ignore_errors=True)
            self.staging = None
        self.frame = None

    def __enter__(self) -> PreparedWrite:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()


class ChunkStorage:
    """The chunk-storage half of `Dataset` (which provides `name`, `project`, `engine` and
    `_require`)."""

    name: str
    project: Project

    # ---- reading ----
    def chunk_files(self) -> list[dict]:
        """The column-wise chunk files of the current rows, in order, for readers in other
        processes (e.g. a Dask cluster sharing the project's file system).

        Each is `{"path" (absolute), "first_row" (0-based), "rows"}`; read one with
        `read_chunk_file`. Empty when the dataset is stored as rows (read it with
        `iter_chunks`). A file may vanish once the dataset is replaced (after a grace period).
        """
        c = dataset_chunks_table.c
        with self.engine.connect() as conn:
            info = self._require(conn)
            if info["storage"] != "columns":
                return []
            rows = conn.execute(sa.select(c.first_row, c.rows, c.file).where(
                c.table_name == info["table_name"]).order_by(c.seq)).all()
        return [{"path": str(self.project.dir / r.file), "first_row": int(r.first_row),
                 "rows": int(r.rows)} for r in rows]

    def _read_columns(self, conn: sa.Connection, info: dict, schema: list[dict],
                      columns: Sequence[str] | None, limit: int | None,
                      offset: int) -> pd.DataFrame:
        frames = []
        end = None if limit is None else offset + limit
        for first, frame in self._stored_chunks(conn, info, columns, offset, end):
            lo = max(0, offset - first)
            hi = len(frame) if end is None else min(len(frame), end - first)
            frames.append(frame.iloc[lo:hi])
        if not frames:
            return self._frame([], schema)
        return pd.concat(frames, ignore_index=True)

    def _iter_columns(self, info: dict, schema: list[dict], chunksize: int,
                      with_row: bool) -> Iterator[pd.DataFrame]:
        c = dataset_chunks_table.c
        with self.engine.connect() as conn:
            seqs = conn.execute(sa.select(c.seq).where(c.table_name == info["table_name"])
                                .order_by(c.seq)).scalars().all()
        for seq in seqs:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(c.first_row, c.file).where(
                    c.table_name == info["table_name"], c.seq == seq)).first()
            if row is None:  # replaced meanwhile: the old generation is gone
                raise ConflictError(f"dataset {self.name!r} was replaced while being read")
            frame = _decode(self._chunk_bytes(row.file), [s["name"] for s in schema])
            for lo in range(0, len(frame), chunksize):
                part = frame.iloc[lo:lo + chunksize].reset_index(drop=True)
                if with_row:
                    part.insert(0, ROW, np.arange(row.first_row + lo + 1,
                                                  row.first_row + lo + 1 + len(part)))
                yield part

    def _stored_chunks(self, conn: sa.Connection, info: dict, columns: Sequence[str] | None,
                       start: int = 0, end: int | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
        c = dataset_chunks_table.c
        q = sa.select(c.first_row, c.file).where(c.table_name == info["table_name"])
        q = q.where(c.first_row + c.rows > start)
        if end is not None:
            q = q.where(c.first_row < end)
        for row in conn.execute(q.order_by(c.seq)).all():
            # Only the rows asked for are converted (a slice of a chunk holds the GIL less).
            lo = max(0, start - row.first_row)
            hi = None if end is None else max(lo, end - row.first_row)
            yield row.first_row + lo, _decode(self._chunk_bytes(row.file), columns, lo, hi)

    # ---- chunk files ----
    @property
    def _data_dir(self) -> Path:
        return self.project.dir / DATA_DIR

    def _chunk_bytes(self, rel: str) -> bytes:
        try:
            return (self.project.dir / rel).read_bytes()
        except FileNotFoundError:  # swept after another process replaced the dataset
            raise ConflictError(f"dataset {self.name!r} was replaced while being read: "
                                "read it again") from None

    def _write_chunk_file(self, table_name: str, seq: int, data: bytes) -> str:
        """Write one chunk durably (fsync before the database commit refers to it)."""
        rel = f"{DATA_DIR}/{table_name}/{seq:06d}.arrow"
        target = self.project.dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        return rel

    def _sweep(self) -> None:
        """Delete chunk directories no dataset refers to any more (replaced, dropped, rolled back).

        A directory another process is still filling is young: it is left alone for a grace
        period. A generation this process replaced was aged on purpose, so it goes at once.
        """
        root = self._data_dir
        if not root.is_dir():
            return
        with self.engine.connect() as conn:
            live = set(conn.execute(sa.select(dataset_chunks_table.c.table_name).distinct())
                       .scalars())
        now = time.time()
        for d in root.iterdir():
            try:
                if d.is_dir() and d.name not in live and now - d.stat().st_mtime > SWEEP_GRACE:
                    shutil.rmtree(d, ignore_errors=True)
            except FileNotFoundError:
                pass

    # ---- writing ----
    def _stage_chunks(self, prepared: PreparedWrite, frame: pd.DataFrame) -> None:
        """Write `frame`'s chunk files into the prepared write's staging directory."""
        try:
            for seq, start in enumerate(range(0, max(len(frame), 1), CHUNK_ROWS)):
                part = frame.iloc[start:start + CHUNK_ROWS]
                if part.empty and start:
                    break
                self._write_chunk_file(prepared.staging, seq, _encode(part))
                prepared.chunks.append((seq, start, len(part)))
            _fsync_dir(self._data_dir / prepared.staging)
        except BaseException:
            prepared.discard()
            raise

    def _commit_staged(self, conn: sa.Connection, prepared: PreparedWrite,
                       table_name: str) -> None:
        """Move the staged chunk files to `table_name`'s directory and list them."""
        target = self._data_dir / table_name
        if target.exists():  # a leftover of a rolled-back write: no dataset refers to it
            shutil.rmtree(target)
        os.replace(self._data_dir / prepared.staging, target)
        _fsync_dir(self._data_dir)
        prepared.staging = None
        conn.execute(sa.insert(dataset_chunks_table), [
            {"table_name": table_name, "seq": seq, "first_row": first, "rows": rows,
             "file": f"{DATA_DIR}/{table_name}/{seq:06d}.arrow"}
            for seq, first, rows in prepared.chunks])

    def _insert_chunks(self, conn: sa.Connection, table_name: str, frame: pd.DataFrame,
                       first_row: int) -> None:
        c = dataset_chunks_table.c
        seq = conn.execute(sa.select(sa.func.coalesce(sa.func.max(c.seq), -1))
                           .where(c.table_name == table_name)).scalar_one() + 1
        for start in range(0, max(len(frame), 1), CHUNK_ROWS):
            part = frame.iloc[start:start + CHUNK_ROWS]
            if part.empty and start:
                break
            rel = self._write_chunk_file(table_name, seq, _encode(part))
            conn.execute(sa.insert(dataset_chunks_table).values(
                table_name=table_name, seq=seq, first_row=first_row + start, rows=len(part),
                file=rel))
            seq += 1

    def _drop_chunks(self, conn: sa.Connection, info: dict) -> None:
        conn.execute(sa.delete(dataset_chunks_table)
                     .where(dataset_chunks_table.c.table_name == info["table_name"]))
        old = self._data_dir / info["table_name"]
        if old.is_dir():  # aged: the sweep after the commit deletes it without grace
            os.utime(old, (0, 0))
