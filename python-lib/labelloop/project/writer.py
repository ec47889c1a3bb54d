"""The per-process writer thread: `Database.execute_write_fn` (group commit: writes waiting
together share one transaction and one commit) and `writing` (through the writer, or in a
write transaction of its own)."""

from __future__ import annotations

import collections
import os
import select
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy as sa

from .db import LOCK_SQL, write_transaction
from .driver import PRELUDE, pipeline, run

T = TypeVar("T")


def _looks_dropped(conn: sa.Connection) -> bool:
    """Whether an idle PostgreSQL connection has something to read: the server's goodbye
    (a terminated backend, a restart) or a closed socket. Costs no round trip."""
    raw = conn.connection.driver_connection
    try:
        return raw.closed or bool(select.select([raw.pgconn.socket], [], [], 0)[0])
    except Exception:  # noqa: BLE001 - a connection that can't say is treated as dropped
        return True


def writing(target: sa.Engine | Database, fn: Callable[[sa.Connection], T]) -> T:
    """`fn(conn)` in a write transaction: through the writer thread when `target` is the
    project's `Database` (what code running in a server process passes), else in a write
    transaction of its own on the engine `target` (the CLI, recipes: other processes)."""
    if isinstance(target, Database):
        return target.execute_write_fn(fn)
    with write_transaction(target) as conn:
        return fn(conn)


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
        its first statements (see `PRELUDE`; the driver connection is in autocommit mode
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
                prelude = conn.info.setdefault(PRELUDE, [])
                prelude[:] = ["BEGIN", LOCK_SQL.text]
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
                conn.info.pop(PRELUDE, None)
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
