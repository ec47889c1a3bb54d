"""Leases: a database row that one process owns for a while and keeps alive with a heartbeat.

One implementation for every "only one process does this at a time" rule: scenario locks, and
the labeling engine's queue builder (which takes it inside its writer thread's transaction:
the `conn=` argument of `try_acquire`, `refresh` and `release`). A lease row holds its owner
(`host:pid:token`, so a dead owner on this machine is recognised at once), when it was acquired
and when it expires. An owner that stops heart-beating loses the lease at `expires`; an owner
whose process is gone loses it immediately. Times come from a `Clock`, which tests replace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from .db import write_transaction

log = logging.getLogger("labelloop.leases")


# ------------------------------------------------------------------ clocks
class SystemClock:
    """Wall-clock time (epoch seconds, comparable between processes) and real waits."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until `event` is set (True) or `seconds` have passed (False)."""
        return event.wait(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to (`advance`): waits end when it passes their end.

    For tests: a heartbeat or a scheduler period happens when the test advances the clock,
    never because the machine was slow.
    """

    def __init__(self, start: float = 1_000_000_000.0):
        self._now = float(start)
        self._changed = threading.Condition()

    def time(self) -> float:
        with self._changed:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._changed:
            self._now += seconds
            self._changed.notify_all()

    def sleep(self, seconds: float) -> None:
        self.wait(threading.Event(), seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._changed:
            end = self._now + seconds
            while not event.is_set() and self._now < end:
                # Why a short real timeout: setting `event` does not notify this condition.
                self._changed.wait(0.02)
            return event.is_set()


SYSTEM_CLOCK = SystemClock()


# ------------------------------------------------------------------ owners
def new_owner() -> str:
    """An owner id unique to this process and call: `host:pid:random`."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def owner_for_pid(owner: str, pid: int) -> str:
    """The owner id `owner` becomes when process `pid` takes its lease over."""
    host, _pid, token = (owner.rsplit(":", 2) + ["", ""])[:3]
    return f"{host}:{pid}:{token}"


def process_alive(host: str | None, pid: int | None) -> bool:
    """Whether process `pid` of machine `host` may still run: False only when it is a process
    of this machine that is gone (or a zombie); other machines' processes can't be checked."""
    if host != socket.gethostname() or not pid or pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    try:  # a zombie (dead, not yet reaped by its parent) is gone too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_is_gone(owner: str) -> bool:
    """True when an owner is a process of this machine that no longer runs.

    Owners on other machines (a shared database) can't be checked: their heartbeat decides.
    """
    try:
        host, pid_text, _token = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    return not process_alive(host, pid)


# ------------------------------------------------------------------ the lease
class Lease:
    """The lease of one row of `table` (columns `owner`, `acquired`, `expires` + the key's).

    `key` names the row (e.g. `{"scenario": "loop"}`); other columns of the row are set with
    `values` when acquiring and are the caller's business.
    """

    def __init__(self, engine: sa.Engine, table: sa.Table, key: dict[str, Any],
                 owner: str | None = None, ttl: float = 60.0, clock: Any = None):
        self.engine = engine
        self.table = table
        self.key = dict(key)
        self.owner = owner or new_owner()
        self.ttl = float(ttl)
        self.clock = clock or SYSTEM_CLOCK
        self.last_holder: dict | None = None  # who held it when `try_acquire` was refused
        self.taken_over: tuple[dict, str] | None = None

    def _where(self, mine: bool = False):
        t = self.table
        cond = sa.and_(*[t.c[k] == v for k, v in self.key.items()])
        return cond & (t.c.owner == self.owner) if mine else cond

    def holder(self) -> dict | None:
        """The live lease row (None when free or expired)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self._where())).mappings().first()
        if row is None or row["expires"] <= self.clock.time():
            return None
        return dict(row)

    def try_acquire(self, values: dict | None = None, fresh: dict | None = None,
                    conn: sa.Connection | None = None) -> bool:
        """Take the lease (or renew it, if this owner holds it); False if another owner holds it.

        `values` are set in every case; `fresh` only when the row is new or taken over (the
        state of a previous owner that must not carry over). `conn`: do it in the caller's
        write transaction (e.g. a writer thread's), else in a write transaction of its own.

        A lease whose owner's heartbeat stopped, or whose process is gone, is taken over; then
        `taken_over` is `(the previous row, why)` until the next call, for the caller to clean
        up after that owner (in a transaction of its own: this one is committed by then).
        """
        self.taken_over = None
        if conn is not None:
            return self._acquire(conn, values, fresh)
        try:
            with write_transaction(self.engine) as own:
                return self._acquire(own, values, fresh)
        except sa.exc.IntegrityError:  # another process inserted the row first
            return False

    def _acquire(self, conn: sa.Connection, values: dict | None, fresh: dict | None) -> bool:
        t = self.table
        now = self.clock.time()
        taken = None
        fields = {**(values or {}), "owner": self.owner, "expires": now + self.ttl}
        row = conn.execute(sa.select(t).where(self._where())).mappings().first()
        if row is None:
            try:
                with conn.begin_nested():  # a lost insert race must not undo the caller's work
                    conn.execute(sa.insert(t).values(**self.key, acquired=now,
                                                     **{**(fresh or {}), **fields}))
            except sa.exc.IntegrityError:  # another process inserted the row first
                return False
        elif row["owner"] == self.owner:
            conn.execute(sa.update(t).where(self._where()).values(**fields))
        elif row["expires"] > now and not owner_is_gone(row["owner"]):
            self.last_holder = dict(row)
            return False
        else:
            # The guard on owner/expires makes the take-over safe on databases where
            # the transaction doesn't lock the table (two stealers: one wins).
            res = conn.execute(sa.update(t).where(
                self._where() & (t.c.owner == row["owner"])
                & (t.c.expires == row["expires"])).values(
                    acquired=now, **{**(fresh or {}), **fields}))
            if res.rowcount != 1:
                return False
            why = "its lock expired" if row["expires"] <= now else "its process is gone"
            log.warning("%s: took over the lease of %s (%s)", self.key, row["owner"], why)
            taken = (dict(row), why)
        self.last_holder = None
        self.taken_over = taken
        return True

    def update(self, values: dict, conn: sa.Connection | None = None) -> bool:
        """Set columns of the row while this owner holds it; False if it does not."""
        if conn is None:
            with write_transaction(self.engine) as own:
                return self.update(values, own)
        res = conn.execute(sa.update(self.table).where(self._where(mine=True)).values(**values))
        return res.rowcount == 1

    def transfer(self, new_owner_id: str, conn: sa.Connection | None = None) -> bool:
        """Hand the lease to `new_owner_id` (e.g. the process that does the work); False if
        this owner no longer holds it."""
        if new_owner_id == self.owner:
            return True
        if self.update({"owner": new_owner_id, "expires": self.clock.time() + self.ttl}, conn):
            self.owner = new_owner_id
            return True
        return False

    def refresh(self, conn: sa.Connection | None = None) -> bool:
        """Push the expiry forward (a heartbeat); False if the lease was lost."""
        return self.update({"expires": self.clock.time() + self.ttl}, conn)

    def release(self, conn: sa.Connection | None = None) -> None:
        """Free the lease if this owner holds it."""
        if conn is None:
            with write_transaction(self.engine) as own:
                return self.release(own)
        conn.execute(sa.delete(self.table).where(self._where(mine=True)))

    @contextlib.contextmanager
    def keep_alive(self, name: str = "lease") -> Iterator[None]:
        """Refresh the lease every ttl/3 (of the clock) from a thread while the body runs."""
        stop = threading.Event()
        period = self.ttl / 3
        # Beat times count from now, not from when the thread gets going: a late-starting
        # thread beats at once instead of a period later.
        due = [self.clock.time() + period]

        def beat() -> None:
            while not self.clock.wait(stop, due[0] - self.clock.time()):
                due[0] += period
                try:
                    if not self.refresh():
                        log.error("%s: lost its lease", name)
                        return
                except Exception:  # a busy database must not kill the heartbeat for good
                    log.exception("%s: lease heartbeat failed", name)

        thread = threading.Thread(target=beat, name=f"lease-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
