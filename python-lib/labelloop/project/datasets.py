"""Datasets: a schema and rows in the project's database.

Two storages behind one API. Small datasets and datasets that grow row by row (labels,
metadata) are a SQL table with one row per record, so a label is one INSERT or UPDATE.
Large datasets written whole (a pool, a queries dataset) are stored column-wise as Arrow IPC
chunk files under the project's `data/` directory, listed in `ll_dataset_chunks`, which reads
~10x faster. `table()` never converts: a plugin that needs SQL on a column-wise dataset
converts it explicitly with `to_rows()`.

Row-level writes (`insert`, `update`, `delete`) address a row by its key, a number the host
owns (returned by `insert`; it changes when the dataset is replaced). They run in the
caller's transaction, touch `ll_datasets.updated`, and use statements prepared once per
table: they are the labeling hot path.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..errors import ConflictError, LabelloopError, NotFoundError
from .db import dataset_chunks_table, datasets_table, write_transaction

if TYPE_CHECKING:
    from . import Project

ROW = "_row"  # the hidden ordering key of every dataset (1-based insertion order)
SQL_TYPES: dict[str, Any] = {
    "string": sa.Text,
    "bigint": sa.BigInteger,
    "double": sa.Float(precision=53),
    "boolean": sa.Boolean,
    "date": sa.DateTime(timezone=True),
}
CHUNK = 50_000
COLUMNAR_MIN_ROWS = 10_000
CHUNK_ROWS = 100_000
DATA_DIR = "data"  # column-wise chunk files, under the project directory
SWEEP_GRACE = 600  # seconds an unreferenced chunk directory may be a write in progress
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


def _db_values(frame: pd.DataFrame, schema: Sequence[dict], sqlite: bool) -> list[list]:
    """Per-column lists of plain Python values (None for missing) for the DB driver."""
    out = []
    for col in schema:
        s = frame[col["name"]]
        kind = col["type"]
        if kind == "date":
            if sqlite:  # the format SQLAlchemy's SQLite DateTime reads back
                values = [None if pd.isna(v) else v.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S.%f")
                          for v in s]
            else:
                values = [None if pd.isna(v) else v.to_pydatetime() for v in s]
        elif kind == "double":
            values = [None if v != v else v for v in s.to_numpy(dtype="float64").tolist()]
        elif kind in ("bigint", "boolean"):
            values = [None if v is pd.NA or v is None else v for v in s.astype(object).tolist()]
            values = [None if v is None else (int(v) if kind == "bigint" else bool(v)) for v in values]
        else:
            values = s.tolist()
        out.append(values)
    return out


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


_TOUCH_SQL = sa.text("UPDATE ll_datasets SET updated = :now WHERE name = :name "
                     "RETURNING table_name, storage").bindparams(
    sa.bindparam("now", type_=datasets_table.c.updated.type))


class _RowOps:
    """Statements of one row table, built once: building them costs more than running them."""

    def __init__(self, table: sa.Table, dialect: Any):
        quote = dialect.identifier_preparer.quote
        self.tname = quote(table.name)
        self.quote = quote
        cols = [c for c in table.columns if c.name != ROW]
        self.params = {c.name: f"p{i}" for i, c in enumerate(cols)}
        self.types = {c.name: c.type for c in cols}
        names = ", ".join(quote(n) for n in self.params)
        binds = ", ".join(f":{p}" for p in self.params.values())
        self.insert = sa.text(f"INSERT INTO {self.tname} ({names}) VALUES ({binds}) "
                              f"RETURNING {ROW}").bindparams(
            *[sa.bindparam(p, type_=self.types[n]) for n, p in self.params.items()])
        self._cache: dict[tuple, sa.TextClause] = {}

    def check(self, dataset: str, values: dict) -> None:
        unknown = [n for n in values if n not in self.params]
        if unknown:
            raise LabelloopError(f"dataset {dataset!r} has no column "
                                 f"{', '.join(map(repr, unknown))}; its columns are "
                                 f"{', '.join(self.params)}")

    def statement(self, kind: str, cols: tuple, match: tuple, by_key: bool) -> sa.TextClause:
        key = (kind, cols, match, by_key)
        stmt = self._cache.get(key)
        if stmt is not None:
            return stmt
        q, p = self.quote, self.params
        where = [f"{ROW} = :key"] if by_key else []
        where += [f"{q(n)} = :m_{p[n]}" for n in match]
        if not where:
            raise LabelloopError("a row-level update or delete needs a key or a match")
        binds = [sa.bindparam(p[n], type_=self.types[n]) for n in cols]
        binds += [sa.bindparam(f"m_{p[n]}", type_=self.types[n]) for n in match]
        if kind == "update":
            sets = ", ".join(f"{q(n)} = :{p[n]}" for n in cols)
            sql = f"UPDATE {self.tname} SET {sets} WHERE {' AND '.join(where)}"
        else:
            sql = f"DELETE FROM {self.tname} WHERE {' AND '.join(where)}"
        stmt = self._cache[key] = sa.text(sql).bindparams(*binds)
        return stmt


# Statements per (database, table name): a replaced dataset gets a new table name, and a
# dropped one is forgotten below.
_ROW_OPS: dict[tuple[str, str], _RowOps] = {}


def _forget_row_ops(conn: sa.Connection, table_name: str) -> None:
    _ROW_OPS.pop((str(conn.engine.url), table_name), None)


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (new files, a rename) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class Dataset:
    """A named dataset of the project: schema + rows."""

    def __init__(self, project: Project, name: str):
        self.project = project
        self.name = name

    def __repr__(self) -> str:
        return f"Dataset({self.name!r})"

    # ---- metadata ----
    @property
    def engine(self) -> sa.Engine:
        return self.project.engine

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def _info(self, conn: sa.Connection | None = None) -> dict | None:
        q = sa.select(datasets_table).where(datasets_table.c.name == self.name)
        if conn is not None:
            row = conn.execute(q).mappings().first()
        else:
            with self.engine.connect() as c:
                row = c.execute(q).mappings().first()
        return dict(row) if row else None

    def exists(self) -> bool:
        """Whether the dataset has been written (it may be declared in project.json only)."""
        return self._info() is not None

    def _require(self, conn: sa.Connection | None = None) -> dict:
        info = self._info(conn)
        if info is None:
            raise NotFoundError(
                f"dataset {self.name!r} has no data yet: import it (`labelloop dataset import "
                f"{self.name} FILE`) or build it (`labelloop flow build {self.name}`)"
            )
        return info

    @property
    def schema(self) -> list[dict]:
        """The ordered columns `[{"name", "type"}]` (empty if the dataset has no data yet)."""
        info = self._info()
        return list(info["schema"]) if info else []

    @property
    def columns(self) -> list[str]:
        return [c["name"] for c in self.schema]

    @property
    def storage(self) -> str | None:
        info = self._info()
        return info["storage"] if info else None

    def generation(self) -> int:
        """A counter that grows each time the dataset is replaced with `write()`."""
        info = self._info()
        return int(info["generation"]) if info else 0

    def table(self, conn: sa.Connection | None = None) -> sa.Table:
        """The SQL table of the rows (`_row` orders them). No side effect: a dataset stored
        column-wise is refused with a ConflictError; convert it with `to_rows()` first."""
        info = self._require(conn)
        if info["storage"] == "columns":
            raise ConflictError(
                f"dataset {self.name!r} is stored column-wise (chunk files), so it has no SQL "
                "table: read it with read()/iter_chunks(), or convert it with to_rows() first")
        return _sql_table(info["table_name"], info["schema"])

    def to_rows(self, conn: sa.Connection | None = None) -> sa.Table:
        """Convert a column-wise dataset to row storage (nothing to do if it has rows); its
        SQL table. In `conn`'s transaction when given, else in a write transaction of its own."""
        if conn is None:
            info = self._require()
            if info["storage"] == "rows":  # nothing to convert: no write lock taken
                return _sql_table(info["table_name"], info["schema"])
            with write_transaction(self.engine) as c:
                info = self._to_rows(c)
            self._sweep()
        else:
            info = self._to_rows(conn)
        return _sql_table(info["table_name"], info["schema"])

    def _to_rows(self, conn: sa.Connection) -> dict:
        info = self._require(conn)
        if info["storage"] != "columns":
            return info
        t = _sql_table(info["table_name"], info["schema"])
        t.create(conn)
        for _first, frame in self._stored_chunks(conn, info, None):
            self._insert_rows(conn, t, frame, info["schema"])
        self._drop_storage(conn, info)
        conn.execute(sa.update(datasets_table).where(datasets_table.c.name == self.name)
                     .values(storage="rows"))
        return {**info, "storage": "rows"}

    # ---- reading ----
    def count(self, conn: sa.Connection | None = None) -> int:
        """Number of rows (0 when the dataset has no data yet)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.count(c)
        info = self._info(conn)
        if info is None:
            return 0
        if info["storage"] == "columns":
            c = dataset_chunks_table.c
            q = sa.select(sa.func.coalesce(sa.func.sum(c.rows), 0)).where(
                c.table_name == info["table_name"])
        else:
            q = sa.select(sa.func.count()).select_from(_sql_table(info["table_name"], info["schema"]))
        return int(conn.execute(q).scalar_one())

    def read(self, columns: Sequence[str] | None = None, limit: int | None = None,
             offset: int = 0) -> pd.DataFrame:
        """All rows (or `limit` rows from `offset`) as a DataFrame, in insertion order."""
        with self.engine.connect() as conn:
            info = self._require(conn)
            schema = self._select_schema(info["schema"], columns)
            if info["storage"] == "columns":
                frames = []
                end = None if limit is None else offset + limit
                for first, frame in self._stored_chunks(conn, info, columns, offset, end):
                    lo = max(0, offset - first)
                    hi = len(frame) if end is None else min(len(frame), end - first)
                    frames.append(frame.iloc[lo:hi])
                if not frames:
                    return self._frame([], schema)
                return pd.concat(frames, ignore_index=True)
            t = _sql_table(info["table_name"], info["schema"])
            sql = self._select_sql(conn, t, schema) + f" ORDER BY {ROW}"
            if limit is not None or offset:
                if limit is not None:
                    sql += f" LIMIT {int(limit)}"
                elif conn.dialect.name == "sqlite":  # SQLite needs a LIMIT before OFFSET
                    sql += " LIMIT -1"
                sql += f" OFFSET {int(offset)}"
            rows = conn.exec_driver_sql(sql).fetchall()
        return self._frame(rows, schema)

    def iter_chunks(self, chunksize: int = CHUNK, columns: Sequence[str] | None = None,
                    with_row: bool = False) -> Iterator[pd.DataFrame]:
        """The rows in chunks of at most `chunksize`, in order, each read in its own query."""
        with self.engine.connect() as conn:
            info = self._require(conn)
        schema = self._select_schema(info["schema"], columns)
        if info["storage"] == "columns":
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
            return
        last = 0
        while True:
            with self.engine.connect() as conn:
                t = _sql_table(info["table_name"], info["schema"])
                sql = (f"SELECT {ROW}, " + self._select_sql(conn, t, schema)[len("SELECT "):]
                       + f" WHERE {ROW} > {int(last)} ORDER BY {ROW} LIMIT {int(chunksize)}")
                rows = conn.exec_driver_sql(sql).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            frame = self._frame([r[1:] for r in rows], schema)
            if with_row:
                frame.insert(0, ROW, [r[0] for r in rows])
            yield frame
            if len(rows) < chunksize:
                return

    def head(self, n: int = 10) -> pd.DataFrame:
        return self.read(limit=n)

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

    @staticmethod
    def _select_sql(conn: sa.Connection, t: sa.Table, schema: list[dict]) -> str:
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c["name"]) for c in schema) or "NULL"
        return f"SELECT {cols} FROM {quote(t.name)}"

    def _select_schema(self, schema: list[dict], columns: Sequence[str] | None) -> list[dict]:
        if columns is None:
            return list(schema)
        by_name = {c["name"]: c for c in schema}
        missing = [c for c in columns if c not in by_name]
        if missing:
            raise LabelloopError(
                f"dataset {self.name!r} has no column {', '.join(map(repr, missing))}; "
                f"its columns are {', '.join(by_name)}"
            )
        return [by_name[c] for c in columns]

    @staticmethod
    def _frame(rows: list, schema: list[dict]) -> pd.DataFrame:
        names = [c["name"] for c in schema]
        df = pd.DataFrame.from_records(rows, columns=names, coerce_float=True) if rows else \
            pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
        return normalize(df, schema)

    # ---- writing ----
    def write(self, df: pd.DataFrame, conn: sa.Connection | None = None,
              storage: str | None = None) -> None:
        """Replace schema and rows with `df` atomically (readers see old or new, never half).

        `storage`: "rows" or "columns"; by default large frames are stored column-wise.
        """
        schema = schema_of(df)
        if storage is None:
            storage = "columns" if len(df) >= COLUMNAR_MIN_ROWS else "rows"
        if storage not in STORAGES:
            raise LabelloopError(f"unknown storage {storage!r}: use one of {', '.join(STORAGES)}")
        if conn is None:
            # The chunk files are written and synced before the write lock is taken: other
            # writers (annotators) wait only for the short swap.
            with self.prepare(df, storage) as prepared, write_transaction(self.engine) as c:
                prepared.commit(c)
            self._sweep()  # the generation just replaced, and any earlier leftovers
        else:
            # The caller commits later: only leftovers of earlier replacements can go now.
            self._sweep()
            self._write(conn, df, schema, storage)

    def prepare(self, df: pd.DataFrame, storage: str | None = None) -> PreparedWrite:
        """Get a replacement of the dataset with `df` ready without any lock: column-wise
        data is encoded and its chunk files written and synced now. `commit(conn)` on the
        result then swaps it in, in the caller's write transaction, with a few short
        statements. Use it as a context manager: leaving the block without a commit (an
        error) removes the files. `storage` as in `write()`."""
        schema = schema_of(df)
        if storage is None:
            storage = "columns" if len(df) >= COLUMNAR_MIN_ROWS else "rows"
        if storage not in STORAGES:
            raise LabelloopError(f"unknown storage {storage!r}: use one of {', '.join(STORAGES)}")
        frame = normalize(df, schema)
        if storage == "rows":
            return PreparedWrite(self, schema, storage, frame, None, [])
        # A staging directory of its own; an orphan (a crash before the commit) is swept.
        base = "ds_" + re.sub(r"[^a-z0-9_]", "_", self.name.lower())
        staging = f"{base}_p{uuid.uuid4().hex[:12]}"
        chunks = []
        prepared = PreparedWrite(self, schema, storage, None, staging, chunks)
        try:
            for seq, start in enumerate(range(0, max(len(frame), 1), CHUNK_ROWS)):
                part = frame.iloc[start:start + CHUNK_ROWS]
                if part.empty and start:
                    break
                self._write_chunk_file(staging, seq, _encode(part))
                chunks.append((seq, start, len(part)))
            _fsync_dir(self._data_dir / staging)
        except BaseException:
            prepared.discard()
            raise
        return prepared

    def _write(self, conn: sa.Connection, df: pd.DataFrame | None, schema: list[dict],
               storage: str, prepared: PreparedWrite | None = None) -> None:
        old = self._info(conn)
        generation = (old["generation"] + 1) if old else 0
        base = "ds_" + re.sub(r"[^a-z0-9_]", "_", self.name.lower())
        table_name = f"{base}_g{generation}"
        existing = set(sa.inspect(conn).get_table_names())
        used = set(conn.execute(sa.select(datasets_table.c.table_name)).scalars())
        while table_name in existing or table_name in used:
            generation += 1
            table_name = f"{base}_g{generation}"
        if prepared is not None and prepared.staging is not None:
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
        elif storage == "columns":
            self._insert_chunks(conn, table_name, normalize(df, schema), 0)
        else:
            frame = prepared.frame if prepared is not None else normalize(df, schema)
            t = _sql_table(table_name, schema)
            t.create(conn)
            self._insert_rows(conn, t, frame, schema)
        values = {"table_name": table_name, "schema": schema, "generation": generation,
                  "updated": dt.datetime.now(dt.UTC), "storage": storage}
        if old:
            conn.execute(sa.update(datasets_table).where(datasets_table.c.name == self.name)
                         .values(**values))
            self._drop_storage(conn, old)
        else:
            conn.execute(sa.insert(datasets_table).values(name=self.name, **values))

    def _drop_storage(self, conn: sa.Connection, info: dict) -> None:
        if info["storage"] == "columns":
            conn.execute(sa.delete(dataset_chunks_table)
                         .where(dataset_chunks_table.c.table_name == info["table_name"]))
            old = self._data_dir / info["table_name"]
            if old.is_dir():  # aged: the sweep after the commit deletes it without grace
                os.utime(old, (0, 0))
        else:
            _sql_table(info["table_name"], info["schema"]).drop(conn, checkfirst=True)
            _forget_row_ops(conn, info["table_name"])

    def append(self, df: pd.DataFrame, conn: sa.Connection | None = None) -> None:
        """Append rows; creates the dataset (row storage) when it has no data yet."""
        if conn is None:
            with write_transaction(self.engine) as c:
                self._append(c, df)
        else:
            self._append(conn, df)

    def _append(self, conn: sa.Connection, df: pd.DataFrame) -> None:
        info = self._info(conn)
        if info is None:
            self._write(conn, df, schema_of(df), "rows")
            return
        schema = info["schema"]
        have = {c["name"] for c in schema}
        extra = [str(c) for c in df.columns if str(c) not in have]
        if extra:
            raise LabelloopError(
                f"cannot append to dataset {self.name!r}: it has no column "
                f"{', '.join(map(repr, extra))} (its columns: {', '.join(c['name'] for c in schema)})"
            )
        frame = normalize(df, schema)
        if info["storage"] == "columns":
            self._insert_chunks(conn, info["table_name"], frame, self.count(conn))
        else:
            self._insert_rows(conn, _sql_table(info["table_name"], schema), frame, schema)
        conn.execute(sa.update(datasets_table).where(datasets_table.c.name == self.name)
                     .values(updated=dt.datetime.now(dt.UTC)))

    def append_rows(self, rows: Iterable[dict], conn: sa.Connection | None = None) -> None:
        """Append rows given as dicts (column -> value)."""
        self.append(pd.DataFrame(list(rows)), conn=conn)

    def _insert_rows(self, conn: sa.Connection, t: sa.Table, frame: pd.DataFrame,
                     schema: list[dict]) -> None:
        if frame.empty:
            return
        names = [c["name"] for c in schema]
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            quote = conn.dialect.identifier_preparer.quote
            sql = (f"INSERT INTO {quote(t.name)} ({', '.join(quote(n) for n in names)}) "
                   f"VALUES ({', '.join('?' for _ in names)})")
        for start in range(0, len(frame), CHUNK):
            cols = _db_values(frame.iloc[start:start + CHUNK], schema, sqlite)
            if sqlite:
                conn.exec_driver_sql(sql, list(zip(*cols, strict=True)))
            else:
                conn.execute(sa.insert(t), [dict(zip(names, vals, strict=True))
                                            for vals in zip(*cols, strict=True)])

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

    def drop(self) -> None:
        """Delete the dataset's rows and schema."""
        with write_transaction(self.engine) as conn:
            info = self._info(conn)
            if info is None:
                return
            conn.execute(sa.delete(datasets_table).where(datasets_table.c.name == self.name))
            self._drop_storage(conn, info)
        self._sweep()

    # ---- row-level writes (the caller's transaction) ----
    def insert(self, conn: sa.Connection, values: dict, ignore_extra: bool = False) -> int:
        """Add one row (`values`: column -> value; missing columns are NULL) to a row-stored
        dataset in `conn`'s transaction; the new row's key (for `update` and `delete`).

        Values of columns the dataset lacks are refused, or left out with `ignore_extra`.
        """
        ops = self._row_ops(conn)
        if not ignore_extra:
            ops.check(self.name, values)
        return int(conn.execute(ops.insert, {p: values.get(n) for n, p in ops.params.items()}
                                ).scalar_one())

    def update(self, conn: sa.Connection, key: int | None, values: dict,
               match: dict | None = None, ignore_extra: bool = False) -> int:
        """Set `values` on the row `key`, only if its columns equal `match`; with `key=None`,
        on every row matching `match`. The number of rows changed (0: no such row, e.g. the
        dataset was replaced). With `ignore_extra`, values of columns the dataset lacks are
        left out and a `match` on such a column matches nothing."""
        ops = self._row_ops(conn)
        match = match or {}
        if ignore_extra:
            values = {n: v for n, v in values.items() if n in ops.params}
            if any(n not in ops.params for n in match):
                return 0
        else:
            ops.check(self.name, {**values, **match})
        if not values:
            return 0
        stmt = ops.statement("update", tuple(values), tuple(match), key is not None)
        args = {ops.params[n]: v for n, v in values.items()}
        args.update({f"m_{ops.params[n]}": v for n, v in match.items()})
        return conn.execute(stmt, {**args, "key": key}).rowcount

    def delete(self, conn: sa.Connection, key: int | None, match: dict | None = None,
               ignore_extra: bool = False) -> int:
        """Delete the row `key`, only if its columns equal `match`; with `key=None`, every
        row matching `match`. The number of rows deleted (`ignore_extra`: as in `update`)."""
        ops = self._row_ops(conn)
        match = match or {}
        if ignore_extra and any(n not in ops.params for n in match):
            return 0
        ops.check(self.name, match)
        stmt = ops.statement("delete", (), tuple(match), key is not None)
        args = {f"m_{ops.params[n]}": v for n, v in match.items()}
        return conn.execute(stmt, {**args, "key": key}).rowcount

    def _row_ops(self, conn: sa.Connection) -> _RowOps:
        # One statement both marks the dataset as changed and says which table holds it now.
        info = conn.execute(_TOUCH_SQL, {"name": self.name, "now": dt.datetime.now(dt.UTC)}
                            ).first()
        if info is None:
            self._require(conn)  # raises the usual "no data yet" error
        if info.storage != "rows":
            raise ConflictError(
                f"dataset {self.name!r} is stored column-wise (chunk files): row-level writes "
                "need row storage; convert it with to_rows() first")
        key = (str(conn.engine.url), info.table_name)
        ops = _ROW_OPS.get(key)
        if ops is None:
            schema = self._require(conn)["schema"]
            ops = _ROW_OPS[key] = _RowOps(_sql_table(info.table_name, schema), conn.dialect)
        return ops

    # ---- files ----
    def import_file(self, path: str | Path, replace: bool = False, fmt: str | None = None) -> int:
        """Import a CSV or Parquet file; refuses to overwrite existing data unless `replace`."""
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"no such file: {path}")
        if self.exists() and not replace:
            raise ConflictError(
                f"dataset {self.name!r} already has data ({self.count()} rows): pass --replace "
                "to overwrite it, or import into another dataset name"
            )
        df = read_table_file(path, fmt)
        self.write(df)
        return len(df)

    def export_file(self, path: str | Path, fmt: str | None = None) -> int:
        """Export to CSV or Parquet (format from the extension unless `fmt`)."""
        path = Path(path)
        fmt = (fmt or _format_of(path)).lower()
        if fmt not in ("csv", "parquet"):
            raise LabelloopError(f"unknown export format {fmt!r}: use csv or parquet")
        df = self.read()
        # Written beside the target then renamed, so a failed export leaves no half file.
        tmp = path.with_name(f".{path.name}.part")
        try:
            if fmt == "csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LabelloopError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return len(df)


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


def read_chunk_file(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of one chunk file listed by `Dataset.chunk_files()`, typed as `read()` gives."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConflictError(f"chunk file {path} is gone: the dataset was replaced; "
                            "read it again") from None
    return _decode(data, columns)
