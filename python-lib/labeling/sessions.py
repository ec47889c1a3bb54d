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

from labelloop.errors import LabelloopError, disk_full
from labelloop.project import Lease, new_owner

from .publish import SessionKey, session_variable
from .store import apps_table, builder_leases_table, log

LEASE_SECONDS = 15.0  # a builder's heartbeat: renewed at each step, taken over once stale
RETRY_SECONDS = 60.0  # a rebuild that failed is retried after this
DISK_FULL_RETRY_SECONDS = 5.0  # ... and one that found the disk full, once freed, sooner


class QueueNotReady(LabelloopError):
    """The queue is still being built for the first time."""

    status = 503


class Sessions:
    """Follows a webapp's sessions and runs its background builder: a collaborator of
    `labeling.engine.LabelingEngine` (`ctx`: the engine's shared context; `builder`: the
    `labeling.build.QueueBuilder` that writes the queues)."""

    def __init__(self, ctx: Any, builder: Any):
        self.ctx = ctx
        self.builder = builder
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checked_at = 0.0
        self._failed: dict[SessionKey, float] = {}  # key -> when it may be retried
        self._leases: dict[str, Any] = {}  # worker run token -> its builder Lease
        self._has_queue = False
        self._wake = threading.Event()

    # ------------------------------------------------------------------ sessions
    def session(self, conn: sa.Connection | None = None) -> int:
        """The session of the queue being served (0 before the first Query Sampler run)."""
        if conn is None:
            with self.ctx.engine.connect() as c:
                return self.session(c)
        return int(self.ctx.app(conn).q_session or 0)

    def _session_variable(self, conn: sa.Connection) -> int:
        if not self.ctx.cfg.queries_ds:
            return 0
        name = session_variable(self.ctx.cfg.queries_ds)
        value = self.ctx.project.variables.get(name, 0, conn=conn)
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    def session_key(self) -> SessionKey:
        """What the queue must be built from now: pool + queries generation + session."""
        q = self.ctx.queries()
        if q is None:
            return SessionKey(self.ctx.dtype.pool_key())
        generation = q.generation()
        with self.ctx.engine.connect() as conn:
            session = self._session_variable(conn)
        return SessionKey(self.ctx.dtype.pool_key(), q.name, generation, session)

    def ensure_queue(self) -> None:
        """Follow a new session; prepare the first queue now (a second at most)."""
        self.refresh()
        self.first_queue()

    def first_queue(self) -> None:
        """Prepare the webapp's first queue if it has none yet (what an answer may need, once
        per engine: never a switch to a new session, which the worker or a batch does)."""
        if not self._has_queue:
            if self.ctx.read_app().queue_id is None:
                self.refresh(wait=True)
            self._has_queue = True  # a queue, once there, is only ever switched for another

    def refresh(self, wait: bool = False) -> None:
        """Follow a new session; the first queue is prepared now, later ones aside."""
        now = self.ctx.now()
        if not wait and now - self._checked_at < self.ctx.check_interval:
            return
        self._checked_at = now
        key = self.session_key()
        app = self.ctx.read_app()
        if app.queue_id is not None and app.session_key == key.text:
            if self._has_work(app):
                self.start_worker(key)
            return
        if app.queue_id is not None and self.ctx.background and not wait:
            self.start_worker(key)
            return
        self._switch_now(key)
        if self.ctx.background:
            self.start_worker(key)

    def _has_work(self, app: sa.Row) -> bool:
        if not self.ctx.background:
            return False
        if not app.iset_complete:
            return True
        target = self.builder.fill_target
        return not app.complete and target[0] == app.queue_id and target[1] > (app.filled or 0)

    def start_worker(self, key: SessionKey) -> None:
        with self._lock:
            retry_at = self._failed.get(key)
            if retry_at is not None and self.ctx.now() < retry_at:
                return  # the same inputs failed a moment ago: don't rebuild in a loop
            self._wake.set()  # a running worker looks again before it ends
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._work, args=(key,),
                                            name=f"labeling-queue-{self.ctx.cfg.webapp}", daemon=True)
            self._thread.start()

    def _work(self, key: SessionKey) -> None:
        """The background worker: switch to a new session, write ahead, index the pool."""
        token = uuid.uuid4().hex
        leased, renewed = False, 0.0
        try:
            while True:
                self._wake.clear()
                if not leased or self.ctx.now() - renewed > LEASE_SECONDS / 5:
                    leased, renewed = self._take_lease(token), self.ctx.now()
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
            self._failed_build(key, exc)
        finally:
            if leased:
                self._drop_lease(token)
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _failed_build(self, key: SessionKey, exc: Exception) -> None:
        """Say why the worker stopped; a full disk is expected (one line, retried soon after),
        anything else is logged with its traceback and retried a minute later."""
        full = disk_full(exc)
        if full is not None:
            self._failed[key] = self.ctx.now() + DISK_FULL_RETRY_SECONDS
            log.error("preparing the queue of %s stopped: %s", self.ctx.cfg.webapp, full)
            return  # the error cannot be written either; the old queue serves meanwhile
        self._failed[key] = self.ctx.now() + RETRY_SECONDS
        log.exception("preparing the queue of %s failed", self.ctx.cfg.webapp)
        self.set_error(str(exc) if isinstance(exc, LabelloopError) else
                       f"preparing the queue failed ({type(exc).__name__}); see the log")

    def _work_step(self, token: str, leased: bool) -> bool:
        """One step of the worker's work; False when there is nothing (it may do) left."""
        key = self.session_key()
        app = self.ctx.read_app()
        if app.queue_id is None or app.session_key != key.text:
            if not leased:
                return False  # another process prepares it; served from the old order
            self.builder.switch(key, self._heartbeat(token))
            return True
        if self.builder.fill_step(app, background=True):
            return True
        return leased and self.builder.index_step(app, self._heartbeat(token))

    def _switch_now(self, key: SessionKey) -> None:
        """Prepare and switch in the queue of `key` in this thread (the first queue)."""
        token = uuid.uuid4().hex
        deadline = time.time() + self.ctx.wait_seconds  # a real wait, for another builder
        while True:
            if self._take_lease(token):
                try:
                    self.builder.switch(key, self._heartbeat(token))
                except LabelloopError as exc:
                    self.set_error(str(exc))
                    raise
                finally:
                    self._drop_lease(token)
                return
            app = self.ctx.read_app()
            if app.queue_id is not None and (app.session_key == key.text or self.ctx.background):
                return  # someone else switched, or prepares the new order: serve the current
            if time.time() > deadline:
                raise QueueNotReady(f"the queue of {self.ctx.cfg.webapp!r} is still being built; "
                                    "retry in a few seconds")
            time.sleep(0.02)

    def set_error(self, message: str) -> None:
        t = apps_table
        self.ctx.write(lambda conn: conn.execute(sa.update(t).where(t.c.id == self.ctx.app_id).values(
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
            leases[token] = Lease(self.ctx.engine, builder_leases_table, {"app": self.ctx.app_id},
                                  owner=new_owner(), ttl=LEASE_SECONDS, clock=self.ctx.clock)
        return leases[token]

    def _take_lease(self, token: str) -> bool:
        """Take or renew the builder lease; a lease whose owner is gone is taken over at once."""
        lease = self._lease(token)
        if not self.ctx.write(lambda conn: lease.try_acquire(conn=conn)):
            return False
        if lease.taken_over is not None:
            row, why = lease.taken_over
            log.info("took over the queue lease of %s from %s (%s)", self.ctx.cfg.webapp,
                     row["owner"], why)
        return True

    def _heartbeat(self, token: str) -> Any:
        """The renewal of a worker run's lease, for the builder's writes (the index chunks)."""
        return self._lease(token).refresh

    def _drop_lease(self, token: str) -> None:
        lease = self._leases.pop(token, None)
        if lease is None:
            return
        try:
            self.ctx.write(lease.release)
        except Exception as exc:  # noqa: BLE001 - not released, the lease goes stale by itself
            log.warning("the queue lease of %s was not released (%s); it is taken over once "
                        "stale, after %.0f s", self.ctx.cfg.webapp, disk_full(exc) or exc,
                        LEASE_SECONDS)
