"""The engine's sessions and its background queue builder, one at a time across processes.

Sessions: a ranking is published (`labeling.publish`): the queries dataset written and the
project variable `"<queries dataset name>_session"` incremented together. The engine compares
the `SessionKey` (pool, queries dataset generation, session variable) with the key its queue
was built for (at most every `check_interval` seconds). A new session's queue is prepared
aside and switched in with its head in one transaction: `config`, `batch` and `stats` answer for the
session of the queue they read, so they always agree.

A background worker thread per engine prepares the next queue aside, writes positions ahead
of the annotators and indexes the pool (`labeling.build`); across processes one builder holds
the webapp's lease (`labelloop.project.Lease` on `lb_builder_leases`, taken and renewed inside
the writer thread's transactions; taken over once stale or once its owner died).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa

from labelloop.errors import LabelloopError
from labelloop.project import Lease, new_owner, run

from .publish import SessionKey, session_variable
from .store import _APP_SQL, apps_table, builder_leases_table, log

LEASE_SECONDS = 15.0  # a builder's heartbeat: renewed at each step, taken over once stale
RETRY_SECONDS = 60.0  # a rebuild that failed is retried after this


class QueueNotReady(LabelloopError):
    """The queue is still being built for the first time."""

    status = 503


class Sessions:
    """The engine's part that follows sessions and runs the background builder (a mixin of
    `labeling.engine.LabelingEngine`)."""

    # ------------------------------------------------------------------ sessions
    def session(self, conn: sa.Connection | None = None) -> int:
        """The session of the queue being served (0 before the first Query Sampler run)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.session(c)
        return int(self._app(conn).q_session or 0)

    def _session_variable(self, conn: sa.Connection) -> int:
        if not self.cfg.queries_ds:
            return 0
        name = session_variable(self.cfg.queries_ds)
        value = self.project.variables.get(name, 0, conn=conn)
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    def _queries(self) -> Any | None:
        if not self.cfg.queries_ds:
            return None
        ds = self.project.dataset(self.cfg.queries_ds, create=True)
        return ds if ds.exists() else None

    def session_key(self) -> SessionKey:
        """What the queue must be built from now: pool + queries generation + session."""
        q = self._queries()
        if q is None:
            return SessionKey(self.dtype.pool_key())
        generation = q.generation()
        with self.engine.connect() as conn:
            session = self._session_variable(conn)
        return SessionKey(self.dtype.pool_key(), q.name, generation, session)

    def _app(self, conn: sa.Connection) -> sa.Row:
        return run(conn, _APP_SQL, {"id": self.app_id}).first()

    def _read_app(self) -> sa.Row:
        with self.engine.connect() as conn:
            return self._app(conn)

    def refresh(self, wait: bool = False) -> None:
        """Follow a new session; the first queue is prepared now, later ones aside."""
        now = self._now()
        if not wait and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        key = self.session_key()
        app = self._read_app()
        if app.queue_id is not None and app.session_key == key.text:
            if self._has_work(app):
                self._start_worker(key)
            return
        if app.queue_id is not None and self.background and not wait:
            self._start_worker(key)
            return
        self._switch_now(key)
        if self.background:
            self._start_worker(key)

    def _has_work(self, app: sa.Row) -> bool:
        if not self.background:
            return False
        if not app.iset_complete:
            return True
        target = self._fill_target
        return not app.complete and target[0] == app.queue_id and target[1] > (app.filled or 0)

    def _start_worker(self, key: SessionKey) -> None:
        with self._lock:
            failed = self._failed.get(key)
            if failed is not None and self._now() - failed < RETRY_SECONDS:
                return  # the same inputs failed a moment ago: don't rebuild in a loop
            self._wake.set()  # a running worker looks again before it ends
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._work, args=(key,),
                                            name=f"labeling-queue-{self.cfg.webapp}", daemon=True)
            self._thread.start()

    def _work(self, key: SessionKey) -> None:
        """The background worker: switch to a new session, write ahead, index the pool."""
        token = uuid.uuid4().hex
        leased, renewed = False, 0.0
        try:
            while True:
                self._wake.clear()
                if not leased or self._now() - renewed > LEASE_SECONDS / 5:
                    leased, renewed = self._take_lease(token), self._now()
                if self._work_step(token, leased):
                    continue
                if leased:
                    self._drop_lease(token)
                    leased = False
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
        except Exception as exc:  # a failed rebuild must not stop labeling: the old queue serves
            self._failed[key] = self._now()
            log.exception("preparing the queue of %s failed", self.cfg.webapp)
            self._set_error(str(exc) if isinstance(exc, LabelloopError) else
                            f"preparing the queue failed ({type(exc).__name__}); see the log")
        finally:
            if leased:
                self._drop_lease(token)
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _work_step(self, token: str, leased: bool) -> bool:
        """One step of the worker's work; False when there is nothing (it may do) left."""
        key = self.session_key()
        app = self._read_app()
        if app.queue_id is None or app.session_key != key.text:
            if not leased:
                return False  # another process prepares it; served from the old order
            self._switch(key, token)
            return True
        if self._fill_step(app, background=True):
            return True
        return leased and self._index_step(app, token)

    def _switch_now(self, key: SessionKey) -> None:
        """Prepare and switch in the queue of `key` in this thread (the first queue)."""
        token = uuid.uuid4().hex
        deadline = time.time() + self.wait_seconds  # a real wait, for another builder
        while True:
            if self._take_lease(token):
                try:
                    self._switch(key, token)
                except LabelloopError as exc:
                    self._set_error(str(exc))
                    raise
                finally:
                    self._drop_lease(token)
                return
            app = self._read_app()
            if app.queue_id is not None and (app.session_key == key.text or self.background):
                return  # someone else switched, or prepares the new order: serve the current
            if time.time() > deadline:
                raise QueueNotReady(f"the queue of {self.cfg.webapp!r} is still being built; "
                                    "retry in a few seconds")
            time.sleep(0.02)

    def _set_error(self, message: str) -> None:
        t = apps_table
        self._write(lambda conn: conn.execute(sa.update(t).where(t.c.id == self.app_id).values(
            build_error=message, prep=None)))

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for the background worker of this engine to end (tests, benchmarks)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ the lease
    def _lease(self, token: str) -> Lease:
        """The builder lease of one worker run (`token`): its own owner id, this process'."""
        leases = self._leases
        if token not in leases:
            leases[token] = Lease(self.engine, builder_leases_table, {"app": self.app_id},
                                  owner=new_owner(), ttl=LEASE_SECONDS, clock=self.clock)
        return leases[token]

    def _take_lease(self, token: str) -> bool:
        """Take or renew the builder lease; a lease whose owner is gone is taken over at once."""
        lease = self._lease(token)
        if not self._write(lambda conn: lease.try_acquire(conn=conn)):
            return False
        if lease.taken_over is not None:
            row, why = lease.taken_over
            log.info("took over the queue lease of %s from %s (%s)", self.cfg.webapp,
                     row["owner"], why)
        return True

    def _renew_lease(self, conn: sa.Connection, token: str) -> None:
        """The heartbeat, inside a write of the builder (the index chunks)."""
        self._lease(token).refresh(conn)

    def _drop_lease(self, token: str) -> None:
        lease = self._leases.pop(token, None)
        if lease is not None:
            self._write(lease.release)
