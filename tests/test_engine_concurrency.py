"""Reliability of the labeling engine under real servers: 8 concurrent annotators (threads on
one server, and on two server processes sharing a project) and a `kill -9` mid-burst."""

from __future__ import annotations

import http.client
import threading
import time

import numpy as np
import pandas as pd
import sqlalchemy as sa
from conftest import webapp_call

from labeling.engine import annotations_table, counts_table
from labelloop.project import Project

WEBAPP = "rows"
CATS = ["a", "b", "c"]
ANNOTATORS = 8
LABELS_EACH = 200


def setup_project(make_project, rows: int) -> Project:
    project = make_project(plugins=False, config={"webapps": {WEBAPP: {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "labels_ds": "labels", "metadata_ds": "metadata",
                   "categories": {c: None for c in CATS}, "reservation_seconds": 600}}}})
    rng = np.random.default_rng(0)
    project.dataset("pool", create=True).write(pd.DataFrame(
        {"k": np.arange(rows), "v": rng.random(rows)}))
    return project


class Annotator(threading.Thread):
    """Fetches batches and labels every item of each, recording what it was served and told."""

    def __init__(self, port: int, name: str, labels: int):
        super().__init__(daemon=True)
        self.port, self.user, self.target = port, name, labels
        self.served: list[str] = []
        self.acks: list[tuple[int, str, str]] = []  # (label_id, item id, label) answered 2xx
        self.error: str | None = None

    def call(self, conn, method: str, path: str, body=None):
        return webapp_call(conn, self.user, WEBAPP, method, path, body)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            while len(self.acks) < self.target:
                status, batch = self.call(conn, "GET", "batch?size=20")
                if status != 200:
                    self.error = f"batch: {status} {batch}"
                    return
                if not batch["items"]:
                    if batch["done"]:
                        return
                    time.sleep(0.05)
                    continue
                self.served += [i["id"] for i in batch["items"]]
                for k, item in enumerate(batch["items"]):
                    if len(self.acks) >= self.target:
                        break
                    label = CATS[(k + len(self.acks)) % len(CATS)]
                    status, ans = self.call(conn, "POST", "labels",
                                            {"id": item["id"], "label": label})
                    if status != 200:
                        self.error = f"label: {status} {ans}"
                        return
                    self.acks.append((ans["label_id"], item["id"], label))
        except (OSError, http.client.HTTPException) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()


def stored(project: Project) -> dict:
    """What the database holds: annotations, labels and metadata rows, counters."""
    with project.engine.connect() as conn:
        ann = conn.execute(sa.select(annotations_table.c.label_id, annotations_table.c.item_id,
                                     annotations_table.c.status, annotations_table.c.label)
                           ).all()
        counts = dict(conn.execute(sa.select(counts_table.c.key, counts_table.c.n)).all())
    return {"annotations": ann, "labels": project.dataset("labels").read(),
            "metadata": project.dataset("metadata").read(), "counts": counts}


def check_consistent(project: Project) -> dict:
    """Every annotation has exactly its rows in labels and metadata, and the counters agree."""
    s = stored(project)
    ann = {a.label_id: a for a in s["annotations"]}
    labels, meta = s["labels"], s["metadata"]
    assert labels["label_id"].is_unique and meta["label_id"].is_unique
    assert set(meta["label_id"]) == set(ann)
    labeled = {i for i, a in ann.items() if a.status == "LABELED"}
    assert set(labels["label_id"]) == labeled
    for row in labels.itertuples():
        assert ann[row.label_id].label == row.label
    for row in meta.itertuples():
        assert ann[row.label_id].item_id == row.data_id
    assert s["counts"].get("labeled", 0) == len(labeled)
    assert sum(s["counts"].get(f"label:{c}", 0) for c in CATS) == len(labeled)
    return s


def check_run(project: Project, annotators: list[Annotator]) -> None:
    errors = [a.error for a in annotators if a.error]
    assert not errors, errors
    seen: dict[str, str] = {}
    for a in annotators:
        for item in a.served:  # reservations outlast the test: no item goes to two annotators
            assert seen.setdefault(item, a.user) == a.user, f"{item} served to two annotators"
    acks = [ack for a in annotators for ack in a.acks]
    assert len(acks) == ANNOTATORS * LABELS_EACH
    assert len({lid for lid, _i, _l in acks}) == len(acks)  # label ids unique
    assert len({i for _lid, i, _l in acks}) == len(acks)  # each item labeled once
    s = check_consistent(project)
    by_id = {a.label_id: a for a in s["annotations"]}
    for lid, item, label in acks:  # every acknowledged label stored exactly once
        assert by_id[lid].item_id == item and by_id[lid].label == label
    assert len(s["labels"]) == len(acks) == len(s["metadata"])


def run_annotators(ports: list[int]) -> list[Annotator]:
    annotators = [Annotator(ports[k % len(ports)], f"ann{k}", LABELS_EACH)
                  for k in range(ANNOTATORS)]
    for a in annotators:
        a.start()
    for a in annotators:
        a.join(300)
    return annotators


def test_eight_annotators_on_one_server(make_project, serve):
    project = setup_project(make_project, 1800)
    srv = serve(project.dir, "--no-scheduler")
    check_run(project, run_annotators([srv.port]))


def test_eight_annotators_on_two_server_processes(make_project, serve):
    project = setup_project(make_project, 1800)
    one = serve(project.dir, "--no-scheduler")
    two = serve(project.dir, "--no-scheduler")
    check_run(project, run_annotators([one.port, two.port]))


def test_kill_9_mid_burst_loses_no_acknowledged_label(make_project, serve):
    project = setup_project(make_project, 3000)
    srv = serve(project.dir, "--no-scheduler")
    annotators = [Annotator(srv.port, f"ann{k}", 10_000) for k in range(4)]
    for a in annotators:
        a.start()
    deadline = time.monotonic() + 60
    while sum(len(a.acks) for a in annotators) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.proc.kill()  # SIGKILL, while the annotators keep sending labels
    srv.proc.wait(10)
    for a in annotators:
        a.join(60)
    acks = [ack for a in annotators for ack in a.acks]
    assert len(acks) >= 150
    again = serve(project.dir, "--no-scheduler")
    s = check_consistent(project)
    by_id = {a.label_id: a for a in s["annotations"]}
    for lid, item, label in acks:
        assert lid in by_id and by_id[lid].item_id == item and by_id[lid].label == label
    # a request in flight at the kill may have committed without its answer: never more
    assert len(acks) <= len(by_id) <= len(acks) + len(annotators)
    conn = http.client.HTTPConnection("127.0.0.1", again.port, timeout=60)
    probe = Annotator(again.port, "after", 1)
    status, batch = probe.call(conn, "GET", "batch?size=5")
    assert status == 200 and batch["stats"]["labeled"] == len(by_id)
    status, ans = probe.call(conn, "POST", "labels", {"id": batch["items"][0]["id"],
                                                      "label": "a"})
    assert status == 200 and ans["label_id"] > max(by_id)

