"""The hot statements find reservations and annotations by their keys, in a new project whose
tables the database has never analyzed: each probe reads at most one row, however many rows the
webapp has. On PostgreSQL from `EXPLAIN ANALYZE` (rows read per loop), on SQLite from
`EXPLAIN QUERY PLAN` (the index and the columns it is searched by)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from test_label_roundtrips import make_engine

from labeling import store
from labelloop.project import Project

ANNOTATORS = [f"u{i}" for i in range(8)]


@pytest.fixture
def busy(tmp_path):
    """8 annotators holding 6 items each, 3 of them with 4 answers: the rows a bad plan would
    read once per probe."""
    project = Project.init(tmp_path / "proj")
    project.dataset("pool", create=True).write(pd.DataFrame({"num": np.arange(200)}))
    engine = make_engine(project)
    for user in ANNOTATORS:
        items = engine.batch(user, 10)["items"]
        if user in ANNOTATORS[:3]:
            for item in items[:4]:
                engine.label(user, item["id"], "cat")
    with project.engine.connect() as conn:
        held = conn.execute(sa.text("SELECT count(*) FROM lb_reservations")).scalar_one()
        answered = conn.execute(sa.text("SELECT count(*) FROM lb_annotations")).scalar_one()
        qid = conn.execute(sa.text("SELECT queue_id FROM lb_apps WHERE id = :a"),
                           {"a": engine.app_id}).scalar_one()
        item = conn.execute(sa.text("SELECT item_id FROM lb_annotations WHERE annotator = 'u1' "
                                    "ORDER BY label_id LIMIT 1")).scalar_one()
    assert held >= 50 and answered == 12
    params = {"app": engine.app_id, "qid": qid, "user": "u1", "owner": "", "now": time.time(),
              "limit": 21, "cursor": 0, "item_id": item, "lo": 0, "hi": 200}
    return project, params


def _nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def rows_per_probe(conn: sa.Connection, sql: sa.TextClause, params: dict,
                   tables: tuple[str, ...] = ("lb_reservations", "lb_annotations")
                   ) -> dict[str, float]:
    """PostgreSQL: the most rows one scan of each of `tables` read (returned + filtered out)
    per loop, from the plan as run."""
    (doc,) = conn.execute(sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + str(sql)), params).one()
    doc = json.loads(doc) if isinstance(doc, str) else doc
    worst: dict[str, float] = {}
    for node in _nodes(doc[0]["Plan"]):
        table = node.get("Relation Name")
        loops = node.get("Actual Loops", 0)
        if table not in tables or not loops:
            continue
        read = node["Actual Rows"] + node.get("Rows Removed by Filter", 0) / loops
        worst[table] = max(worst.get(table, 0.0), read)
    return worst


def searches(conn: sa.Connection, sql: sa.TextClause, params: dict,
             names: tuple[str, ...]) -> list[str]:
    """SQLite: the plan's lines that read the table under one of `names` (itself or its
    alias in the statement)."""
    plan = conn.execute(sa.text("EXPLAIN QUERY PLAN " + str(sql)), params).all()
    return [row[3] for row in plan if row[3].split(" ")[:2][-1] in names]


# statement: (the table probed, its names in the statement)
KEYED = {
    "_SHARED_BATCH_SQL": ("lb_reservations", ("r",)),
    "_APP_AND_ANSWER_SQL": ("lb_annotations", ("an",)),
    "_UNRESERVE_SQL": ("lb_reservations", ("lb_reservations",)),
    "_UNRESERVE_MINE_SQL": ("lb_reservations", ("lb_reservations",)),
    "_OWN_BATCH_SQL": ("lb_annotations", ("a",)),
    "_MARK_DONE_SQL": ("lb_annotations", ("a",)),
}


@pytest.mark.parametrize("name", sorted(KEYED))
def test_each_probe_reads_one_row_without_statistics(busy, name):
    project, params = busy
    sql = getattr(store, name)
    with project.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            analyzed = conn.execute(sa.text(
                "SELECT relname FROM pg_stat_user_tables WHERE relname IN "
                "('lb_reservations', 'lb_annotations') AND (last_analyze IS NOT NULL OR "
                "last_autoanalyze IS NOT NULL)")).scalars().all()
            assert analyzed == [], "the case needs tables without statistics"
            worst = rows_per_probe(conn, sql, params)
            assert set(worst) == {KEYED[name][0]}, worst
            assert all(n <= 1 for n in worst.values()), (name, worst)
        else:
            lines = searches(conn, sql, params, KEYED[name][1])
            assert lines, name
            for line in lines:
                assert line.startswith("SEARCH") and "item_id=?" in line, (name, lines)
        conn.rollback()  # EXPLAIN ANALYZE of a DELETE or an UPDATE runs it


def test_the_overlap_batch_probes_reservations_and_annotations_by_their_keys(busy):
    """Overlap (k > 1): a candidate's own answer, its holders and its label count are each
    found by a key, not by reading the webapp's rows."""
    project, params = busy
    params = {**params, "k": 2}
    with project.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            worst = rows_per_probe(conn, store._OVERLAP_BATCH_SQL, params)
            assert set(worst) == {"lb_reservations", "lb_annotations"}, worst
            assert all(n <= 1 for n in worst.values()), worst
        else:
            lines = searches(conn, store._OVERLAP_BATCH_SQL, params, ("r", "a", "c"))
            assert len(lines) == 4, lines
            for line in lines:
                assert line.startswith("SEARCH") and "item_id=?" in line, lines


def test_the_retired_index_is_dropped_when_an_old_database_is_upgraded(tmp_path):
    project = Project.init(tmp_path / "proj")
    project.dataset("pool", create=True).write(pd.DataFrame({"num": np.arange(10)}))
    make_engine(project)
    with project.engine.begin() as conn:  # as lb0002 left it
        conn.execute(sa.text("DROP INDEX ix_lb_reservations_user"))
        conn.execute(sa.text("CREATE INDEX ix_lb_reservations_annotator "
                             "ON lb_reservations (app, annotator)"))
        conn.execute(sa.text("UPDATE alembic_version_ml_assisted_labeling "
                             "SET version_num = 'lb0002'"))
    reopened = Project.open(project.dir, database_url=project.database_url)
    assert ("ml-assisted-labeling", "lb0002", "lb0006") in reopened.upgrade_schema()
    engine = make_engine(reopened)
    with project.engine.connect() as conn:
        names = {i["name"]: i["column_names"]
                 for i in sa.inspect(conn).get_indexes("lb_reservations")}
    assert names == {"ix_lb_reservations_user": ["annotator", "app"]}
    assert engine.batch("u", 3)["items"]


def test_queue_positions_written_at_once_probe_the_item_index_by_key(tmp_path):
    """PostgreSQL writes a slice of the queue in one statement: each position without a row
    of its own reads its item's row by the index's key, on an item index never analyzed
    (a hash of the whole index was planned instead: 30-45 ms per 100 positions)."""
    project = Project.init(tmp_path / "proj")
    if project.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: the statement of arrays")
    with project.write_transaction() as conn:
        conn.execute(store._INSERT_ITEMS_SQL, [
            {"iset": 1, "item_id": str(k), "seq": k, "row": "{}"} for k in range(20_000)])
    ids = [str(k) for k in range(500, 600)]
    params = {"qid": 1, "iset": 1, "pos": list(range(100)), "item_id": ids,
              "unc": [None] * 100, "pred": [None] * 100, "conf": [None] * 100,
              "halt": [None] * 100, "ver": [None] * 100, "row": [None] * 100}
    with project.engine.connect() as conn:
        worst = rows_per_probe(conn, store._INSERT_QUEUE_ARRAYS_SQL, params, ("lb_items",))
        written = conn.execute(sa.text("SELECT count(*) FROM lb_queue")).scalar_one()
        conn.rollback()
    assert written == 100
    assert worst == {"lb_items": 1.0}, worst
