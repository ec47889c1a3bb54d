"""The project's one SQLAlchemy engine and the host's own tables."""

from __future__ import annotations

import collections
import datetime as dt
import os
import select
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event

T = TypeVar("T")
metadata = sa.MetaData()

# One row per dataset: its schema (ordered columns with types) and the table holding its rows.
datasets_table = sa.Table(
    "ll_datasets",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("table_name", sa.String(250), nullable=False, unique=True),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False, default=0),
    sa.Column("updated", sa.DateTime(timezone=True)),
    # rows: one SQL row per dataset row (small or row-updated datasets);
    # columns: Arrow IPC chunks in ll_dataset_chunks (large datasets written whole).
    sa.Column("storage", sa.String(10), nullable=False, default="rows"),
)

# Column-wise storage: each chunk is an Arrow IPC file of up to CHUNK_ROWS rows, keyed by the
# dataset generation's table name so a replace swaps generations atomically.
dataset_chunks_table = sa.Table(
    "ll_dataset_chunks",
    metadata,
    sa.Column("table_name", sa.String(250), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    # The chunk's Arrow IPC file, relative to the project directory. Why files and not BLOBs:
    # writing 400 MB through SQLite pages costs twice as long as plain files, and freeing a
    # replaced generation is an unlink instead of walking every overflow page.
    sa.Column("file", sa.String(500), nullable=False),
)

variables_table = sa.Table(
    "ll_variables",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON),
)

model_versions_table = sa.Table(
    "ll_model_versions",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
)

runs_table = sa.Table(
    "ll_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),  # recipe | scenario | step
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),  # RUNNING | SUCCESS | FAILED
    sa.Column("error", sa.Text),
    sa.Column("details", sa.JSON),
    sa.Index("ix_ll_runs_kind_name", "kind", "name", "id"),
)

# One row per scenario being checked or run: the owner keeps it alive with a heartbeat, so a
# crashed process' lock expires and another process can take over (times are epoch seconds).
scenario_locks_table = sa.Table(
    "ll_scenario_locks",
    metadata,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(20), nullable=False),  # checking | running
    sa.Column("run_id", sa.Integer),
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

# What a scenario trigger keeps between checks (`ctx.state`), and how its last checks went.
trigger_states_table = sa.Table(
    "ll_trigger_states",
    metadata,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("trigger", sa.String(250), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("checked", sa.Float),
    sa.Column("fired", sa.Float),
    sa.Column("fire_count", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False, default=0),
)

# API tokens: only the sha256 of a token is stored; the token itself is shown once.
tokens_table = sa.Table(
    "ll_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
)

# Why FULL: a label acknowledged to an annotator must survive a crash of the machine, not only
# of the process. Override with LABELLOOP_SQLITE_SYNCHRONOUS=NORMAL when speed matters more.
SQLITE_SYNCHRONOUS = "FULL"


# SQLite's own default page size: large datasets live in chunk files, so bigger pages would only
# make each label's commit write more. LABELLOOP_SQLITE_PAGE_SIZE sets it for a new database.
SQLITE_PAGE_SIZE = ""


# The key of the transaction-scoped advisory lock that write transactions take on PostgreSQL.
PG_WRITE_LOCK = 0x4C4C4F50  # "LLOP"


def utc_iso(value: dt.datetime) -> str:
    """ISO 8601 with its offset; the naive datetimes SQLite gives back are UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def sqlite_url(path: os.PathLike | str) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{os.fspath(path)}"


def create_engine(url: str) -> sa.Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and explicit BEGIN modes."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        sync = os.environ.get("LABELLOOP_SQLITE_SYNCHRONOUS", SQLITE_SYNCHRONOUS).upper()
        page_size = os.environ.get("LABELLOOP_SQLITE_PAGE_SIZE", SQLITE_PAGE_SIZE)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's begin event emit BEGIN itself, so writers can ask for IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if page_size:  # only takes effect on a new, empty database
                cur.execute(f"PRAGMA page_size={int(page_size)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    else:
        engine = sa.create_engine(url, pool_pre_ping=True)

        @event.listens_for(engine, "before_cursor_execute")
        def _on_execute(conn, _cursor, _statement, _params, _context, _many):
            if conn.info.get(_PRELUDE):  # the writer's transaction starts with this statement
                raw = conn.connection.driver_connection
                try:
                    with raw.pipeline():
                        _send_prelude(conn)
                except conn.dialect.loaded_dbapi.Error as exc:
                    raise _driver_error(conn, exc, "(the transaction's first statements)",
                                        None) from exc

    return engine


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that takes the write lock up front (SQLite BEGIN IMMEDIATE).

    Why: a deferred SQLite transaction that reads then writes can fail with "database is
    locked" when another process wrote in between; taking the lock first makes writers queue.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            _take_write_lock(conn)
            yield conn


_LOCK_SQL = sa.text(f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})")


def _take_write_lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        # The same one-writer-at-a-time rule on PostgreSQL: read-then-write
        # transactions (counters, upserts, reservations) would otherwise race.
        run(conn, _LOCK_SQL)


# Where the writer leaves the statements that must open its next round trip on PostgreSQL
# (conn.info, a list of SQL strings): its transaction's BEGIN and write lock, a job's
# SAVEPOINT, the RELEASE of the job before. Why: sent alone they were a round trip each
# (BEGIN is one of its own even in a pipeline, as psycopg syncs after it); sent with the
# first statements of a write, none. `pipeline` and `run` send them first, and an engine
# event does for anything else executed through SQLAlchemy.
_PRELUDE = "labelloop_prelude"


def _send_prelude(conn: sa.Connection) -> None:
    """Send the statements left in `conn.info[_PRELUDE]` (inside a pipeline block: queued)."""
    todo = conn.info.get(_PRELUDE)
    if todo:
        sent = list(todo)
        todo.clear()
        cursor = conn.connection.driver_connection.cursor()
        for sql in sent:
            for listener in conn.dispatch.before_cursor_execute:
                listener(conn, cursor, sql, None, None, False)
            cursor.execute(sql)


def _looks_dropped(conn: sa.Connection) -> bool:
    """Whether an idle PostgreSQL connection has something to read: the server's goodbye
    (a terminated backend, a restart) or a closed socket. Costs no round trip."""
    raw = conn.connection.driver_connection
    try:
        return raw.closed or bool(select.select([raw.pgconn.socket], [], [], 0)[0])
    except Exception:  # noqa: BLE001 - a connection that can't say is treated as dropped
        return True


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
    if conn.info.get(_PRELUDE):  # the writer's transaction opens with this statement
        if not pending:
            with pipeline(conn):  # sends the prelude, then this: one round trip
                return run(conn, statement, params)
        _send_prelude(conn)
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
            raise _driver_error(conn, exc, c.sql, args) from exc
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
        raise _driver_error(conn, exc, c.sql, args) from exc
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
            _send_prelude(conn)
            yield Pipeline(conn, raw)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _driver_error(conn, exc, "(statements of a pipeline)", None) from exc


def _driver_error(conn: sa.Connection, exc: Exception, statement: str,
                  params: Any) -> sa.exc.DBAPIError:
    """A driver's error as SQLAlchemy raises it; a connection found lost is invalidated, as
    SQLAlchemy does, so that its owner replaces it (see `Database._begin`)."""
    dialect = conn.dialect
    try:
        lost = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, None))
    except Exception:  # noqa: BLE001 - a dead connection may fail to say more
        lost = False
    if lost and not conn.invalidated:
        conn.invalidate(exc)
    return sa.exc.DBAPIError.instance(statement, params, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=dialect)


def create_host_tables(engine: sa.Engine) -> None:
    """Create the host's own tables if missing."""
    # Why under the write lock: processes opening a fresh project together (server, CLI,
    # scenario runner) would otherwise all see the tables missing, and SQLite refuses the
    # losers' CREATE at once ("database is locked": a read transaction can't become a writer).
    # The tables come from the host's migration history (labelloop.migrations): a new
    # database is created at its head, an older one is upgraded.
    from ..migrations import host_history, upgrade

    with write_transaction(engine) as conn:
        upgrade(conn, host_history())


class Database:
    """The project's database as plugins write to it: one writer thread per process.

    Why: threads of one process that each take SQLite's write lock sleep in its busy handler,
    in growing steps, while another holds it; through `execute_write_fn` they take turns on
    one thread instead. Writes waiting together share one transaction (each in its own
    savepoint, so one that fails is undone alone) and one commit: with FULL sync, one disk
    flush for all of them. Other processes still coordinate through the database's own lock.
    Interactive writes go before background ones (`background=True`: index builds, fills).
    """

    GROUP = 64  # most writes sharing one commit
    # Seconds the writer keeps its connection unused before handing it back to the pool. Why
    # keep it: a pooled checkout costs a pre-ping (a round trip on PostgreSQL) and a reset per
    # transaction; a connection lost meanwhile (a restarted server) fails at BEGIN, before any
    # write ran, and is replaced there (`_begin`).
    IDLE = 5.0

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._jobs: tuple[collections.deque, collections.deque] = (collections.deque(),
                                                                   collections.deque())
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._local = threading.local()

    def execute_write_fn(self, fn: Callable[[sa.Connection], T], background: bool = False,
                         timeout: float | None = None) -> T:
        """Run `fn(conn)` in the writer thread inside its write transaction; its result.

        The result comes back once the transaction is committed; when `fn` raises, what it
        wrote is rolled back and the exception is raised here. Called from inside such an
        `fn`, it runs at once in the same transaction.
        """
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # nested call from the writer thread itself
            return fn(conn)
        future: Future = Future()
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._pid = os.getpid()
                self._thread = None
                self._jobs = (collections.deque(), collections.deque())
            self._jobs[1 if background else 0].append((fn, future))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="labelloop-writer",
                                                daemon=True)
                self._thread.start()
            self._ready.notify()
        return future.result(timeout)

    def _take(self, idle: float | None = None) -> list[tuple[Callable, Future]]:
        """The next writes; none when `idle` seconds passed without any."""
        with self._lock:
            while not self._jobs[0] and not self._jobs[1]:
                if not self._ready.wait(idle):
                    return []
            if self._jobs[0]:  # interactive writes first, as many as are waiting
                jobs = self._jobs[0]
                return [jobs.popleft() for _ in range(min(len(jobs), self.GROUP))]
            return [self._jobs[1].popleft()]  # a background write runs alone

    def _run(self) -> None:
        conn: sa.Connection | None = None  # kept between transactions (see IDLE)
        while True:
            taken = self._take(None if conn is None else self.IDLE)
            if not taken and conn is not None:  # idle: back to the pool
                conn = self._release(conn)
            jobs = [(fn, f) for fn, f in taken if f.set_running_or_notify_cancel()]
            if not jobs:
                continue
            results: list[tuple[Future, bool, Any]] = []
            tx = None
            prelude: list[str] = []
            try:
                conn, tx, prelude = self._begin(conn)
                self._local.conn = conn
                try:
                    if len(jobs) == 1:
                        results.append((jobs[0][1], True, jobs[0][0](conn)))
                    else:
                        results += self._in_savepoints(conn, jobs, prelude)
                finally:
                    self._local.conn = None
                    # What was never sent: a transaction that ran nothing, a trailing RELEASE.
                    prelude.clear()
                tx.commit()
            except BaseException as exc:  # noqa: BLE001 - handed to the callers
                try:
                    if tx is not None and tx.is_active:
                        tx.rollback()
                except Exception:  # noqa: BLE001 - the connection is dropped below
                    pass
                if conn is not None and (isinstance(exc, sa.exc.DBAPIError) or tx is None
                                         or conn.invalidated):
                    conn = self._release(conn)  # the next transaction checks out a fresh one
                for _fn, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
                continue
            # Only once committed: a caller never acknowledges a rolled-back write.
            for future, ok, value in results:
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _begin(self, conn: sa.Connection | None
               ) -> tuple[sa.Connection, sa.RootTransaction, list[str]]:
        """Begin a write transaction on the writer's connection (checked out from the pool
        when it has none); a connection found dead at BEGIN is replaced, once. Also the
        transaction's prelude: on PostgreSQL its BEGIN and write lock wait there to go with
        its first statements (see `_PRELUDE`; the driver connection is in autocommit mode
        meanwhile, so that psycopg sends no BEGIN of its own)."""
        for attempt in (0, 1):
            kept = conn is not None
            if conn is None:
                conn = self.engine.connect()
                if conn.dialect.name == "sqlite":
                    conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            try:
                tx = conn.begin()
                if conn.dialect.name != "postgresql":
                    return conn, tx, []
                raw = conn.connection.driver_connection
                if not raw.autocommit:
                    raw.autocommit = True
                prelude = conn.info.setdefault(_PRELUDE, [])
                prelude[:] = ["BEGIN", _LOCK_SQL.text]
                if kept and _looks_dropped(conn):
                    # Find out now, before any write ran, rather than in the first job.
                    with pipeline(conn):
                        pass
                return conn, tx, prelude
            except sa.exc.DBAPIError as exc:
                lost = exc.connection_invalidated or conn.invalidated
                conn = self._release(conn)
                if attempt or not lost:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _release(conn: sa.Connection) -> None:
        """Hand the writer's connection back to the pool (as the pool lends them: not in
        autocommit mode, nothing left to send)."""
        try:
            if conn.dialect.name == "postgresql" and not conn.invalidated:
                conn.info.pop(_PRELUDE, None)
                conn.connection.driver_connection.autocommit = False
        except Exception:  # noqa: BLE001 - not fit to lend: dropped instead
            try:
                conn.invalidate()
            except Exception:  # noqa: BLE001
                pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a dead connection is discarded by the pool
            pass
        return None

    @staticmethod
    def _in_savepoints(conn: sa.Connection, jobs: list[tuple[Callable, Future]],
                       prelude: list[str]) -> list[tuple[Future, bool, Any]]:
        """Run each job in a savepoint of its own: one that fails is undone alone, and
        reported. On PostgreSQL a job's SAVEPOINT, and the RELEASE of the one before, go
        to the database with the job's first statements (`prelude`): no round trip of
        their own."""
        results: list[tuple[Future, bool, Any]] = []
        if conn.dialect.name != "postgresql":
            for fn, future in jobs:
                savepoint = conn.begin_nested()
                try:
                    value = fn(conn)
                except Exception as exc:  # noqa: BLE001 - this write alone is undone
                    savepoint.rollback()
                    results.append((future, False, exc))
                    continue
                savepoint.commit()
                results.append((future, True, value))
            return results
        for k, (fn, future) in enumerate(jobs):
            name = f"labelloop_write_{k}"
            mark = f"SAVEPOINT {name}"
            prelude.append(mark)
            try:
                value = fn(conn)
            except Exception as exc:  # noqa: BLE001 - this write alone is undone, and reported
                if mark in prelude:  # it sent nothing: nothing to undo
                    prelude.remove(mark)
                else:
                    run(conn, sa.text(f"ROLLBACK TO SAVEPOINT {name}"))
                    # What listens for SQLAlchemy's savepoint rollbacks hears of this one too
                    # (e.g. the datasets' change stamps of the transaction, forgotten).
                    conn.dispatch.rollback_savepoint(conn, name, None)
                results.append((future, False, exc))
                continue
            if mark in prelude:
                prelude.remove(mark)
            else:
                prelude.append(f"RELEASE SAVEPOINT {name}")
            results.append((future, True, value))
        return results
