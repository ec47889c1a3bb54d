"""What one label costs the database: its statements (round trips), and the rule that stamps
`ll_datasets.updated` once per dataset and transaction, also when labels share one commit."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from labeling.engine import LabelingEngine
from labeling.settings import parse_settings
from labelloop.errors import NotFoundError
from labelloop.project import Project

CATS = {"cat": None, "dog": None, "bird": None}
OLD = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    rng = np.random.default_rng(1)
    p.dataset("pool", create=True).write(pd.DataFrame(
        {"num": np.arange(40), "x": rng.random(40)}))
    return p


def make_engine(project, **settings) -> LabelingEngine:
    config = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "queries_ds": "queries", "max_reserved": 50,
              **settings}
    cfg = parse_settings(config, "tabular", "w", project)
    return LabelingEngine(project, cfg, check_interval=0, background=False)


class Statements:
    """The statements the writer thread sends (an executemany counts once per row: on
    PostgreSQL each row is a round trip), the pipeline blocks it ends (PostgreSQL: each a
    round trip for all its statements) and the connections it checks out of the pool (each a
    pre-ping round trip on PostgreSQL)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.sql: list[str] = []
        self.pipelined: list[bool] = []  # sent in psycopg's pipeline mode (PostgreSQL)
        self.blocks = 0  # pipeline blocks ended (the outermost ones: each syncs)
        self.checkouts = 0
        self._patched = None

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany):
        if threading.current_thread().name == "labelloop-writer":
            n = len(parameters) if executemany else 1
            self.sql += [" ".join(statement.split())[:60]] * n
            raw = conn.connection.driver_connection
            status = getattr(getattr(raw, "info", None), "pipeline_status", 0)
            self.pipelined += [bool(status)] * n

    def round_trips(self) -> int:
        """PostgreSQL: waits for the server in the transaction, its COMMIT included: one per
        statement sent alone, one per pipeline block."""
        return self.pipelined.count(False) + self.blocks + 1

    def _on_checkout(self, *args):
        if threading.current_thread().name == "labelloop-writer":
            self.checkouts += 1

    def __enter__(self) -> Statements:
        sa.event.listen(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.listen(self.engine.pool, "checkout", self._on_checkout)
        if self.engine.dialect.name == "postgresql":
            import psycopg

            original = self._patched = psycopg.Connection.pipeline
            seen = self

            @contextlib.contextmanager
            def pipeline(conn):
                outermost = not conn.info.pipeline_status
                with original(conn) as p:
                    yield p
                if outermost and threading.current_thread().name == "labelloop-writer":
                    seen.blocks += 1

            psycopg.Connection.pipeline = pipeline
        return self

    def __exit__(self, *exc) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._on_execute)
        sa.event.remove(self.engine.pool, "checkout", self._on_checkout)
        if self._patched is not None:
            import psycopg

            psycopg.Connection.pipeline = self._patched


def updated(project, name: str) -> dt.datetime:
    with project.engine.connect() as conn:
        value = conn.execute(sa.text("SELECT updated FROM ll_datasets WHERE name = :n"),
                             {"n": name}).scalar_one()
    if isinstance(value, str):  # SQLite gives the stored text back through text()
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def set_updated(conn: sa.Connection, name: str, when: dt.datetime = OLD) -> None:
    from labelloop.project.db import datasets_table as d

    conn.execute(sa.update(d).where(d.c.name == name).values(updated=when))


def test_one_label_sends_twelve_statements_and_no_pre_ping(project):
    eng = make_engine(project)
    ids = [i["id"] for i in eng.batch("ann", 5)["items"]]
    eng.label("ann", ids[0], "cat")  # the first answer creates the datasets
    with Statements(project.engine) as seen:
        eng.label("ann", ids[1], "dog")
    # BEGIN IMMEDIATE (SQLite) or BEGIN and the advisory lock (PostgreSQL); the app with the
    # item's row and the earlier answer; labels and metadata marked changed (one statement);
    # the annotation; the labels row; the metadata row; the queue; the annotation's rows;
    # the counters (one statement); unreserve; renew; the counts.
    pg = project.engine.dialect.name == "postgresql"
    assert len(seen.sql) == (13 if pg else 12), seen.sql
    assert sum("ll_datasets" in s for s in seen.sql) == 1
    assert sum("lb_counts" in s for s in seen.sql) == 2  # the upsert and the read
    assert seen.checkouts == 0  # the writer kept its connection: no pre-ping
    if pg:  # BEGIN and the lock with the first read, which marks the datasets; the
        # annotation with its rows (its id taken by that read); the rest with the counts;
        # COMMIT
        from labelloop.project.db import PG_WRITE_LOCK

        assert seen.sql[:2] == ["BEGIN", f"SELECT pg_advisory_xact_lock({PG_WRITE_LOCK})"]
        assert seen.round_trips() == 4, list(zip(seen.sql, seen.pipelined, strict=True))
    # Changing an answer costs the same statements, updates instead of inserts.
    with Statements(project.engine) as seen:
        eng.label("ann", ids[1], "bird")
    # no queue update: the item was already done
    assert len(seen.sql) == (12 if pg else 11), seen.sql
    if pg:  # who gave the earlier answer, and the label and metadata rows updated in place
        # (their row counts are read): one round trip each
        assert seen.round_trips() == 6, list(zip(seen.sql, seen.pipelined, strict=True))
    assert eng.stats("ann")["per_label"] == {"cat": 1, "dog": 0, "bird": 1}
    labels = project.dataset("labels").read()
    assert sorted(labels["label"]) == ["bird", "cat"]


def test_a_label_stamps_labels_and_metadata(project):
    eng = make_engine(project)
    ids = [i["id"] for i in eng.batch("ann", 5)["items"]]
    eng.label("ann", ids[0], "cat")
    with project.write_transaction() as conn:
        set_updated(conn, "labels")
        set_updated(conn, "metadata")
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    eng.label("ann", ids[1], "dog")
    assert updated(project, "labels") > before
    assert updated(project, "metadata") > before
    with project.write_transaction() as conn:
        set_updated(conn, "labels")
    eng.skip("ann", ids[1])  # deletes the label row: a change too
    assert updated(project, "labels") > before
    with project.write_transaction() as conn:
        set_updated(conn, "labels")
        set_updated(conn, "metadata")
    eng.skip("ann", ids[2])  # a first skip writes metadata only: labels did not change
    assert updated(project, "labels") == OLD
    assert updated(project, "metadata") > before


def test_a_rolled_back_savepoint_does_not_leave_a_later_write_unstamped(project):
    ds = project.dataset("rows", create=True)
    ds.write(pd.DataFrame({"a": [1]}), storage="rows")
    with project.write_transaction() as conn:
        set_updated(conn, "rows")
    with project.write_transaction() as conn:
        sp = conn.begin_nested()
        ds.insert(conn, {"a": 2})  # stamps, then undone with its savepoint
        sp.rollback()
        with conn.begin_nested():
            ds.insert(conn, {"a": 3})  # must stamp again
        ds.insert(conn, {"a": 4})  # the same transaction: stamped already
    assert updated(project, "rows") > OLD
    assert sorted(ds.read()["a"]) == [1, 3, 4]


def test_a_dataset_created_in_a_rolled_back_savepoint_is_not_remembered(project):
    ds = project.dataset("fresh", create=True)
    with project.write_transaction() as conn:
        sp = conn.begin_nested()
        ds.write(pd.DataFrame({"a": pd.Series([], dtype="int64")}), conn=conn,
                 storage="rows")
        ds.insert(conn, {"a": 1})
        sp.rollback()
        with pytest.raises(NotFoundError):  # the usual "no data yet", not a missing table
            ds.insert(conn, {"a": 2})


def test_a_dataset_replaced_in_the_transaction_is_written_in_its_new_table(project):
    ds = project.dataset("rows", create=True)
    ds.write(pd.DataFrame({"a": [1]}), storage="rows")
    with project.write_transaction() as conn:
        ds.insert(conn, {"a": 2})
        ds.write(pd.DataFrame({"a": [10]}), conn=conn, storage="rows")  # a new table
        ds.insert(conn, {"a": 11})
    assert sorted(ds.read()["a"]) == [10, 11]


def test_labels_sharing_one_commit_stamp_after_a_failed_write(project):
    """The group commit: writes waiting together share one transaction, each in a savepoint.
    A write that stamped the labels dataset and then failed is undone with its stamp; the
    next label of the same transaction stamps again."""
    eng = make_engine(project)
    ids = [i["id"] for i in eng.batch("ann", 5)["items"]]
    eng.label("ann", ids[0], "cat")
    db = project.db
    go, started = threading.Event(), threading.Event()

    def hold(conn):  # keeps the writer busy while the group queues up
        set_updated(conn, "labels")
        set_updated(conn, "metadata")
        started.set()  # after its own stamps: only the group's statements are counted below
        go.wait(10)

    def failing(conn):
        project.dataset("labels").insert(conn, {"label": "cat"}, ignore_extra=True)
        raise RuntimeError("this write fails after stamping")

    out: dict = {}
    threads = [threading.Thread(target=lambda: db.execute_write_fn(hold))]
    threads[0].start()
    assert started.wait(10)

    def queue(target):
        n = len(db._jobs[0])
        t = threading.Thread(target=target)
        t.start()
        threads.append(t)
        while len(db._jobs[0]) == n:
            time.sleep(0.005)

    def run_failing():
        try:
            db.execute_write_fn(failing)
        except RuntimeError as exc:
            out["failed"] = exc

    queue(run_failing)
    queue(lambda: out.setdefault("label", eng.label("ann", ids[1], "dog")))
    queue(lambda: out.setdefault("label2", eng.label("ann", ids[2], "bird")))
    with Statements(project.engine) as seen:
        go.set()
        for t in threads:
            t.join(10)
    assert "failed" in out and out["label"]["label_id"] and out["label2"]["label_id"]
    assert updated(project, "labels") > OLD
    assert updated(project, "metadata") > OLD
    # One transaction for the three: the failed write stamps labels, and its rollback undoes
    # that; the first label after it stamps labels and metadata again (one statement), the
    # second label not at all.
    touches = [s for s in seen.sql if s.startswith("UPDATE ll_datasets")]
    assert len(touches) == 2, seen.sql
    # Each label in a savepoint of its own, released; PostgreSQL leaves the last one's
    # RELEASE to the COMMIT (it would have been a round trip of its own).
    pg = project.engine.dialect.name == "postgresql"
    assert sum(s.startswith("RELEASE SAVEPOINT") for s in seen.sql) == (1 if pg else 2)
    assert sum(s.startswith("ROLLBACK TO SAVEPOINT") for s in seen.sql) == 1
    assert sorted(project.dataset("labels").read()["label"]) == ["bird", "cat", "dog"]


def test_the_writer_replaces_a_connection_the_server_dropped(project):
    """The writer keeps its connection between transactions; when the server dropped it (a
    restarted PostgreSQL), the next write checks out a fresh one and nothing fails."""
    if project.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: a server that drops connections")
    eng = make_engine(project)
    ids = [i["id"] for i in eng.batch("ann", 5)["items"]]
    eng.label("ann", ids[0], "cat")
    pid = project.db.execute_write_fn(
        lambda conn: conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    with project.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar_one()
    time.sleep(0.2)
    assert eng.label("ann", ids[1], "dog")["stats"]["labeled"] == 2
    assert sorted(project.dataset("labels").read()["label"]) == ["cat", "dog"]


def test_queue_positions_written_at_once_keep_their_values(project):
    """A slice of a queue is written in one statement on PostgreSQL (its columns as arrays)
    and row by row on SQLite, with the same outcome: ids with quotes, commas and braces kept;
    a position without its own row takes the item's row from the index, and one whose item
    is not indexed is left out; a position written again stays as it was."""
    from labeling import store
    from labeling.queue import Slice

    ids = ['a"b', "c,d", "{e}", "f\\g", "x'y", "missing"]
    with project.write_transaction() as conn:
        conn.execute(store._INSERT_ITEMS_SQL, [
            {"iset": 7, "item_id": i, "seq": k, "row": f'{{"n": {k}}}'}
            for k, i in enumerate(ids[:4])])
    part = Slice()
    part.add(0, ids[0], None)
    part.add(1, ids[4], '{"own": 1}', 0.25, "cat", 0.75, 1.0, "m1")
    part.add(2, ids[1], None, None, "dog")
    part.add(3, ids[5], None)
    part.add(4, ids[2], None, 0.5)
    part.add(5, ids[3], None)
    for _ in range(2):
        with project.write_transaction() as conn:
            store.insert_queue_positions(conn, 3, 7, part)
    with project.engine.connect() as conn:
        got = [tuple(r) for r in conn.execute(sa.text(
            "SELECT pos, item_id, state, uncertainty, prediction, confidence, halting, "
            "model_version, row FROM lb_queue WHERE qid = 3 ORDER BY pos"))]
    assert got == [
        (0, 'a"b', 0, None, None, None, None, None, '{"n": 0}'),
        (1, "x'y", 0, 0.25, "cat", 0.75, 1.0, "m1", '{"own": 1}'),
        (2, "c,d", 0, None, "dog", None, None, None, '{"n": 1}'),
        (4, "{e}", 0, 0.5, None, None, None, None, '{"n": 2}'),
        (5, "f\\g", 0, None, None, None, None, None, '{"n": 3}'),
    ]
