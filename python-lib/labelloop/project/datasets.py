"""Datasets: a schema and rows, one SQL table per dataset in the project's database."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ..errors import ConflictError, LabelloopError, NotFoundError
from .db import datasets_table, write_transaction

if TYPE_CHECKING:
    from . import Project

ROW = "_row"  # the hidden ordering key of every dataset table
SQL_TYPES: dict[str, Any] = {
    "string": sa.Text,
    "bigint": sa.BigInteger,
    "double": sa.Float(precision=53),
    "boolean": sa.Boolean,
    "date": sa.DateTime(timezone=True),
}
CHUNK = 50_000


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


def _python_columns(df: pd.DataFrame, schema: Sequence[dict]) -> list[list]:
    """Per-column lists of plain Python values (None for missing) ready for the DB driver."""
    out = []
    for col in schema:
        s = df[col["name"]]
        kind = col["type"]
        if kind == "date":
            s = pd.to_datetime(s, utc=True)
            values = [None if pd.isna(v) else v.to_pydatetime() for v in s]
        elif kind == "double":
            arr = s.to_numpy(dtype="float64", na_value=np.nan)
            values = [None if v != v else v for v in arr.tolist()]
        elif kind in ("bigint", "boolean"):
            values = [None if pd.isna(v) else v for v in s.astype(object).tolist()]
            if kind == "bigint":
                values = [None if v is None else int(v) for v in values]
            else:
                values = [None if v is None else bool(v) for v in values]
        else:
            values = [None if (v is None or (isinstance(v, float) and v != v) or v is pd.NA)
                      else (v if isinstance(v, str) else _to_text(v)) for v in s.tolist()]
        out.append(values)
    return out


def _to_text(v: Any) -> str:
    if isinstance(v, (list, dict)):
        import json

        return json.dumps(v)
    return str(v)


def _coerce_to_schema(df: pd.DataFrame, schema: Sequence[dict]) -> pd.DataFrame:
    """Frame columns read from the DB, typed after the dataset's schema."""
    for col in schema:
        name, kind = col["name"], col["type"]
        s = df[name]
        if kind == "double":
            df[name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif kind == "bigint":
            num = pd.to_numeric(s, errors="coerce")
            df[name] = num.astype("int64") if not num.isna().any() else num.astype("Int64")
        elif kind == "boolean":
            df[name] = s.astype("boolean") if s.isna().any() else s.astype(bool)
        elif kind == "date":
            df[name] = pd.to_datetime(s, utc=True, errors="coerce")
        else:
            df[name] = s.astype(object)
    return df


class Dataset:
    """A named dataset of the project: schema + rows, stored in one SQL table."""

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

    def table(self, conn: sa.Connection | None = None) -> sa.Table:
        """The SQLAlchemy table of the rows (for plugins that need SQL; `_row` orders rows)."""
        info = self._require(conn)
        return _sql_table(info["table_name"], info["schema"])

    def generation(self) -> int:
        """A counter that grows each time the dataset is replaced with `write()`."""
        info = self._info()
        return int(info["generation"]) if info else 0

    # ---- reading ----
    def count(self) -> int:
        """Number of rows (0 when the dataset has no data yet)."""
        if not self.exists():
            return 0
        with self.engine.connect() as conn:
            t = self.table(conn)
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())

    def read(self, columns: Sequence[str] | None = None, limit: int | None = None,
             offset: int = 0) -> pd.DataFrame:
        """All rows (or `limit` rows from `offset`) as a DataFrame, in insertion order."""
        with self.engine.connect() as conn:
            info = self._info(conn)
            if info is None:
                self._require(conn)
            t = _sql_table(info["table_name"], info["schema"])
            schema = self._select_schema(info["schema"], columns)
            q = sa.select(*[t.c[c["name"]] for c in schema]).order_by(t.c[ROW])
            if limit is not None:
                q = q.limit(limit)
            if offset:
                q = q.offset(offset)
            rows = conn.execute(q).fetchall()
        return self._frame(rows, schema)

    def iter_chunks(self, chunksize: int = CHUNK, columns: Sequence[str] | None = None,
                    with_row: bool = False) -> Iterator[pd.DataFrame]:
        """The rows in chunks of `chunksize`, in order; each chunk is read in its own query."""
        with self.engine.connect() as conn:
            info = self._require(conn)
        t = _sql_table(info["table_name"], info["schema"])
        schema = self._select_schema(info["schema"], columns)
        cols = [t.c[ROW]] + [t.c[c["name"]] for c in schema]
        last = 0
        while True:
            q = sa.select(*cols).where(t.c[ROW] > last).order_by(t.c[ROW]).limit(chunksize)
            with self.engine.connect() as conn:
                rows = conn.execute(q).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            frame = self._frame([r[1:] for r in rows], schema)
            if with_row:
                frame.insert(0, ROW, [r[0] for r in rows])
            yield frame
            if len(rows) < chunksize:
                return

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
        if not rows:
            empty = pd.DataFrame({n: pd.Series(dtype=_empty_dtype(c["type"])) for n, c in
                                  zip(names, schema, strict=True)})
            return empty
        df = pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
        return _coerce_to_schema(df, schema)

    def head(self, n: int = 10) -> pd.DataFrame:
        return self.read(limit=n)

    # ---- writing ----
    def write(self, df: pd.DataFrame, conn: sa.Connection | None = None) -> None:
        """Replace schema and rows with `df` atomically (readers see old or new, never half)."""
        schema = schema_of(df)
        if conn is None:
            with write_transaction(self.engine) as c:
                self._write(c, df, schema)
        else:
            self._write(conn, df, schema)

    def _write(self, conn: sa.Connection, df: pd.DataFrame, schema: list[dict]) -> None:
        old = self._info(conn)
        generation = (old["generation"] + 1) if old else 0
        base = "ds_" + re.sub(r"[^a-z0-9_]", "_", self.name.lower())
        table_name = f"{base}_g{generation}"
        existing = set(sa.inspect(conn).get_table_names())
        while table_name in existing:
            generation += 1
            table_name = f"{base}_g{generation}"
        t = _sql_table(table_name, schema)
        t.create(conn)
        self._insert(conn, t, df, schema)
        now = dt.datetime.now(dt.UTC)
        values = {"table_name": table_name, "schema": schema, "generation": generation,
                  "updated": now}
        if old:
            conn.execute(sa.update(datasets_table).where(datasets_table.c.name == self.name)
                         .values(**values))
            _sql_table(old["table_name"], old["schema"]).drop(conn, checkfirst=True)
        else:
            conn.execute(sa.insert(datasets_table).values(name=self.name, **values))

    def append(self, df: pd.DataFrame, conn: sa.Connection | None = None) -> None:
        """Append rows; creates the dataset when it has no data yet. Columns must match."""
        if conn is None:
            with write_transaction(self.engine) as c:
                self._append(c, df)
        else:
            self._append(conn, df)

    def _append(self, conn: sa.Connection, df: pd.DataFrame) -> None:
        info = self._info(conn)
        if info is None:
            self._write(conn, df, schema_of(df))
            return
        schema = info["schema"]
        have = {c["name"] for c in schema}
        extra = [str(c) for c in df.columns if str(c) not in have]
        if extra:
            raise LabelloopError(
                f"cannot append to dataset {self.name!r}: it has no column "
                f"{', '.join(map(repr, extra))} (its columns: {', '.join(sorted(have))})"
            )
        for c in schema:  # missing columns are stored as empty
            if c["name"] not in df.columns:
                df = df.assign(**{c["name"]: None})
        self._insert(conn, _sql_table(info["table_name"], schema), df, schema)
        conn.execute(sa.update(datasets_table).where(datasets_table.c.name == self.name)
                     .values(updated=dt.datetime.now(dt.UTC)))

    def _insert(self, conn: sa.Connection, t: sa.Table, df: pd.DataFrame,
                schema: list[dict]) -> None:
        if df.empty:
            return
        names = [c["name"] for c in schema]
        for start in range(0, len(df), CHUNK):
            part = df.iloc[start:start + CHUNK]
            cols = _python_columns(part, schema)
            records = [dict(zip(names, vals, strict=True)) for vals in zip(*cols, strict=True)]
            conn.execute(sa.insert(t), records)

    def append_rows(self, rows: Iterable[dict], conn: sa.Connection | None = None) -> None:
        """Append rows given as dicts (column -> value)."""
        self.append(pd.DataFrame(list(rows)), conn=conn)

    def drop(self) -> None:
        """Delete the dataset's rows and schema."""
        with write_transaction(self.engine) as conn:
            info = self._info(conn)
            if info is None:
                return
            conn.execute(sa.delete(datasets_table).where(datasets_table.c.name == self.name))
            _sql_table(info["table_name"], info["schema"]).drop(conn, checkfirst=True)

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
        df = self.read()
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt == "parquet":
            df.to_parquet(path, index=False)
        else:
            raise LabelloopError(f"unknown export format {fmt!r}: use csv or parquet")
        return len(df)


def _empty_dtype(kind: str) -> str:
    return {"double": "float64", "bigint": "int64", "boolean": "bool",
            "date": "datetime64[ns, UTC]"}.get(kind, "object")


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
    try:
        if fmt == "csv":
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return pd.read_csv(path, sep=sep)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise LabelloopError(f"cannot read {path} as {fmt}: {exc}") from exc
    raise LabelloopError(f"unknown import format {fmt!r}: use csv or parquet")
