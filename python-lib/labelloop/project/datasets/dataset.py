"""Datasets: a schema and rows in the project's database.

Two storages behind one API. Small datasets and datasets that grow row by row (labels,
metadata) are a SQL table with one row per record (`rows.py`), so a label is one INSERT or
UPDATE. Large datasets written whole (a pool, a queries dataset) are stored column-wise as
Arrow IPC chunk files (`chunks.py`), which reads ~10x faster. `table()` never converts: a
plugin that needs SQL on a column-wise dataset converts it explicitly with `to_rows()`.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa

from ...errors import ConflictError, LabelloopError, NotFoundError
from ..db import dataset_chunks_table, datasets_table, write_transaction
from .chunks import COLUMNAR_MIN_ROWS, ChunkStorage, PreparedWrite
from .files import _format_of, read_table_file, write_csv
from .rows import CHUNK, RowStorage, _forget_row_ops
from .schema import STORAGES, _sql_table, normalize, schema_of

if TYPE_CHECKING:
    from .. import Project


class Dataset(RowStorage, ChunkStorage):
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

    def updated(self, conn: sa.Connection | None = None) -> dt.datetime | None:
        """When the dataset was last written (replaced, appended, or a row written), in UTC;
        None when it has no data. Set inside the writing transaction, so under the write lock
        every writer takes: what a later transaction writes is dated after it."""
        info = self._info(conn)
        if info is None or info["updated"] is None:
            return None
        when = info["updated"]
        # SQLite hands back a naive datetime of the UTC time it was given.
        return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)

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
                return self._read_columns(conn, info, schema, columns, limit, offset)
            return self._read_rows(conn, info, schema, limit, offset)

    def iter_chunks(self, chunksize: int = CHUNK, columns: Sequence[str] | None = None,
                    with_row: bool = False) -> Iterator[pd.DataFrame]:
        """The rows in chunks of at most `chunksize`, in order, each read in its own query."""
        with self.engine.connect() as conn:
            info = self._require(conn)
        schema = self._select_schema(info["schema"], columns)
        if info["storage"] == "columns":
            yield from self._iter_columns(info, schema, chunksize, with_row)
        else:
            yield from self._iter_rows(info, schema, chunksize, with_row)

    def head(self, n: int = 10) -> pd.DataFrame:
        return self.read(limit=n)

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
        prepared = PreparedWrite(self, schema, storage, None, staging, [])
        self._stage_chunks(prepared, frame)
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
            self._commit_staged(conn, prepared, table_name)
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
            self._drop_chunks(conn, info)
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

    def drop(self) -> None:
        """Delete the dataset's rows and schema."""
        with write_transaction(self.engine) as conn:
            info = self._info(conn)
            if info is None:
                return
            conn.execute(sa.delete(datasets_table).where(datasets_table.c.name == self.name))
            self._drop_storage(conn, info)
        self._sweep()

    # ---- files ----
    def import_file(self, path: str | Path, replace: bool = False, fmt: str | None = None,
                    encoding: str | None = None, sep: str | None = None) -> int:
        """Import a CSV or Parquet file; refuses to overwrite existing data unless `replace`.
        CSV: `encoding` (default utf-8) and `sep` (default from the extension)."""
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"no such file: {path}")
        if self.exists() and not replace:
            raise ConflictError(
                f"dataset {self.name!r} already has data ({self.count()} rows): pass --replace "
                "to overwrite it, or import into another dataset name"
            )
        df = read_table_file(path, fmt, encoding, sep)
        self.write(df)
        return len(df)

    def export_file(self, path: str | Path, fmt: str | None = None,
                    encoding: str | None = None, sep: str | None = None) -> int:
        """Export to CSV or Parquet (format from the extension unless `fmt`); CSV with
        `encoding` (default utf-8) and `sep` (default from the extension)."""
        path = Path(path)
        fmt = (fmt or _format_of(path)).lower()
        if fmt not in ("csv", "parquet"):
            raise LabelloopError(f"unknown export format {fmt!r}: use csv or parquet")
        df = self.read()
        # Written beside the target then renamed, so a failed export leaves no half file.
        tmp = path.with_name(f".{path.name}.part")
        try:
            if fmt == "csv":
                write_csv(df, tmp, path, encoding, sep)
            else:
                df.to_parquet(tmp, index=False)
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LabelloopError(f"cannot write {path}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(df)
