"""Statements straight on the driver's connection: `run` (a `sa.text` statement without
SQLAlchemy's execution machinery: the label's hot path), `Rows` (what it answers) and
`pipeline` (PostgreSQL: several statements, one round trip)."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

# Where the writer leaves the statements that must open its next round trip on PostgreSQL
# (conn.info, a list of SQL strings): its transaction's BEGIN and write lock, a job's
# SAVEPOINT, the RELEASE of the job before. Why: sent alone they were a round trip each
# (BEGIN is one of its own even in a pipeline, as psycopg syncs after it); sent with the
# first statements of a write, none. `pipeline` and `run` send them first, and an engine
# event does for anything else executed through SQLAlchemy.
PRELUDE = "labelloop_prelude"


def send_prelude(conn: sa.Connection) -> None:
    """Send the statements left in `conn.info[PRELUDE]` (inside a pipeline block: queued)."""
    todo = conn.info.get(PRELUDE)
    if todo:
        sent = list(todo)
        todo.clear()
        cursor = conn.connection.driver_connection.cursor()
        for sql in sent:
            for listener in conn.dispatch.before_cursor_execute:
                listener(conn, cursor, sql, None, None, False)
            cursor.execute(sql)



class Rows:
    """What `run` answers: the rows of a query, as tuples whose columns are also attributes,
    and the number of rows a write changed (`rowcount`). Sent inside a `pipeline` block on
    PostgreSQL, they are fetched when first asked for (that waits for the database: one
    round trip), or for free once the block has ended."""

    __slots__ = ("_rows", "_rowcount", "_load")

    def __init__(self, rows: list[tuple] | None, rowcount: int,
                 load: Callable[[], tuple[list[tuple], int]] | None = None):
        self._rows = rows
        self._rowcount = rowcount
        self._load = load

    def _loaded(self) -> list[tuple]:
        if self._load is not None:
            load, self._load = self._load, None
            self._rows, self._rowcount = load()
        return self._rows  # type: ignore[return-value]

    @property
    def rowcount(self) -> int:
        self._loaded()
        return self._rowcount

    def all(self) -> list[tuple]:
        return self._loaded()

    def first(self) -> Any:
        rows = self._loaded()
        return rows[0] if rows else None

    def one(self) -> Any:
        rows = self._loaded()
        if len(rows) != 1:
            raise sa.exc.NoResultFound("no row") if not rows else \
                sa.exc.MultipleResultsFound(f"{len(rows)} rows, one expected")
        return rows[0]

    def scalar(self) -> Any:
        rows = self._loaded()
        return rows[0][0] if rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]


class _Compiled:
    """A statement as the driver takes it: its SQL, the order of its parameters (positional
    drivers) and the conversions of typed parameters (e.g. dates to text on SQLite)."""

    __slots__ = ("statement", "sql", "names", "positional", "convert", "results", "columns",
                 "row_type")

    def __init__(self, statement: sa.TextClause, dialect: Any):
        compiled = statement.compile(dialect=dialect)
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("run() takes no expanding (IN list) parameters: use conn.execute")
        self.statement = statement  # held: the cache is keyed by its id
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.names = tuple(compiled.positiontup if self.positional else compiled.binds)
        self.convert = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.convert[name] = process
        # The names of the columns it answers (empty: none), known from its first run: the
        # driver's description of a result costs more than the rest of reading it.
        self.columns: tuple[str, ...] | None = None
        self.row_type: type | None = None  # its rows' namedtuple class, made with `columns`
        # Result types given with `.columns()` (e.g. JSON stored as text on SQLite).
        self.results = {}
        for column in getattr(statement, "selected_columns", ()):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                self.results[column.name] = process

    def args(self, params: dict) -> Any:
        convert = self.convert
        if convert:
            params = {n: (convert[n](v) if n in convert else v) for n, v in params.items()}
        try:
            if self.positional:
                return tuple(params[n] for n in self.names)
            return {n: params[n] for n in self.names}
        except KeyError as exc:
            raise sa.exc.ArgumentError(f"no value for the parameter {exc.args[0]!r} of "
                                       f"{self.sql[:80]!r}") from None


_CACHE = "_labelloop_compiled"  # the attribute of a statement holding its compiled forms


def _compiled(statement: sa.TextClause, dialect: Any) -> _Compiled:
    """`statement` compiled for `dialect`, kept on the statement itself: it lives as long as
    the statement (module constants: the process; one built on the fly: the call)."""
    forms = statement.__dict__.get(_CACHE)
    hit = None if forms is None else forms.get(dialect.name)
    if hit is None or hit.statement is not statement:  # a copy of a statement: its own forms
        hit = _Compiled(statement, dialect)
        statement.__dict__[_CACHE] = {**(forms or {}), dialect.name: hit}
    return hit


def run(conn: sa.Connection, statement: sa.TextClause | sa.TextualSelect,
        params: dict | None = None) -> Rows:
    """Run a `sa.text` statement in `conn`'s transaction straight on the driver's connection;
    its rows (columns also as attributes) and `rowcount`.

    Why: SQLAlchemy's own execution costs about 0.1 ms of Python per statement (result
    objects, metadata, events): a label is a dozen statements on the writer thread, which all
    requests wait for. What it keeps: parameters converted by their SQLAlchemy types,
    `before_cursor_execute` listeners called, driver errors raised as SQLAlchemy's
    exceptions, result types given with `.columns()`. What it leaves out: expanding (IN
    list) parameters. Inside a `pipeline` block on PostgreSQL the statement is only sent:
    its rows and `rowcount` are fetched when asked for (see `Rows`).
    """
    c = _compiled(statement, conn.dialect)
    args = c.args(params or {})
    raw = conn.connection.driver_connection
    pending = bool(getattr(getattr(raw, "info", None), "pipeline_status", 0))
    if conn.info.get(PRELUDE):  # the writer's transaction opens with this statement
        if not pending:
            with pipeline(conn):  # sends the prelude, then this: one round trip
                return run(conn, statement, params)
        send_prelude(conn)
    cursor = raw.cursor()  # not closed: in a pipeline its results are still to come (both
    # drivers' cursors hold nothing once dropped)
    for listener in conn.dispatch.before_cursor_execute:
        listener(conn, cursor, c.sql, args, None, False)
    error = conn.dialect.loaded_dbapi.Error

    def load() -> tuple[list[tuple], int]:
        try:
            if pending and cursor.pgresult is None:
                with raw.pipeline():  # a nested block syncs at its end: the results are here
                    pass
            names = c.columns
            if names is None:
                desc = cursor.description
                names = c.columns = () if desc is None else tuple(d[0] for d in desc)
            rows = cursor.fetchall() if names else []
        except error as exc:
            raise driver_error(conn, exc, c.sql, args) from exc
        if rows:
            cls = c.row_type
            if cls is None:
                cls = c.row_type = collections.namedtuple("Row", names, rename=True)
            if c.results:
                procs = [c.results.get(n) for n in names]
                rows = [cls._make([v if p is None or v is None else p(v)
                                   for p, v in zip(procs, r, strict=True)]) for r in rows]
            else:
                rows = [cls._make(r) for r in rows]
        return rows, cursor.rowcount

    try:
        cursor.execute(c.sql, args)
    except error as exc:
        raise driver_error(conn, exc, c.sql, args) from exc
    if pending:
        return Rows(None, -1, load)
    return Rows(*load())


class Pipeline:
    """What `pipeline` yields: `read` queues a query whose rows are wanted after the block."""

    def __init__(self, conn: sa.Connection, raw: Any = None):
        self.conn = conn
        self.raw = raw  # the psycopg connection in pipeline mode, or None: run at once

    def read(self, statement: sa.TextClause, params: dict) -> Callable[[], list[tuple]]:
        """Send `statement` with the block's other statements; the returned function gives
        its rows (as `run`'s) once the block has ended."""
        return run(self.conn, statement, params).all


@contextmanager
def pipeline(conn: sa.Connection) -> Iterator[Pipeline]:
    """Statements run inside the block are sent to PostgreSQL together and answered in one
    round trip at its end (psycopg's pipeline mode); on SQLite they run one by one as usual.

    Why: on PostgreSQL each statement is a round trip (about 0.2 ms on this machine's
    loopback, more on a network), and a writer thread that waits for one gives up the GIL and
    must win it back. Only for statements whose results are not read inside the block:
    UPDATE, DELETE, INSERT without RETURNING (their `rowcount` is unknown), and queries
    through `Pipeline.read`. An error of any of them is raised at the end of the block, as
    SQLAlchemy's exception, and the transaction must be rolled back as usual.
    """
    if conn.dialect.name != "postgresql":
        yield Pipeline(conn)
        return
    raw = conn.connection.driver_connection
    try:
        with raw.pipeline():  # psycopg allows nested blocks: the inner one syncs at its end
            send_prelude(conn)
            yield Pipeline(conn, raw)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, exc, "(statements of a pipeline)", None) from exc


def driver_error(conn: sa.Connection, exc: Exception, statement: str,
                  params: Any) -> sa.exc.DBAPIError:
    """A driver's error as SQLAlchemy raises it; a connection found lost is invalidated, as
    SQLAlchemy does, so that its owner replaces it (see `writer.Database._begin`)."""
    dialect = conn.dialect
    try:
        lost = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, None))
    except Exception:  # noqa: BLE001 - a dead connection may fail to say more
        lost = False
    if lost and not conn.invalidated:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(statement, params, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=dialect)
