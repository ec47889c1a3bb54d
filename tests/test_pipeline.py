"""`labelloop.project.pipeline`: statements whose results are not read, sent to PostgreSQL
together (psycopg's pipeline mode) and run one by one on SQLite, with the same outcome; and
`labelloop.project.run`, a statement run straight on the driver's connection."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa

from labelloop.project import Project, pipeline, run

INSERT = sa.text("INSERT INTO pipe_t (k, v) VALUES (:k, :v)")
COUNT = sa.text("SELECT count(*), sum(v) FROM pipe_t WHERE k >= :lo")


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj")
    with p.write_transaction() as conn:
        conn.execute(sa.text("CREATE TABLE pipe_t (k INTEGER PRIMARY KEY, v INTEGER)"))
    return p


def rows(project) -> list[tuple]:
    with project.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT k, v FROM pipe_t ORDER BY k"))]


def test_statements_take_effect_and_a_read_answers_after_the_block(project):
    with project.write_transaction() as conn:
        modes = []
        sa.event.listen(conn, "before_cursor_execute", lambda c, cur, stmt, *a: modes.append(
            bool(getattr(getattr(c.connection.driver_connection, "info", None),
                         "pipeline_status", 0))))
        with pipeline(conn) as sent:
            for k in range(3):
                conn.execute(INSERT, {"k": k, "v": 10 * k})
            conn.execute(sa.text("UPDATE pipe_t SET v = v + 1 WHERE k = 2"))
            total = sent.read(COUNT, {"lo": 1})
        assert total() == [(2, 31)]
        # After the block, statements are answered one by one again.
        assert conn.execute(COUNT, {"lo": 0}).one() == (3, 31)
    # On PostgreSQL the five statements went out in one pipeline; SQLite runs them one by one.
    if project.engine.dialect.name == "postgresql":
        assert modes == [True] * 5 + [False]
    else:
        assert modes == [False] * 6
    assert rows(project) == [(0, 0), (1, 10), (2, 21)]


def test_an_error_is_sqlalchemys_and_the_transaction_writes_nothing(project):
    with pytest.raises(sa.exc.IntegrityError):
        with project.write_transaction() as conn:
            with pipeline(conn):
                conn.execute(INSERT, {"k": 1, "v": 1})
                conn.execute(INSERT, {"k": 1, "v": 2})  # the same key: refused
                conn.execute(INSERT, {"k": 3, "v": 3})
    assert rows(project) == []
    with project.write_transaction() as conn:  # the connection is usable afterwards
        with pipeline(conn):
            conn.execute(INSERT, {"k": 1, "v": 1})
    assert rows(project) == [(1, 1)]


def run_grouped(db, jobs: list, first=None) -> dict:
    """Run `jobs` (name, fn) as the writer's next transaction, in this order: a write that
    ends with `first(conn)` holds the writer until they all wait. Their results (or
    exceptions) by name, the first's as "first"."""
    import threading

    gate, started = threading.Event(), threading.Event()
    out: dict = {}

    def call(name, fn):
        try:
            out[name] = db.execute_write_fn(fn)
        except Exception as exc:  # noqa: BLE001 - checked by the caller
            out[name] = exc

    def hold(conn):
        started.set()
        gate.wait(5)
        return first(conn) if first else "first"

    blocker = threading.Thread(target=call, args=("first", hold))
    blocker.start()
    assert started.wait(5), "the first write runs"
    threads = []
    for name, fn in jobs:  # queued behind the first, in order: they share the next transaction
        threads.append(threading.Thread(target=call, args=(name, fn)))
        threads[-1].start()
        deadline = time.monotonic() + 5
        while len(db._jobs[0]) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(db._jobs[0]) == len(jobs), "the writes wait for the writer"
    gate.set()
    for t in [blocker, *threads]:
        t.join(10)
    return out


def test_grouped_writes_keep_their_own_outcome(project):
    """The writer thread runs waiting writes in one transaction, each in a savepoint whose
    RELEASE is sent with the next one's SAVEPOINT: one that fails is undone alone."""

    def first(conn):
        conn.execute(INSERT, {"k": 1, "v": 1})
        return "first"

    def duplicate(conn):
        conn.execute(INSERT, {"k": 1, "v": 99})
        return "never"

    def last(conn):
        conn.execute(INSERT, {"k": 2, "v": 2})
        return conn.execute(COUNT, {"lo": 0}).one()

    out = run_grouped(project.db, [("duplicate", duplicate), ("last", last)], first)
    assert out["first"] == "first"
    assert isinstance(out["duplicate"], sa.exc.IntegrityError)
    assert tuple(out["last"]) == (2, 3)
    assert rows(project) == [(1, 1), (2, 2)]


def test_grouped_writes_that_send_nothing_and_the_connection_lent_back(project):
    """Writes of one transaction that send no statement (one fails, one returns) leave the
    others' outcome alone; once idle, the writer's connection goes back to the pool as it
    was lent: a write on it that is rolled back leaves nothing."""
    db = project.db
    db.IDLE = 0.05  # hand the connection back soon after the last write

    def refuses(conn):
        raise ValueError("refused before any statement")

    def nothing(conn):
        return "nothing"

    def writes(conn):
        conn.execute(INSERT, {"k": 7, "v": 70})
        return run(conn, COUNT, {"lo": 0}).one()

    out = run_grouped(db, [("refuses", refuses), ("nothing", nothing), ("writes", writes)])
    assert out["first"] == "first" and out["nothing"] == "nothing"
    assert isinstance(out["refuses"], ValueError)
    assert tuple(out["writes"]) == (1, 70)
    assert db.execute_write_fn(nothing) == "nothing"  # alone: a transaction that sent nothing
    time.sleep(0.5)  # idle: the writer's connection is back in the pool
    with project.engine.connect() as conn:
        conn.execute(INSERT, {"k": 8, "v": 80})
        conn.rollback()
    assert rows(project) == [(7, 70)]


def test_run_converts_typed_parameters_and_results_like_sqlalchemy(project):
    """`run` skips SQLAlchemy's result machinery, not its types: a date parameter is stored
    as `conn.execute` stores it (text on SQLite), JSON given with `.columns()` comes back
    decoded, and the columns are attributes of the rows."""
    when = dt.datetime(2026, 11, 26, 12, 30, tzinfo=dt.UTC)
    with project.write_transaction() as conn:
        conn.execute(sa.text("CREATE TABLE run_t (k INTEGER PRIMARY KEY, d TIMESTAMP, j JSON)"))
        typed = sa.text("INSERT INTO run_t (k, d, j) VALUES (:k, :d, :j) RETURNING k AS key"
                        ).bindparams(sa.bindparam("d", type_=sa.DateTime(timezone=True)))
        seen = []
        sa.event.listen(conn, "before_cursor_execute", lambda c, cur, stmt, *a: seen.append(
            stmt))
        got = run(conn, typed, {"k": 1, "d": when, "j": '{"a": [1, 2]}'})
        assert got.one().key == 1 and got.rowcount == 1
        conn.execute(typed, {"k": 2, "d": when, "j": None})  # SQLAlchemy's own way
        assert seen and all(s.startswith("INSERT INTO run_t") for s in seen)  # listeners see it
        stored = [tuple(r) for r in conn.execute(sa.text("SELECT d FROM run_t ORDER BY k"))]
        assert stored[0] == stored[1]  # the same stored value both ways
        query = sa.text("SELECT k, j FROM run_t ORDER BY k").columns(k=sa.Integer, j=sa.JSON)
        assert [(r.k, r.j) for r in run(conn, query).all()] == [(1, {"a": [1, 2]}), (2, None)]
        assert run(conn, sa.text("SELECT k FROM run_t WHERE k > :k"), {"k": 5}).first() is None
        changed = run(conn, sa.text("UPDATE run_t SET j = NULL WHERE k >= :k"), {"k": 1})
        assert changed.rowcount == 2


def test_run_raises_sqlalchemys_errors_and_refuses_what_it_cannot_send(project):
    with pytest.raises(sa.exc.IntegrityError):
        with project.write_transaction() as conn:
            run(conn, INSERT, {"k": 1, "v": 1})
            run(conn, INSERT, {"k": 1, "v": 2})
    assert rows(project) == []
    with project.write_transaction() as conn:
        with pytest.raises(sa.exc.ArgumentError, match="no value for the parameter 'v'"):
            run(conn, INSERT, {"k": 1})
        with pytest.raises(ValueError, match="expanding"):
            run(conn, sa.text("SELECT k FROM pipe_t WHERE k IN :ks").bindparams(
                sa.bindparam("ks", expanding=True)), {"ks": [1]})


def test_rows_inserted_in_one_block_get_their_keys_and_the_dataset_is_stamped_once(project):
    """`Dataset.inserter` outside the block, rows sent inside; `touch` inside a block: its
    answer (which table holds the rows) is read by the first row-level write."""
    import pandas as pd

    ds = project.dataset("rows", create=True)
    ds.write(pd.DataFrame({"a": [1]}), storage="rows")
    with project.write_transaction() as conn:
        conn.execute(sa.text("UPDATE ll_datasets SET updated = NULL WHERE name = 'rows'"))
    stamps = []
    with project.write_transaction() as conn:
        sa.event.listen(conn, "before_cursor_execute", lambda c, cur, stmt, *a: stamps.append(
            stmt) if stmt.startswith("UPDATE ll_datasets") else None)
        with pipeline(conn):
            ds.touch(conn)
            got = run(conn, COUNT, {"lo": 0})
        assert got.one() == (0, None)
        send = ds.inserter(conn)
        with pipeline(conn):
            keys = [send({"a": a}) for a in (2, 3)]
        keys = [k() for k in keys]
        assert len(set(keys)) == 2 and ds.insert(conn, {"a": 4}) not in keys
    assert len(stamps) == 1  # touched once: the three inserts did not stamp again
    assert sorted(ds.read()["a"]) == [1, 2, 3, 4]
    with project.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT updated FROM ll_datasets WHERE name = 'rows'")
                            ).scalar() is not None
