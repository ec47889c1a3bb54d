"""The one lease (labelloop.project.leases): take-over of dead owners, races, hand-over, clocks."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from labelloop.project.db import scenario_locks_table
from labelloop.project.leases import Lease, ManualClock, owner_for_pid, owner_is_gone


@pytest.fixture
def project(make_project):
    return make_project()


def lease(project, owner=None, clock=None, ttl=60.0) -> Lease:
    return Lease(project.engine, scenario_locks_table, {"scenario": "s"}, owner=owner, ttl=ttl,
                 clock=clock)


VALUES = {"purpose": "running"}


def test_a_lease_whose_process_is_gone_is_taken_over_before_it_expires(project):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a process of this machine that no longer runs
    clock = ManualClock(1000)
    dead = lease(project, owner_for_pid(lease(project).owner, proc.pid), clock)
    assert owner_is_gone(dead.owner)
    assert dead.try_acquire(VALUES)
    mine = lease(project, clock=clock)
    assert mine.try_acquire(VALUES)  # at once: no need to wait for its expiry
    row, why = mine.taken_over
    assert row["owner"] == dead.owner and why == "its process is gone"
    assert mine.holder()["owner"] == mine.owner and not dead.refresh()


def test_a_live_owner_keeps_its_lease_until_it_expires(project):
    clock = ManualClock(1000)
    first, second = lease(project, clock=clock), lease(project, clock=clock)
    assert first.try_acquire(VALUES)
    clock.advance(59.5)
    assert not second.try_acquire(VALUES)
    assert second.last_holder["owner"] == first.owner
    clock.advance(0.5)
    assert second.try_acquire(VALUES) and second.taken_over[1] == "its lock expired"


@pytest.mark.parametrize("n", [2, 6])
def test_owners_racing_for_a_free_lease_get_one_winner(project, n):
    leases = [lease(project) for _ in range(n)]
    start = threading.Barrier(n)  # every thread asks at the same moment: the race is reached
    results: list[bool] = [False] * n

    def take(i: int) -> None:
        start.wait(timeout=60)
        results[i] = leases[i].try_acquire(VALUES)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(results) == 1
    assert leases[0].holder()["owner"] == leases[results.index(True)].owner


def test_a_lease_is_handed_over_and_the_old_owner_no_longer_holds_it(project):
    clock = ManualClock(1000)
    first = lease(project, clock=clock)
    assert first.try_acquire(VALUES)
    old_owner = first.owner
    assert first.transfer(owner_for_pid(old_owner, 4242))
    assert first.holder()["owner"].split(":")[1] == "4242"
    stale = lease(project, owner=old_owner, clock=clock)
    assert not stale.refresh()
    stale.release()  # not its lease any more: nothing happens
    assert first.holder() is not None
