"""Overlap (`annotators_per_item` k > 1): every item labeled by k distinct annotators, nobody
twice, reservations held in parallel by up to k, the team's progress in the stats; in-process
engines, then two `labelloop serve` processes sharing one project."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import wait_for as poll
from conftest import webapp_call

from labeling import ui
from labeling.engine import LabelingEngine, annotations_table, session_variable
from labeling.settings import parse_settings
from labeling.store import item_answers_table, reservations_table
from labelloop.descriptors import load_descriptor
from labelloop.errors import ConfigError, ConflictError
from labelloop.params import validate_config
from labelloop.project import ManualClock, Project

CATS = {"cat": None, "dog": None, "bird": None}
K = 2


def pool(n: int) -> pd.DataFrame:
    return pd.DataFrame({"num": np.arange(n), "word": [f"w{i}" for i in range(n)]})


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    p.dataset("pool", create=True).write(pool(24))
    return p


def make_engine(project, clock=None, **settings) -> LabelingEngine:
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "annotators_per_item": K, "max_reserved": 100,
              "id_column": "word", **settings}
    cfg = parse_settings(config, "tabular", "w", project)
    return LabelingEngine(project, cfg, check_interval=0, background=False, clock=clock)


def ids(batch: dict) -> list[str]:
    return [i["id"] for i in batch["items"]]


def answers(project) -> dict[str, list[tuple[str, str]]]:
    """item -> [(annotator, status)] from the annotations table."""
    an = annotations_table
    out: dict[str, list] = defaultdict(list)
    with project.engine.connect() as conn:
        for r in conn.execute(sa.select(an.c.item_id, an.c.owner, an.c.annotator, an.c.status)):
            assert r.owner == r.annotator  # each answer is its annotator's own
            out[r.item_id].append((r.annotator, r.status))
    return out


def held(project, now: float) -> dict[str, set[str]]:
    """item -> the annotators holding it now."""
    r = reservations_table
    out: dict[str, set] = defaultdict(set)
    with project.engine.connect() as conn:
        for row in conn.execute(sa.select(r.c.item_id, r.c.annotator).where(r.c.until > now)):
            out[row.item_id].add(row.annotator)
    return out


def labeled_counts(project) -> dict[str, int]:
    t = item_answers_table
    with project.engine.connect() as conn:
        return dict(conn.execute(sa.select(t.c.item_id, t.c.n)).all())


# ---------------------------------------------------------------- in-process engines

def test_three_annotators_give_every_item_exactly_k_labels(project):
    clock = ManualClock(1000.0)
    e = make_engine(project, clock=clock)
    rng = random.Random(3)
    users = ["ann", "bob", "cyd"]
    answered: dict[str, set] = {u: set() for u in users}
    finished: set[str] = set()
    steps = 0
    while len(finished) < len(users):
        steps += 1
        assert steps < 500
        user = rng.choice(sorted(set(users) - finished))
        batch = e.batch(user, 3)
        got = ids(batch)
        assert not set(got) & answered[user], f"{user} was served an item they answered"
        if not got:  # all left are held by k others, or done
            if batch["done"]:
                finished.add(user)
            continue
        item = got[0]
        e.label(user, item, rng.choice(list(CATS)))
        answered[user].add(item)
        # Fair and never over k: the labels of an item and the others holding it stay <= k.
        hold, n = held(project, clock.time()), labeled_counts(project)
        for it in set(hold) | set(n):
            assert n.get(it, 0) + len(hold.get(it, set()) - {a for a in users
                                                             if it in answered[a]}) <= K

    got = answers(project)
    assert len(got) == 24
    for item, who in got.items():
        names = [a for a, _s in who]
        assert len(names) == K and len(set(names)) == K, (item, who)
    # Every annotator took part (the items were dealt in parallel, not to one person).
    assert all(answered[u] for u in users)
    labels = project.dataset("labels").read()
    meta = project.dataset("metadata").read()
    assert len(labels) == len(meta) == 24 * K
    assert Counter(labels["word"]).most_common(1)[0][1] == K
    assert set(meta.groupby("data_id")["annotator"].nunique()) == {K}
    stats = e.stats("ann")
    assert stats["overlap"] == {"k": K, "complete": 24, "partial": 0, "open": 0}
    assert stats["labeled"] == len(answered["ann"]) and stats["remaining"] == 0
    assert e.config()["annotators_per_item"] == K


def test_k_annotators_hold_an_item_in_parallel_and_release_and_expiry_work(project):
    clock = ManualClock(1000.0)
    e = make_engine(project, clock=clock, reservation_seconds=60, max_reserved=5)
    first = ids(e.batch("ann", 5))
    assert ids(e.batch("bob", 5)) == first  # the second annotator gets the same items at once
    third = ids(e.batch("cyd", 5))
    assert not set(third) & set(first)  # two hold them already: k reached
    assert len(ids(e.batch("ann", 20))) == 5  # max_reserved still holds per annotator
    # A label ends the labeler's hold only; the item then waits for the one other holder.
    e.label("ann", first[0], "cat")
    assert e.stats("cyd")["overlap"] == {"k": K, "complete": 0, "partial": 1, "open": 23}
    assert first[0] not in ids(e.batch("cyd", 20))
    assert first[0] not in ids(e.batch("ann", 20))
    # Released by bob: cyd may take it (ann answered, so one label and no hold of others).
    assert e.release("bob", [first[0], first[1]])["released"] == 2
    got = ids(e.release("cyd", third) and e.batch("cyd", 5))
    assert first[0] in got and first[1] in got
    e.label("cyd", first[0], "dog")
    stats = e.stats("bob")
    assert stats["overlap"] == {"k": K, "complete": 1, "partial": 0, "open": 23}
    assert stats["remaining"] == 23 and stats["labeled"] == 0
    # Expired holds count for nothing: after the reservation time, a fourth annotator gets
    # what ann and bob held.
    clock.advance(61)
    assert set(first[2:5]) <= set(ids(e.batch("dan", 5)) + ids(e.batch("eve", 5)))


def test_a_skip_takes_the_item_out_of_the_skippers_stream_only(project):
    e = make_engine(project)
    item = ids(e.batch("ann", 1))[0]
    e.skip("ann", item)
    assert item not in ids(e.batch("ann", 24))
    assert e.stats("ann")["overlap"]["partial"] == 0  # a skip is no label
    e.release("ann", ids(e.batch("ann", 24)))
    e.label("bob", item, "cat")
    assert item in ids(e.batch("cyd", 1))
    e.label("cyd", item, "dog")
    assert e.stats("ann")["overlap"]["complete"] == 1
    # Changed to a skip, a label counts no more: the item is open to others again.
    e.skip("cyd", item)
    assert e.stats("ann")["overlap"] == {"k": K, "complete": 0, "partial": 1, "open": 23}
    assert item in ids(e.batch("dan", 1))
    e.label("cyd", item, "bird")  # and back to a label (still cyd's one answer)
    assert labeled_counts(project)[item] == 2
    assert sorted(answers(project)[item]) == [
        ("ann", "SKIPPED"), ("bob", "LABELED"), ("cyd", "LABELED")]


def test_a_label_beyond_k_is_refused_and_writes_nothing(project):
    e = make_engine(project)
    item = ids(e.batch("ann", 1))[0]
    e.label("ann", item, "cat")
    e.label("bob", item, "dog")
    e.label("ann", item, "bird")  # changing one's own answer is always allowed
    rows = len(project.dataset("labels").read()), len(project.dataset("metadata").read())
    with pytest.raises(ConflictError, match="already has its 2 answers"):
        e.label("cyd", item, "cat")
    assert (len(project.dataset("labels").read()), len(project.dataset("metadata").read())) \
        == rows
    assert labeled_counts(project)[item] == 2 and len(answers(project)[item]) == 2
    assert e.stats("cyd")["labeled"] == 0
    e.skip("cyd", item)  # a skip of a complete item is the skipper's own business
    assert e.stats("cyd")["overlap"]["complete"] == 1


def test_a_new_order_keeps_complete_items_out_and_partial_ones_for_the_others(project):
    e = make_engine(project, queries_ds="queries")
    first = ids(e.batch("ann", 4))
    for item in first[:3]:
        e.label("ann", item, "cat")
        e.label("bob", item, "dog")
    e.label("cyd", first[3], "bird")
    e.release("ann", first)
    # The Query Sampler puts exactly these four first in the next session.
    frame = pool(24)
    unc = np.where(frame["word"].isin(first), 0.9, 0.1)
    queries = frame.assign(uncertainty=unc, prediction="dog", confidence=0.6)
    project.dataset("queries", create=True).write(queries.sort_values("uncertainty",
                                                                      ascending=False))
    project.variables.incr(session_variable("queries"))
    e.background = True
    def switched() -> bool:
        e.wait_idle()  # the background worker's build of the new order
        return e.config()["queue_session"] == 1

    poll(switched, timeout=30, what="the new order")
    assert ids(e.batch("dan", 2))[0] == first[3]  # the partial one, to another annotator
    assert first[3] not in ids(e.batch("cyd", 24))
    assert not set(first[:3]) & set(ids(e.batch("eve", 24)))
    assert e.stats("dan")["overlap"] == {"k": K, "complete": 3, "partial": 1, "open": 20}


def test_overlap_with_labels_per_annotator_is_a_config_error(project):
    with pytest.raises(ConfigError, match="annotators_per_item is 2 but labels_per_annotator"):
        make_engine(project, labels_per_annotator=True)
    for kind in ("tabular", "image", "sound", "text", "text-spans"):
        desc = load_descriptor(
            "webapp", f"{ui.RESOURCE_DIR.parent}/webapps/{kind}-labeling/webapp.json")
        with pytest.raises(ConfigError, match="'annotators_per_item'.* between 1 and 20"):
            validate_config("w", desc["params"], {"annotators_per_item": 21})
        param = next(p for p in desc["params"] if p.get("name") == "annotators_per_item")
        assert (param["type"], param["defaultValue"], param["label"]) == (
            "INT", 1, "Annotators per item")


# ---------------------------------------------------------------- two server processes

WEBAPP = "rows"


class Annotator(threading.Thread):
    """Takes batches of 3 and labels the first item of each until told it is done."""

    def __init__(self, port: int, name: str):
        super().__init__(daemon=True)
        self.port, self.user = port, name
        self.served_after: list[str] = []  # items served after this annotator answered them
        self.answered: list[str] = []
        self.refused = 0
        self.error: str | None = None

    def call(self, conn, method: str, path: str, body=None):
        return webapp_call(conn, self.user, WEBAPP, method, path, body)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            for _ in range(400):
                status, batch = self.call(conn, "GET", "batch?size=3")
                if status != 200:
                    self.error = f"batch: {status} {batch}"
                    return
                got = [i["id"] for i in batch["items"]]
                self.served_after += [i for i in got if i in self.answered]
                if not got:
                    if batch["done"]:
                        return
                    time.sleep(0.05)
                    continue
                status, ans = self.call(conn, "POST", "labels",
                                        {"id": got[0], "label": "cat"})
                if status == 409:  # completed by others meanwhile (cannot happen while
                    self.refused += 1  # reservations last; counted, and checked below)
                elif status != 200:
                    self.error = f"label: {status} {ans}"
                    return
                else:
                    self.answered.append(got[0])
            self.error = "never done"
        except (OSError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def test_overlap_across_two_server_processes(make_project, serve):
    project = make_project(plugins=False, config={"webapps": {WEBAPP: {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
                   "categories": CATS, "id_column": "word", "annotators_per_item": K,
                   "reservation_seconds": 600}}}})
    project.dataset("pool", create=True).write(pool(40))
    one = serve(project.dir, "--no-scheduler")
    two = serve(project.dir, "--no-scheduler")
    team = [Annotator(port, f"ann{i}") for i, port in enumerate([one.port, two.port] * 2)][:3]
    for a in team:
        a.start()
    for a in team:
        a.join(240)
    assert [a.error for a in team if a.error] == []
    assert [a.served_after for a in team] == [[], [], []]  # nobody got an item twice
    assert sum(a.refused for a in team) == 0
    got = answers(project)
    assert len(got) == 40
    for item, who in got.items():  # exactly k, none over, all distinct
        assert len(who) == K and len({a for a, _s in who}) == K, (item, who)
    assert sum(len(a.answered) for a in team) == 40 * K
    assert all(a.answered for a in team)
    stats = json.loads(http_get(one.port, f"/api/v1/webapps/{WEBAPP}/stats", "ann0"))
    assert stats["overlap"] == {"k": K, "complete": 40, "partial": 0, "open": 0}
    assert stats["labeled"] == len(team[0].answered)
    labels = project.dataset("labels").read()
    assert len(labels) == 40 * K and set(Counter(labels["word"]).values()) == {K}


def http_get(port: int, path: str, user: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"X-Labelloop-User": user})
        return conn.getresponse().read()
    finally:
        conn.close()
