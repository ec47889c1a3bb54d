"""The scenario lock: one process at a time checks or runs a scenario (a `Lease` row)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..project import Project
from ..project.db import scenario_locks_table
from ..project.leases import Lease, new_owner, owner_for_pid, owner_is_gone
from .runs import close_interrupted_runs

log = logging.getLogger("labelloop.scenarios")

__all__ = ["DEFAULT_LOCK_TTL", "lock_ttl", "ScenarioLock", "new_owner", "owner_for_pid",
           "owner_is_gone"]

DEFAULT_LOCK_TTL = 60.0  # seconds without a heartbeat before a lock counts as abandoned


def lock_ttl() -> float:
    """Lock time-to-live in seconds (LABELLOOP_LOCK_TTL overrides the default)."""
    try:
        return max(0.5, float(os.environ.get("LABELLOOP_LOCK_TTL", DEFAULT_LOCK_TTL)))
    except ValueError:
        return DEFAULT_LOCK_TTL


class ScenarioLock:
    """The database lock of one scenario: acquire, refresh (heartbeat), release.

    A `Lease` on the scenario's row of ll_scenario_locks; `purpose` says whether its owner is
    checking triggers or running, `run_id` which run holds it (closed as FAILED if its process
    dies). `clock` (a `labelloop.project.leases` clock) is for tests. Written through the
    project's writer thread (`project.db`), as the scheduler runs inside the server.
    """

    def __init__(self, project: Project, scenario: str, owner: str | None = None,
                 ttl: float | None = None, clock: Any = None):
        self.project = project
        self.scenario = scenario
        self.lease = Lease(project.engine, scenario_locks_table, {"scenario": scenario},
                           owner=owner, ttl=lock_ttl() if ttl is None else ttl, clock=clock)

    @property
    def owner(self) -> str:
        return self.lease.owner

    @property
    def ttl(self) -> float:
        return self.lease.ttl

    @property
    def last_holder(self) -> dict | None:
        return self.lease.last_holder

    def holder(self) -> dict | None:
        """The live lock row of the scenario (None when free or expired)."""
        return self.lease.holder()

    def acquire(self, purpose: str = "running", wait: float = 0.0) -> bool:
        """Take the lock (or keep it, if this owner holds it); False if another owner holds it.

        `wait` seconds are spent retrying while the other owner is only checking triggers,
        which takes milliseconds, so a manual run isn't refused because of a routine check.
        """
        clock = self.lease.clock
        deadline = clock.time() + wait
        while True:
            if self.project.db.execute_write_fn(lambda conn: self.lease.try_acquire(
                    {"purpose": purpose}, fresh={"run_id": None}, conn=conn)):
                if self.lease.taken_over is not None:
                    row, why = self.lease.taken_over
                    log.warning("scenario %s: took over the lock of %s (%s)", self.scenario,
                                row["owner"], why)
                    if row["run_id"] is not None:
                        close_interrupted_runs(
                            self.project, row["run_id"], "the process running this scenario "
                            f"stopped without finishing ({why})")
                return True
            holder = self.last_holder or {}
            if holder.get("purpose") != "checking" or clock.time() >= deadline:
                return False
            clock.sleep(0.05)

    def attach_run(self, run_id: int) -> None:
        """Record which run holds the lock (closed as FAILED if its process dies)."""
        self.project.db.execute_write_fn(
            lambda conn: self.lease.update({"run_id": run_id, "purpose": "running"}, conn))

    def adopt(self) -> None:
        """Make this process the lock's owner (a run process taking over its scheduler's lock),
        so that the lock follows the process that does the work, not the one that started it."""
        new = owner_for_pid(self.owner, os.getpid())
        self.project.db.execute_write_fn(lambda conn: self.lease.transfer(new, conn))

    def refresh(self) -> bool:
        """Push the expiry forward; False if the lock was lost."""
        return self.project.db.execute_write_fn(self.lease.refresh)

    def release(self) -> None:
        """Free the lock if this owner holds it."""
        self.project.db.execute_write_fn(self.lease.release)

    @contextmanager
    def keep_alive(self) -> Iterator[None]:
        """Refresh the lock from a background thread while the body runs."""
        with self.lease.keep_alive(f"scenario {self.scenario}"):
            yield

    def refused_message(self) -> str:
        """Why the lock was refused, for a ConflictError."""
        h = self.last_holder or self.holder() or {}
        what = f"run {h['run_id']}" if h.get("run_id") else h.get("purpose", "a run")
        since = dt.datetime.fromtimestamp(h["acquired"], dt.UTC).isoformat(timespec="seconds") \
            if h.get("acquired") else "?"
        return (f"scenario {self.scenario!r} is already running ({what}, owner {h.get('owner', '?')}, "
                f"since {since}); wait for it to finish (see `labelloop scenario runs "
                f"{self.scenario}`)")
