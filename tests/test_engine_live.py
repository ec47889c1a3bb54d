"""The live queue: fair reservations (cap, one length, release), sessions switched in atomically,
the single writer, and a queue-build lease that survives its owner's `kill -9`."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from labeling.engine import (
    LabelingEngine,
    builder_leases_table,
    reservations_table,
    session_variable,
)
from labeling.settings import parse_settings
from labelloop.errors import LabelloopError
from labelloop.project import ManualClock, Project

CATS = {"cat": None, "dog": None, "bird": None}
WEBAPP = "rows"


def pool_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "x": np.arange(n) * 0.5})


def write_queries(project: Project, pool: pd.DataFrame, seed: int, version: str | None = None
                  ) -> list[str]:
    """A ranking as the Query Sampler commits it; the ids in ranked order."""
    q = pool.copy()
    q["uncertainty"] = np.random.default_rng(seed).random(len(q))
    q["prediction"] = "dog"
    q["confidence"] = 0.5
    if version is not None:
        q["model_version"] = version
    q = q.sort_values("uncertainty", ascending=False, kind="stable")
    with project.write_transaction() as conn:
        project.dataset("queries", create=True).write(q, conn=conn)
        project.variables.incr(session_variable("queries"), conn=conn)
    return q["id"].tolist()


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    p.dataset("pool", create=True).write(pool_frame(300))
    return p


def make_engine(project, background=False, clock=None, **settings) -> LabelingEngine:
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "queries_ds": "queries", "id_column": "id", **settings}
    cfg = parse_settings(config, "tabular", WEBAPP, project)
    return LabelingEngine(project, cfg, check_interval=0, background=background, clock=clock)


def ids_of(batch) -> list[str]:
    return [i["id"] for i in batch["items"]]


def held(project, user: str, now: float | None = None) -> list[tuple[str, float]]:
    r = reservations_table
    now = time.time() if now is None else now
    with project.engine.connect() as conn:
        return [tuple(x) for x in conn.execute(sa.select(r.c.item_id, r.c.until).where(
            r.c.annotator == user, r.c.until > now)).all()]


# ---------------------------------------------------------------- fair reservations

def test_a_batch_above_the_cap_is_refused_and_reserves_nothing(project):
    from labeling.api import build_routes
    from labelloop.web.webapps import normalise_routes

    e = make_engine(project, max_reserved=10)
    route = normalise_routes("w", build_routes(e))[("GET", "batch")]
    with pytest.raises(LabelloopError, match="at most 10 items at once; ask for 10 or fewer"):
        route.check(route.payload_from_query({"size": ["11"]}))
    assert held(project, "mallory") == []
    assert len(ids_of(e.batch("mallory", 10))) == 10


def test_one_annotator_never_holds_more_than_the_cap(project):
    e = make_engine(project, max_reserved=8)
    first = ids_of(e.batch("mallory", 8))
    again = ids_of(e.batch("mallory", 8))  # asking again brings back what is held, nothing more
    assert again == first and len(held(project, "mallory")) == 8
    e.label("mallory", first[0], "cat")
    e.skip("mallory", first[1])
    more = ids_of(e.batch("mallory", 8))
    assert set(more) >= set(first[2:]) and len(set(more) - set(first)) == 2
    assert len(held(project, "mallory")) == 8
    honest = ids_of(e.batch("alice", 8))
    assert len(honest) == 8 and not set(honest) & set(more)


def test_every_item_of_a_batch_is_reserved_for_the_same_time(project):
    e = make_engine(project, reservation_seconds=60, max_reserved=50)
    e.batch("alice", 50)
    untils = {u for _i, u in held(project, "alice")}
    assert len(untils) == 1 and time.time() + 55 < untils.pop() <= time.time() + 60


def test_an_answer_renews_what_the_annotator_holds(project):
    clock = ManualClock()
    e = make_engine(project, reservation_seconds=2, clock=clock)
    ids = ids_of(e.batch("alice", 5))
    before = dict(held(project, "alice", clock.time()))
    clock.advance(0.5)  # more than half their time left: left as they are (no row rewritten)
    e.label("alice", ids[0], "cat")
    assert dict(held(project, "alice", clock.time())) == {i: before[i] for i in ids[1:]}
    clock.advance(1.0)  # less than half left: renewed for the whole time again
    e.label("alice", ids[1], "cat")
    after = dict(held(project, "alice", clock.time()))
    assert set(after) == set(ids[2:])
    assert all(after[i] == before[i] + 1.5 for i in ids[2:])


def test_released_items_go_to_the_next_annotator_at_once(project):
    e = make_engine(project, reservation_seconds=3600)
    alice = ids_of(e.batch("alice", 10))
    assert e.release("bob", alice) == {"released": 0}  # only the holder can release
    assert not set(ids_of(e.batch("bob", 5))) & set(alice)
    assert e.release("alice", alice[3:]) == {"released": 7}
    carol = ids_of(e.batch("carol", 7))
    assert carol == alice[3:]  # the best items of the order, free again
    with pytest.raises(LabelloopError, match="ids must be a list"):
        e.release("alice", "r1")


def test_release_and_the_cap_over_http(make_project, serve):
    project = make_project(plugins=False, config={"webapps": {WEBAPP: {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
                   "categories": CATS, "id_column": "id", "max_reserved": 20}}}})
    project.dataset("pool", create=True).write(pool_frame(100))
    srv = serve(project.dir, "--no-scheduler")
    base = f"/api/v1/webapps/{WEBAPP}"

    def call(method, path, user, body=None):
        return srv.request(method, base + path, json_body=body,
                           headers={"X-Labelloop-User": user})

    refused = call("GET", "/batch?size=21", "mallory")
    # the route's schema carries the cap (so the OpenAPI document tells it): refused there
    assert refused.status == 400 and "between 1 and 20 (this webapp's cap" in refused.json()["error"]
    cfg = call("GET", "/config", "alice").json()
    assert cfg["max_reserved"] == 20 and cfg["session"] == 0
    alice = [i["id"] for i in call("GET", "/batch?size=20", "alice").json()["items"]]
    bob = [i["id"] for i in call("GET", "/batch?size=20", "bob").json()["items"]]
    assert not set(alice) & set(bob)
    done = call("POST", "/release", "alice", {"ids": alice})
    assert done.status == 200 and done.json()["released"] == 20
    carol = [i["id"] for i in call("GET", "/batch?size=20", "carol").json()["items"]]
    assert carol == alice
    bad = call("POST", "/release", "alice", {"ids": "r1"})
    assert bad.status == 400


# ---------------------------------------------------------------- sessions

def sessions_seen(e: LabelingEngine, user: str) -> tuple[int, int, int]:
    return e.config()["session"], e.batch(user, 1)["session"], e.stats(user)["session"]


def test_a_new_session_is_served_only_once_switched_in_and_everywhere_at_once(project):
    pool = pool_frame(300)
    first = write_queries(project, pool, 1, version="v1")
    e = make_engine(project)
    assert sessions_seen(e, "a") == (1, 1, 1)
    with project.write_transaction() as conn:  # another process is preparing the new order
        conn.execute(sa.insert(builder_leases_table).values(
            app=e.app_id, owner="elsewhere:1:x", acquired=time.time(),
            expires=time.time() + 60))
    second = write_queries(project, pool, 2, version="v2")
    e.background = True
    e.refresh()
    e.wait_idle()
    assert sessions_seen(e, "b") == (1, 1, 1)  # the variable says 2: not switched in yet
    item = e.batch("c", 1)["items"][0]
    assert item["id"] in first[:5] and item["suggestion"]["model_version"] == "v1"
    with project.write_transaction() as conn:
        conn.execute(sa.delete(builder_leases_table))
    e.refresh()
    e.wait_idle()
    assert sessions_seen(e, "d") == (2, 2, 2)
    b = e.batch("d", 1)  # what "d" was just served, in the new order
    assert b["session"] == 2 and b["items"][0]["id"] == second[0]
    assert b["items"][0]["suggestion"]["model_version"] == "v2"
    assert e.config()["model_version"] == "v2"


def test_each_batch_comes_from_the_session_it_names_during_switches(project):
    pool = pool_frame(300)
    rankings = {1: write_queries(project, pool, 1)}
    e = make_engine(project, background=True)
    e.refresh(wait=True)
    seen: list[tuple[int, str, int, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            try:
                b = e.batch(f"p{k}", 1)
                s = e.stats(f"p{k}")["session"]
                c = e.config()["session"]
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(repr(exc))
                return
            if b["items"]:
                seen.append((b["session"], b["items"][0]["id"], s, c))

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    for session in (2, 3):
        time.sleep(0.3)
        rankings[session] = write_queries(project, pool, session)
        deadline = time.time() + 30
        while e.config()["session"] != session and time.time() < deadline:
            time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    thread.join(30)
    assert not errors, errors
    assert {s for s, *_ in seen} == {1, 2, 3}
    served = set()
    for session, item, stats_session, config_session in seen:
        # each poll takes the first free item of the order the batch says it came from
        assert item in rankings[session][:len(seen) + 1], (session, item)
        assert stats_session >= session and config_session >= stats_session
        assert item not in served
        served.add(item)
    order = [s for s, *_ in seen]
    assert order == sorted(order)  # never back to an older session


# ---------------------------------------------------------------- the single writer

def test_writes_of_one_process_take_turns_on_one_thread(project):
    names = set()

    def write(conn):
        names.add(threading.current_thread().name)
        conn.execute(sa.text("SELECT 1"))
        return threading.current_thread().name

    threads = [threading.Thread(target=lambda: project.db.execute_write_fn(write))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert names == {"labelloop-writer"}
    assert project.db.execute_write_fn(lambda conn: project.db.execute_write_fn(
        lambda inner: inner is conn))  # a nested call runs in the same transaction

    def fail(conn):
        project.variables.set("x", 1, conn=conn)
        raise LabelloopError("refused")

    with pytest.raises(LabelloopError, match="refused"):
        project.db.execute_write_fn(fail)
    assert project.variables.get("x") is None  # rolled back


# ---------------------------------------------------------------- the lease (issue 11 D5)

def test_a_lease_whose_owner_died_is_taken_over_at_once(project):
    pool = pool_frame(300)
    write_queries(project, pool, 1)
    e = make_engine(project)
    e.batch("a", 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with project.write_transaction() as conn:  # its heartbeat would last another 10 minutes
        conn.execute(sa.insert(builder_leases_table).values(
            app=e.app_id, owner=f"{socket.gethostname()}:{dead.pid}:x", acquired=time.time(),
            expires=time.time() + 600))
    second = write_queries(project, pool, 2)
    e.refresh()
    assert e.batch("b", 1)["items"][0]["id"] == second[0]


def test_kill_9_during_the_first_build_then_a_batch_within_10_s(make_project, serve, poll):
    project = make_project(plugins=False, config={"webapps": {WEBAPP: {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
                   "queries_ds": "queries", "categories": CATS, "id_column": "id"}}}})
    pool = pool_frame(150_000)
    project.dataset("pool", create=True).write(pool)
    ranked = write_queries(project, pool, 1)
    srv = serve(project.dir, "--no-scheduler")
    config = f"/api/v1/webapps/{WEBAPP}/config"

    def building():
        cfg = srv.get(config).json()
        prep = cfg.get("preparing") or {}
        return prep if prep.get("what") == "indexing the pool" and prep["done"] else None

    poll(building, timeout=120, interval=0.05, what="the first build under way")
    with project.engine.connect() as conn:
        owner = conn.execute(sa.select(builder_leases_table.c.owner)).scalar()
    assert owner.split(":")[1] == str(srv.proc.pid)  # host:pid:token
    srv.proc.kill()  # SIGKILL: the lease stays in the database, its owner is gone
    srv.proc.wait(10)
    again = serve(project.dir, "--no-scheduler")
    t0 = time.monotonic()
    b = again.get(f"/api/v1/webapps/{WEBAPP}/batch?size=5", timeout=10)
    assert b.status == 200 and [i["id"] for i in b.json()["items"]] == ranked[:5]
    assert time.monotonic() - t0 < 10
    poll(lambda: not again.get(config).json().get("preparing"), timeout=300, interval=0.5,
         what="the build taken over and finished")
    with project.engine.connect() as conn:
        owner = conn.execute(sa.select(builder_leases_table.c.owner)).scalar()
    assert owner is None or owner.split(":")[1] == str(again.proc.pid)
    assert again.get(f"/api/v1/webapps/{WEBAPP}/stats").json()["total"] == len(pool)
