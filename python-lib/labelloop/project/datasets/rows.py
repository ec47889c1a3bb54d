"""Row storage: a dataset as a SQL table with one row per record, and the row-level writes.

Row-level writes (`insert`, `update`, `delete`) address a row by its key, a number the host
owns (returned by `insert`; it changes when the dataset is replaced). They run in the
caller's transaction, touch `ll_datasets.updated` (once per dataset and transaction: see
`_stamps`), and use statements prepared once per table: they are the labeling hot path.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from ...errors import ConflictError, LabelloopError
from ..db import datasets_table
from ..driver import Rows, run
from .schema import ROW, _sql_table, normalize

CHUNK = 50_000


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


_TOUCH_SQL = sa.text("UPDATE ll_datasets SET updated = :now WHERE name = :name "
                     "RETURNING table_name, storage").bindparams(
    sa.bindparam("now", type_=datasets_table.c.updated.type))
@functools.cache
def _touch_many_sql(n: int) -> sa.TextClause:
    """Mark `n` datasets changed (parameters `now`, `name0`...): fixed binds, for `run`."""
    names = ", ".join(f":name{i}" for i in range(n))
    return sa.text(f"UPDATE ll_datasets SET updated = :now WHERE name IN ({names}) "
                   "RETURNING name, table_name, storage").bindparams(
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
    stamps = conn.info.get(_STAMPS)
    if stamps is not None:  # the dataset's table is gone: its next write reads ll_datasets again
        for name in [n for n, t in stamps[1].items() if t == table_name]:
            del stamps[1][name]


# The datasets whose `updated` a transaction has already set, with the table holding their
# rows: {name: table_name}, kept in `conn.info` under the transaction it belongs to. Why: a
# label writes two datasets, and with several labels sharing one commit (the project's writer,
# `labelloop.project.Database`) stamping each dataset once instead of on every row saves a
# round trip per row. A savepoint rolled back may have undone a stamp (or the creation of the
# dataset's table): then the transaction forgets all its stamps, and the next row write stamps
# again. A replaced or dropped table is forgotten too (`_forget_row_ops`).
_STAMPS = "labelloop.dataset_stamps"


def _stamps(conn: sa.Connection) -> dict[str, str] | None:
    tx = conn.get_transaction()
    if tx is None:
        return None
    got = conn.info.get(_STAMPS)
    if got is None or got[0] is not tx:
        got = conn.info[_STAMPS] = (tx, {})
    return got[1]


@sa.event.listens_for(sa.engine.Engine, "rollback_savepoint")
def _forget_stamps(conn: sa.Connection, _name: Any, _context: Any) -> None:
    conn.info.pop(_STAMPS, None)


class RowStorage:
    """The row-storage half of `Dataset` (which provides `name`, `engine` and `_require`)."""

    name: str

    # ---- reading ----
    def _read_rows(self, conn: sa.Connection, info: dict, schema: list[dict],
                   limit: int | None, offset: int) -> pd.DataFrame:
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

    def _iter_rows(self, info: dict, schema: list[dict], chunksize: int,
                   with_row: bool) -> Iterator[pd.DataFrame]:
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

    @staticmethod
    def _select_sql(conn: sa.Connection, t: sa.Table, schema: list[dict]) -> str:
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c["name"]) for c in schema) or "NULL"
        return f"SELECT {cols} FROM {quote(t.name)}"

    @staticmethod
    def _frame(rows: list, schema: list[dict]) -> pd.DataFrame:
        names = [c["name"] for c in schema]
        df = pd.DataFrame.from_records(rows, columns=names, coerce_float=True) if rows else \
            pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
        return normalize(df, schema)

    # ---- writing whole frames ----
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

    # ---- row-level writes (the caller's transaction) ----
    def insert(self, conn: sa.Connection, values: dict, ignore_extra: bool = False) -> int:
        """Add one row (`values`: column -> value; missing columns are NULL) to a row-stored
        dataset in `conn`'s transaction; the new row's key (for `update` and `delete`).

        Values of columns the dataset lacks are refused, or left out with `ignore_extra`.
        """
        return self.inserter(conn, ignore_extra)(values)()

    def inserter(self, conn: sa.Connection, ignore_extra: bool = False
                 ) -> Callable[[dict], Callable[[], int]]:
        """`insert` in two steps, for a `pipeline` block: call this first, outside the block
        (it finds the dataset's table, a read at most); inside it, the returned function
        sends a row and returns a function giving the row's key (free once the block has
        ended, earlier it waits for the database)."""
        ops = self._row_ops(conn)

        def send(values: dict) -> Callable[[], int]:
            if not ignore_extra:
                ops.check(self.name, values)
            rows = run(conn, ops.insert, {p: values.get(n) for n, p in ops.params.items()})
            return lambda: int(rows.scalar_one())

        return send

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
        return run(conn, stmt, {**args, "key": key}).rowcount

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
        return run(conn, stmt, {**args, "key": key}).rowcount

    def touch(self, conn: sa.Connection, others: Sequence[str] = ()) -> None:
        """Mark this dataset and the datasets named `others` as changed in `conn`'s
        transaction, in one statement: row-level writes of this transaction that follow
        don't mark them again. For a caller about to write rows of several datasets (one
        round trip instead of one per dataset); datasets without data yet are left out.
        Inside a `pipeline` block the statement goes with the block's others: what it
        answers (the tables holding the rows) is only read by the first row-level write."""
        stamps = _stamps(conn)
        names = [n for n in dict.fromkeys((self.name, *others))
                 if stamps is None or n not in stamps]
        if not names:
            return
        params: dict[str, Any] = {f"name{i}": n for i, n in enumerate(names)}
        rows = run(conn, _touch_many_sql(len(names)),
                   {**params, "now": dt.datetime.now(dt.UTC)})
        if stamps is not None:
            stamps.update(dict.fromkeys(names, rows))  # resolved by `_row_ops`

    def _row_ops(self, conn: sa.Connection) -> _RowOps:
        stamps = _stamps(conn)
        table_name = None if stamps is None else stamps.get(self.name)
        if isinstance(table_name, Rows):  # stamped by `touch`, its answer not read yet
            found = [r.table_name for r in table_name.all()
                     if r.name == self.name and r.storage == "rows"]
            table_name = found[0] if found else None
            if table_name is None:  # no data yet, or stored column-wise: as if not stamped
                del stamps[self.name]  # type: ignore[union-attr]
            else:
                stamps[self.name] = table_name  # type: ignore[index]
        if table_name is None:
            # One statement both marks the dataset as changed and says which table holds it.
            info = run(conn, _TOUCH_SQL, {"name": self.name,
                                          "now": dt.datetime.now(dt.UTC)}).first()
            if info is None:
                self._require(conn)  # raises the usual "no data yet" error
            if info.storage != "rows":
                raise ConflictError(
                    f"dataset {self.name!r} is stored column-wise (chunk files): row-level "
                    "writes need row storage; convert it with to_rows() first")
            table_name = info.table_name
            if stamps is not None:
                stamps[self.name] = table_name
        key = (str(conn.engine.url), table_name)
        ops = _ROW_OPS.get(key)
        if ops is None:
            schema = self._require(conn)["schema"]
            ops = _ROW_OPS[key] = _RowOps(_sql_table(table_name, schema), conn.dialect)
        return ops
