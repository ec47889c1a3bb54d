"""The labeling engine: the queue, reservations, labels, history, stats and sessions.

State lives in the project's database (no in-memory state a second server process would
need), in the engine's own tables (created at engine start):

- `lb_apps`: one row per webapp instance: its current item index and queue, the session key
  the queue was built for, what is being prepared (`prep`, for the page), and the builder
  lease (one builder at a time across processes; its owner's host and pid and a heartbeat,
  so a lease whose owner died is taken over at once).
- `lb_itemsets` / `lb_items`: the pool indexed by item id, with each item's row (JSON);
  built in the background, in small transactions, when the pool changes.
- `lb_queues` / `lb_queue`: the order of one session, materialized from its head on: `pos`,
  `item_id`, `state` (0 pending, 1 annotated: shared mode), the scores, the item's row.
  Only the positions annotators are about to reach are written (`filled`), a few thousand
  at a time (see `labeling.queue`), so a new order of a million items is served within a
  second. A batch is an indexed range query on `(qid, state, pos)`.
- `lb_reservations`: item -> annotator, expiry (epoch seconds).
- `lb_annotations`: one row per (item, owner) annotation; `label_id` is an AUTOINCREMENT
  key, so label ids grow and are never reused, across processes. `owner` is `""` with shared
  labels, the annotator with per-annotator labels. Keeps the rows it wrote in the labels and
  metadata datasets, so a change is an UPDATE of those rows.
- `lb_counts`: the stats counters, updated in the label's transaction.
- `lb_cursors`: per-annotator mode, the position before which an annotator has answered all.

Writes go through the project's single writer (`project.db.execute_write_fn`): the threads
of a server take turns instead of sleeping in SQLite's busy handler.

Sessions: the Query Sampler writes the queries dataset, then increments the project
variable `"<queries dataset name>_session"` (see `session_variable`). The engine compares
`(pool, queries dataset generation, session variable)` with the key its queue was built for
(at most every `check_interval` seconds). A new session's queue is prepared aside and
switched in with its head in one transaction: `config`, `batch` and `stats` answer for the
session of the queue they read, so they always agree.

Reservations: every item of a batch is reserved for `reservation_seconds`, renewed while
the annotator answers; an annotator holds at most `max_reserved` items; `release` ends the
caller's reservations at once (a page that is closed sends it).

Halting (`labeling.stopping`): the session's low/high thresholds are quantiles of its
uncertainties; an item's halting value is 0 at or under the low one (the model learns little
from it), 1 at or over the high one, linear in between.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from labelloop.errors import ConfigError, ConflictError, LabelloopError, NotFoundError
from labelloop.project import process_alive, write_transaction

from . import setaside
from .datatypes import BadItemId, DataType, data_type
from .queue import IndexNotReady, Ranking, RankingChanged, Slice
from .settings import EngineConfig

log = logging.getLogger(__name__)


def session_variable(queries_dataset: str) -> str:
    """The project variable counting Query Sampler runs for a queries dataset.

    The same name as `labeling.sampling.session_variable` gives (DESIGN's contract), without
    importing scikit-learn: a server's first batch should not wait for it.
    """
    return f"{queries_dataset}_session"


LABELED, SKIPPED = "LABELED", "SKIPPED"
LEASE_SECONDS = 15.0  # a builder's heartbeat: renewed at each step, taken over once stale
RETRY_SECONDS = 60.0  # a rebuild that failed is retried after this
HEAD = 2_000  # positions of a new order written before it is switched in
FILL = 2_000  # positions written at a time after that
AHEAD = 1_000  # keep this many positions written beyond the furthest served one
INDEX_CHUNK = 2_000  # pool items indexed per transaction
DROP_CHUNK = 5_000
MAX_BATCH = 500
MAX_COMMENT = 10_000
MAX_USER = 200
HOST = socket.gethostname()

metadata = sa.MetaData()

apps_table = sa.Table(
    "lb_apps", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("iset", sa.Integer),  # current item set
    sa.Column("n_items", sa.Integer),  # its size
    sa.Column("queue_id", sa.Integer),  # current queue
    sa.Column("session_key", sa.Text),  # what the current queue was built from
    sa.Column("builder", sa.String(64)),
    sa.Column("lease_until", sa.Float),  # the builder's heartbeat + LEASE_SECONDS
    sa.Column("build_error", sa.Text),
    sa.Column("builder_host", sa.String(255)),
    sa.Column("builder_pid", sa.Integer),
    sa.Column("prep", sa.JSON),  # what is being prepared: {"what", "done", "total"}
)
itemsets_table = sa.Table(
    "lb_itemsets", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("pool_key", sa.Text, nullable=False),
    sa.Column("n", sa.Integer, nullable=False, default=0),
    sa.Column("done", sa.Integer, nullable=False, default=0),  # pool rows read so far
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sqlite_autoincrement=True,
)
items_table = sa.Table(
    "lb_items", metadata,
    sa.Column("iset", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("row", sa.Text, nullable=False),
    sa.Index("ix_lb_items_seq", "iset", "seq"),
)
queues_table = sa.Table(
    "lb_queues", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("iset", sa.Integer, nullable=False),
    sa.Column("session_key", sa.Text, nullable=False),
    sa.Column("session", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False, default=0),  # positions of the order in all
    sa.Column("info", sa.JSON),
    sa.Column("filled", sa.Integer, nullable=False, default=0),  # positions written so far
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sqlite_autoincrement=True,
)
queue_table = sa.Table(
    "lb_queue", metadata,
    sa.Column("qid", sa.Integer, primary_key=True),
    sa.Column("pos", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("state", sa.Integer, nullable=False, default=0),
    sa.Column("uncertainty", sa.Float),
    sa.Column("prediction", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("halting", sa.Float),
    sa.Column("model_version", sa.Text),
    sa.Column("row", sa.Text),
    sa.Index("ix_lb_queue_pending", "qid", "state", "pos"),
    sa.Index("ux_lb_queue_item", "qid", "item_id", unique=True),
)
reservations_table = sa.Table(
    "lb_reservations", metadata,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("annotator", sa.String(MAX_USER), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
    sa.Index("ix_lb_reservations_annotator", "app", "annotator"),
)
annotations_table = sa.Table(
    "lb_annotations", metadata,
    sa.Column("label_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("owner", sa.String(MAX_USER), nullable=False),
    sa.Column("annotator", sa.String(MAX_USER), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("session", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("labels_row", sa.Integer),
    sa.Column("meta_row", sa.Integer),
    sa.UniqueConstraint("app", "owner", "item_id", name="uq_lb_annotations_item"),
    sa.Index("ix_lb_annotations_annotator", "app", "annotator", "label_id"),
    sqlite_autoincrement=True,  # never reuse a label id, even the highest after a delete
)
counts_table = sa.Table(
    "lb_counts", metadata,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(MAX_USER), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False, default=0),
)
cursors_table = sa.Table(
    "lb_cursors", metadata,
    sa.Column("qid", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(MAX_USER), primary_key=True),
    sa.Column("pos", sa.Integer, nullable=False),
)


def create_tables(engine: sa.Engine) -> None:
    """Create the engine's tables if missing (under the write lock: servers, the CLI and
    scenario runs may open a fresh database at the same moment); add columns and indexes
    that a database made by an earlier version lacks."""
    with write_transaction(engine) as conn:
        have = set(sa.inspect(conn).get_table_names())
        metadata.create_all(conn)
        setaside.create_tables(conn)
        for table in metadata.sorted_tables:
            if table.name not in have:
                continue
            cols = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
            for col in table.columns:
                if col.name not in cols:
                    kind = col.type.compile(dialect=conn.dialect)
                    quote = conn.dialect.identifier_preparer.quote
                    conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN "
                                         f"{quote(col.name)} {kind}")
            for index in table.indexes:
                index.create(conn, checkfirst=True)


class QueueNotReady(LabelloopError):
    """The queue is still being built for the first time."""

    status = 503


def _now() -> float:
    return time.time()


# ON CONFLICT ... DO UPDATE: SQLite >= 3.24 and PostgreSQL share this syntax.
_RESERVE_SQL = sa.text(
    "INSERT INTO lb_reservations (app, item_id, annotator, until) "
    "VALUES (:app, :item_id, :annotator, :until) ON CONFLICT (app, item_id) DO UPDATE SET "
    "annotator = excluded.annotator, until = excluded.until")
_RENEW_SQL = sa.text("UPDATE lb_reservations SET until = :until WHERE app = :app AND "
                     "annotator = :user AND until > :now")
_HELD_SQL = sa.text("SELECT count(*) FROM lb_reservations WHERE app = :app AND "
                    "annotator = :user AND until > :now")

_COUNT_SQL = sa.text(
    "INSERT INTO lb_counts (app, owner, key, n) VALUES (:app, :owner, :key, :n) "
    "ON CONFLICT (app, owner, key) DO UPDATE SET n = lb_counts.n + excluded.n")
_ITEM_COLS = ("q.pos, q.item_id, q.uncertainty, q.prediction, q.confidence, q.halting, "
              "q.model_version, q.row")
_SHARED_BATCH_SQL = sa.text(
    f"SELECT {_ITEM_COLS}, CASE WHEN r.annotator = :user AND r.until > :now THEN 1 ELSE 0 END "
    "AS mine FROM lb_queue q LEFT JOIN lb_reservations r ON r.app = :app "
    "AND r.item_id = q.item_id WHERE q.qid = :qid AND q.state = 0 "
    "AND (r.item_id IS NULL OR r.until <= :now OR r.annotator = :user) "
    "ORDER BY q.pos LIMIT :limit")
_OWN_BATCH_SQL = sa.text(
    f"SELECT {_ITEM_COLS}, 1 AS mine FROM lb_queue q "
    "WHERE q.qid = :qid AND q.pos >= :cursor AND NOT EXISTS (SELECT 1 FROM lb_annotations a "
    "WHERE a.app = :app AND a.owner = :user AND a.item_id = q.item_id) "
    "ORDER BY q.pos LIMIT :limit")
_PENDING_SQL = sa.text("SELECT 1 FROM lb_queue WHERE qid = :qid AND state = 0 LIMIT 1")
_INSERT_QUEUE_SQL = sa.text(
    "INSERT INTO lb_queue (qid, pos, item_id, state, uncertainty, prediction, confidence, "
    "halting, model_version, row) VALUES (:qid, :pos, :item_id, 0, :unc, :pred, :conf, :halt, "
    ":ver, :row) ON CONFLICT DO NOTHING")
# Typed parameters: PostgreSQL can't tell the type of a NULL in a SELECT list.
_INSERT_QUEUE_FROM_INDEX_SQL = sa.text(
    "INSERT INTO lb_queue (qid, pos, item_id, state, uncertainty, prediction, confidence, "
    "halting, model_version, row) SELECT CAST(:qid AS INTEGER), CAST(:pos AS INTEGER), "
    "i.item_id, 0, CAST(:unc AS DOUBLE PRECISION), CAST(:pred AS TEXT), "
    "CAST(:conf AS DOUBLE PRECISION), CAST(:halt AS DOUBLE PRECISION), CAST(:ver AS TEXT), "
    "i.row FROM lb_items i WHERE i.iset = :iset AND i.item_id = :item_id "
    "ON CONFLICT DO NOTHING")
_MARK_DONE_SQL = sa.text(
    "UPDATE lb_queue SET state = 1 WHERE qid = :qid AND pos >= :lo AND pos < :hi AND EXISTS "
    "(SELECT 1 FROM lb_annotations a WHERE a.app = :app AND a.owner = '' "
    "AND a.item_id = lb_queue.item_id)")
_INSERT_ITEMS_SQL = sa.text(
    "INSERT INTO lb_items (iset, item_id, seq, row) VALUES (:iset, :item_id, :seq, :row) "
    "ON CONFLICT DO NOTHING")


# The hot paths (label, batch) use prebuilt statements: building Core statements per call
# costs more than running them.
_APP_SQL = sa.text(
    "SELECT a.id, a.iset, a.n_items, a.queue_id, a.session_key, a.builder, a.lease_until, "
    "a.build_error, a.prep, q.session AS q_session, q.filled, q.complete, q.n AS q_n, "
    "q.info AS q_info, s.complete AS iset_complete, s.pool_key "
    "FROM lb_apps a LEFT JOIN lb_queues q ON q.id = a.queue_id "
    "LEFT JOIN lb_itemsets s ON s.id = a.iset WHERE a.id = :id").columns(
        prep=sa.JSON, q_info=sa.JSON)
_QUEUE_ROW_SQL = sa.text("SELECT row FROM lb_queue WHERE qid = :qid AND item_id = :item_id")
_ITEM_SQL = sa.text("SELECT row FROM lb_items WHERE iset = :iset AND item_id = :item_id")
_ANY_QUEUE_ROW_SQL = sa.text(
    "SELECT q.row FROM lb_queue q JOIN lb_queues s ON s.id = q.qid WHERE s.app = :app "
    "AND q.item_id = :item_id AND q.row IS NOT NULL LIMIT 1")
_OLD_SQL = sa.text("SELECT label_id, status, label, labels_row, meta_row FROM lb_annotations "
                   "WHERE app = :app AND owner = :owner AND item_id = :item_id")
_INSERT_ANNOTATION_SQL = sa.text(
    "INSERT INTO lb_annotations (app, item_id, owner, annotator, status, label, comment, "
    "session, created, updated) VALUES (:app, :item_id, :owner, :annotator, :status, :label, "
    ":comment, :session, :now, :now) RETURNING label_id")
_UPDATE_ANNOTATION_SQL = sa.text(
    "UPDATE lb_annotations SET annotator = :annotator, status = :status, label = :label, "
    "comment = :comment, session = :session, updated = :now, labels_row = :labels_row, "
    "meta_row = :meta_row WHERE label_id = :label_id")
_DONE_SQL = sa.text("UPDATE lb_queue SET state = 1 WHERE qid = :qid AND item_id = :item_id")
_UNRESERVE_SQL = sa.text("DELETE FROM lb_reservations WHERE app = :app AND item_id = :item_id")
_COUNTS_SQL = sa.text("SELECT key, n FROM lb_counts WHERE app = :app AND owner = :owner")


class _RowDataset:
    """A labels or metadata dataset written row by row through the host's public row API;
    created (empty, row storage) by the first answer that needs it."""

    def __init__(self, ds: Any, schema: list[dict], lid_col: str):
        self.ds = ds
        self.schema = schema
        self.lid_col = lid_col

    def _call(self, conn: sa.Connection, op: str, *args: Any, **kw: Any) -> Any:
        try:
            return getattr(self.ds, op)(conn, *args, ignore_extra=True, **kw)
        except NotFoundError:  # no data yet: this answer creates it
            empty = pd.DataFrame({c["name"]: pd.Series([], dtype=_DTYPES[c["type"]])
                                  for c in self.schema})
            self.ds.write(empty, conn=conn, storage="rows")
        except ConflictError:
            # Re-imported whole (column-wise): row-level answers need rows again. Converted
            # explicitly, once (a no-op when it has rows: then the retry raises again).
            log.info("dataset %s is stored column-wise: converting it to rows for answers",
                     self.ds.name)
            self.ds.to_rows(conn)
        return getattr(self.ds, op)(conn, *args, ignore_extra=True, **kw)

    def insert(self, conn: sa.Connection, values: dict, label_id: int) -> int:
        return int(self._call(conn, "insert", {**values, self.lid_col: label_id}))

    def update(self, conn: sa.Connection, row: int, label_id: int, values: dict) -> bool:
        """Update the row an annotation wrote; False if it is gone (dataset replaced)."""
        match = {self.lid_col: label_id}
        if self._call(conn, "update", row, values, match=match):
            return True
        # The dataset was rewritten (rows renumbered): find the row by its label id (a scan,
        # only after such a rewrite) rather than add a second row for this label.
        return bool(self._call(conn, "update", None, values, match=match))

    def delete(self, conn: sa.Connection, row: int, label_id: int) -> None:
        self._call(conn, "delete", row, match={self.lid_col: label_id})


class LabelingEngine:
    """The labeling engine of one webapp instance over a project's database."""

    def __init__(self, project: Any, cfg: EngineConfig, check_interval: float = 1.0,
                 background: bool = True, wait_seconds: float = 300.0):
        self.project = project
        self.cfg = cfg
        self.dtype: DataType = data_type(cfg, project)
        self.check_interval = check_interval
        self.background = background
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checked_at = 0.0
        self._failed: dict[str, float] = {}
        self._tables: dict[str, _RowDataset] = {}
        self._rankings: dict[str, Ranking] = {}
        self._fill_target: tuple[int, int] = (0, 0)  # (queue id, position to write up to)
        self._index_iter: tuple[int, Any] | None = None
        self._has_queue = False
        self._ranking_lock = threading.Lock()
        self._wake = threading.Event()
        self.engine = project.engine
        create_tables(self.engine)
        self.app_id = self._register()
        self._check_output_schemas()

    def _write(self, fn: Any, background: bool = False) -> Any:
        """Run `fn(conn)` in the project's single writer (see `labelloop.project.Database`)."""
        return self.project.db.execute_write_fn(fn, background=background)

    # ------------------------------------------------------------------ setup
    def _register(self) -> int:
        t = apps_table
        with self.project.write_transaction() as conn:
            row = conn.execute(sa.select(t.c.id).where(t.c.name == self.cfg.webapp)).first()
            if row is not None:
                return int(row[0])
            return int(conn.execute(sa.insert(t).values(name=self.cfg.webapp))
                       .inserted_primary_key[0])

    def _labels_schema(self) -> list[dict]:
        return self.dtype.item_schema() + [{"name": self.cfg.label_col, "type": "string"},
                                           {"name": self.cfg.label_id_col, "type": "bigint"}]

    def _metadata_schema(self) -> list[dict]:
        return [{"name": "date", "type": "date"}, {"name": "data_id", "type": "string"},
                {"name": "comment", "type": "string"}, {"name": "session", "type": "bigint"},
                {"name": "status", "type": "string"}, {"name": "annotator", "type": "string"},
                {"name": self.cfg.label_col, "type": "string"},
                {"name": self.cfg.label_id_col, "type": "bigint"}]

    def _check_output_schemas(self) -> None:
        for name in (self.cfg.labels_ds, self.cfg.metadata_ds):
            ds = self.project.dataset(name, create=True)
            if not ds.exists():
                continue
            missing = [c for c in (self.cfg.label_col, self.cfg.label_id_col)
                       if c not in ds.columns]
            if missing:
                raise ConfigError(
                    f"dataset {name!r} has no column {', '.join(map(repr, missing))} (it has "
                    f"{', '.join(ds.columns)}): choose an empty dataset or the label column "
                    "name it was written with")

    # ------------------------------------------------------------------ sessions
    def session(self, conn: sa.Connection | None = None) -> int:
        """The session of the queue being served (0 before the first Query Sampler run)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.session(c)
        return int(self._app(conn).q_session or 0)

    def _session_variable(self, conn: sa.Connection) -> int:
        if not self.cfg.queries_ds:
            return 0
        name = session_variable(self.cfg.queries_ds)
        value = self.project.variables.get(name, 0, conn=conn)
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    def _queries(self) -> Any | None:
        if not self.cfg.queries_ds:
            return None
        ds = self.project.dataset(self.cfg.queries_ds, create=True)
        return ds if ds.exists() else None

    def session_key(self) -> str:
        """What the queue must be built from now: pool + queries generation + session."""
        q = self._queries()
        if q is not None:
            with self.engine.connect() as conn:
                qpart = f"{q.name}:{q.generation()}:{self._session_variable(conn)}"
        else:
            qpart = "-"
        return f"{self.dtype.pool_key()}|{qpart}"

    @staticmethod
    def _key_session(key: str) -> int:
        return int(key.rsplit(":", 1)[-1]) if not key.endswith("|-") else 0

    def _app(self, conn: sa.Connection) -> sa.Row:
        return conn.execute(_APP_SQL, {"id": self.app_id}).first()

    def _read_app(self) -> sa.Row:
        with self.engine.connect() as conn:
            return self._app(conn)

    def refresh(self, wait: bool = False) -> None:
        """Follow a new session; the first queue is prepared now, later ones aside."""
        now = _now()
        if not wait and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        key = self.session_key()
        app = self._read_app()
        if app.queue_id is not None and app.session_key == key:
            if self._has_work(app):
                self._start_worker(key)
            return
        if app.queue_id is not None and self.background and not wait:
            self._start_worker(key)
            return
        self._switch_now(key)
        if self.background:
            self._start_worker(key)

    def _has_work(self, app: sa.Row) -> bool:
        if not self.background:
            return False
        if not app.iset_complete:
            return True
        target = self._fill_target
        return not app.complete and target[0] == app.queue_id and target[1] > (app.filled or 0)

    def _start_worker(self, key: str) -> None:
        with self._lock:
            failed = self._failed.get(key)
            if failed is not None and _now() - failed < RETRY_SECONDS:
                return  # the same inputs failed a moment ago: don't rebuild in a loop
            self._wake.set()  # a running worker looks again before it ends
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._work, args=(key,),
                                            name=f"labeling-queue-{self.cfg.webapp}", daemon=True)
            self._thread.start()

    def _work(self, key: str) -> None:
        """The background worker: switch to a new session, write ahead, index the pool."""
        token = uuid.uuid4().hex
        leased, renewed = False, 0.0
        try:
            while True:
                self._wake.clear()
                if not leased or _now() - renewed > LEASE_SECONDS / 5:
                    leased, renewed = self._take_lease(token), _now()
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
            self._failed[key] = _now()
            log.exception("preparing the queue of %s failed", self.cfg.webapp)
            self._set_error(str(exc) if isinstance(exc, LabelloopError) else
                            f"preparing the queue failed ({type(exc).__name__}); see the log")
        finally:
            if leased:
                self._drop_lease(token)
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _work_step(self, token: str, leased: bool) -> bool:
        """One step of the worker's work; False when there is nothing (it may do) left."""
        key = self.session_key()
        app = self._read_app()
        if app.queue_id is None or app.session_key != key:
            if not leased:
                return False  # another process prepares it; served from the old order
            self._switch(key, token)
            return True
        if self._fill_step(app, background=True):
            return True
        return leased and self._index_step(app, token)

    def _switch_now(self, key: str) -> None:
        """Prepare and switch in the queue of `key` in this thread (the first queue)."""
        token = uuid.uuid4().hex
        deadline = _now() + self.wait_seconds
        while True:
            if self._take_lease(token):
                try:
                    self._switch(key, token)
                except LabelloopError as exc:
                    self._set_error(str(exc))
                    raise
                finally:
                    self._drop_lease(token)
                return
            app = self._read_app()
            if app.queue_id is not None and (app.session_key == key or self.background):
                return  # someone else switched, or prepares the new order: serve the current
            if _now() > deadline:
                raise QueueNotReady(f"the queue of {self.cfg.webapp!r} is still being built; "
                                    "retry in a few seconds")
            time.sleep(0.02)

    def _set_error(self, message: str) -> None:
        t = apps_table
        self._write(lambda conn: conn.execute(sa.update(t).where(t.c.id == self.app_id).values(
            build_error=message, prep=None)))

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for the background worker of this engine to end (tests, benchmarks)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ the lease
    def _take_lease(self, token: str) -> bool:
        """Take or renew the builder lease; a lease whose owner is gone is taken over at once."""
        t = apps_table

        def take(conn: sa.Connection) -> bool:
            row = conn.execute(sa.select(t.c.builder, t.c.lease_until, t.c.builder_host,
                                         t.c.builder_pid).where(t.c.id == self.app_id)).first()
            now = _now()
            if row.builder and row.builder != token and (row.lease_until or 0) > now \
                    and process_alive(row.builder_host, row.builder_pid):
                return False
            if row.builder and row.builder != token:
                log.info("taking over the queue lease of %s from %s (pid %s on %s)",
                         self.cfg.webapp, row.builder, row.builder_pid, row.builder_host)
            conn.execute(sa.update(t).where(t.c.id == self.app_id).values(
                builder=token, lease_until=now + LEASE_SECONDS, builder_host=HOST,
                builder_pid=os.getpid()))
            return True

        return self._write(take)

    def _drop_lease(self, token: str) -> None:
        t = apps_table
        self._write(lambda conn: conn.execute(
            sa.update(t).where(t.c.id == self.app_id, t.c.builder == token).values(
                builder=None, lease_until=None, builder_host=None, builder_pid=None)))

    # ------------------------------------------------------------------ switching
    def _ranking(self, key: str) -> Ranking:
        """The order of `key` (cached; any process can rebuild it from the datasets)."""
        ranking = self._rankings.get(key)
        if ranking is not None:
            return ranking
        with self._ranking_lock:  # one thread reads the datasets, the others wait for it
            ranking = self._rankings.get(key)
            if ranking is not None:
                return ranking
            return self._new_ranking(key)

    def _new_ranking(self, key: str) -> Ranking:
        queries = self._queries() if not key.endswith("|-") else None
        pool_key = key.split("|", 1)[0]
        ranking = Ranking(self.dtype, queries, self.cfg.seed,
                          lambda: self._index_ids(pool_key))
        ranking.prepare()
        if queries is not None and ranking._generation is not None and \
                str(ranking._generation) != key.rsplit("|", 1)[1].rsplit(":", 2)[1]:
            raise RankingChanged("the queries were replaced meanwhile")
        self._rankings = {k: v for k, v in self._rankings.items() if k == self._served_key()}
        self._rankings[key] = ranking
        return ranking

    def _served_key(self) -> str | None:
        return self._read_app().session_key

    def _set_prep(self, what: str | None, done: int = 0, total: int = 0) -> None:
        t = apps_table
        prep = None if what is None else {"what": what, "done": int(done), "total": int(total)}
        self._write(lambda conn: conn.execute(
            sa.update(t).where(t.c.id == self.app_id).values(prep=prep)), background=True)

    def _switch(self, key: str, token: str) -> None:
        """Prepare the head of the order of `key` and switch it in, in one transaction."""
        app = self._read_app()
        if app.queue_id is not None and app.session_key == key:
            return
        session = self._key_session(key)
        if app.queue_id is not None:
            self._set_prep(f"the order of session {session}", 0, HEAD)
        pool_key = key.split("|", 1)[0]
        iset = self._ensure_iset(pool_key)
        try:
            ranking = self._ranking(key)
        except RankingChanged:
            return  # the queries changed again meanwhile: the next check prepares the newest
        if not self.background or ranking.needs_index:
            self._build_index(iset, token)
        ready = self._iset_complete(iset)
        stop = HEAD if ready or not ranking.n_scored else min(HEAD, ranking.n_scored)
        try:
            head = ranking.slice(0, stop)
        except RankingChanged:
            return
        info = dict(ranking.info)
        versions = {v for v in head.model_version[:1] if v}
        if versions:
            info["model_version"] = versions.pop()
        n_items = self._iset_size(iset) if ready else ranking.n_pool

        def swap(conn: sa.Connection) -> int | None:
            now_app = self._app(conn)
            if now_app.queue_id is not None and now_app.session_key == key:
                return None  # another process switched to it meanwhile
            qid = int(conn.execute(sa.insert(queues_table).values(
                app=self.app_id, iset=iset, session_key=key, session=session, created=_now(),
                n=ranking.length, info=info, filled=0, complete=False)).inserted_primary_key[0])
            self._insert_slice(conn, qid, iset, head, 0, stop, ranking.length)
            # Until the pool is indexed (in the background), the page says so.
            prep = None if ready else {"what": "indexing the pool", "done": 0,
                                       "total": int(n_items)}
            conn.execute(sa.update(apps_table).where(apps_table.c.id == self.app_id).values(
                queue_id=qid, iset=iset, n_items=n_items, session_key=key, build_error=None,
                prep=prep))
            return now_app.queue_id

        old = self._write(swap)
        self._fill_target = (0, 0)
        if old is not None and ready:
            self._drop_queue(old)

    def _insert_slice(self, conn: sa.Connection, qid: int, iset: int, part: Slice, start: int,
                      stop: int, length: int) -> None:
        """Write positions `[start, stop)` of queue `qid` (their rows in `part`)."""
        own, indexed = [], []
        for rec in part.records(qid):
            args = {"qid": qid, "pos": rec[1], "item_id": rec[2], "unc": rec[3], "pred": rec[4],
                    "conf": rec[5], "halt": rec[6], "ver": rec[7], "row": rec[8]}
            (own if rec[8] is not None else indexed).append(args)
        if own:
            conn.execute(_INSERT_QUEUE_SQL, own)
        if indexed:
            conn.execute(_INSERT_QUEUE_FROM_INDEX_SQL, [{**a, "iset": iset} for a in indexed])
        if not self.cfg.per_annotator:
            conn.execute(_MARK_DONE_SQL, {"qid": qid, "lo": start, "hi": stop,
                                          "app": self.app_id})
        conn.execute(sa.update(queues_table).where(queues_table.c.id == qid).values(
            filled=stop, complete=stop >= length))

    def _fill(self, app: sa.Row, stop: int, background: bool) -> bool:
        """Write the queue's next positions up to `stop`; False if nothing could be written."""
        start = int(app.filled or 0)
        try:
            ranking = self._ranking(app.session_key)
        except RankingChanged:
            return False
        if not app.iset_complete and ranking.n_scored:
            stop = min(stop, ranking.n_scored)  # the rest of the pool follows once indexed
        stop = min(stop, ranking.length)
        if stop <= start:
            return False
        try:
            part = ranking.slice(start, stop)
        except (RankingChanged, IndexNotReady):
            return False
        qid = app.queue_id

        def fill(conn: sa.Connection) -> bool:
            row = conn.execute(sa.select(queues_table.c.filled).where(
                queues_table.c.id == qid)).first()
            if row is None or row.filled != start:
                return False  # another thread or process wrote these positions
            self._insert_slice(conn, qid, app.iset, part, start, stop, ranking.length)
            return True

        self._write(fill, background=background)
        return True

    def _fill_step(self, app: sa.Row, background: bool) -> bool:
        qid, target = self._fill_target
        if app.complete or qid != app.queue_id or target <= (app.filled or 0):
            return False
        return self._fill(app, min(target, (app.filled or 0) + FILL), background)

    def _drop_queue(self, queue_id: int) -> None:
        # Deleted in slices so annotators never wait long for the writer.
        q = queue_table
        while True:
            def drop(conn: sa.Connection) -> bool:
                first = conn.execute(sa.select(q.c.pos).where(q.c.qid == queue_id)
                                     .order_by(q.c.pos).limit(1)).first()
                if first is None:
                    conn.execute(sa.delete(queues_table).where(queues_table.c.id == queue_id))
                    conn.execute(sa.delete(cursors_table).where(cursors_table.c.qid == queue_id))
                    return False
                last = conn.execute(sa.select(q.c.pos).where(q.c.qid == queue_id)
                                    .order_by(q.c.pos).offset(DROP_CHUNK).limit(1)).first()
                cond = [q.c.qid == queue_id]
                if last is not None:
                    cond.append(q.c.pos < last.pos)
                conn.execute(sa.delete(q).where(*cond))
                return True

            if not self._write(drop, background=True):
                return

    # ------------------------------------------------------------------ the item index
    def _ensure_iset(self, pool_key: str) -> int:
        t = itemsets_table

        def ensure(conn: sa.Connection) -> int:
            row = conn.execute(sa.select(t.c.id).where(t.c.app == self.app_id,
                                                       t.c.pool_key == pool_key)
                               .order_by(t.c.id.desc()).limit(1)).first()
            if row is not None:
                return int(row.id)
            return int(conn.execute(sa.insert(t).values(
                app=self.app_id, pool_key=pool_key, n=0, done=0, complete=False)
            ).inserted_primary_key[0])

        return self._write(ensure)

    def _iset_complete(self, iset: int) -> bool:
        t = itemsets_table
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.select(t.c.complete).where(t.c.id == iset)).scalar())

    def _iset_size(self, iset: int) -> int:
        t = itemsets_table
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(t.c.n).where(t.c.id == iset)).scalar() or 0)

    def _index_ids(self, pool_key: str) -> list[str] | None:
        """The pool's ids in pool order once its index is complete (else None)."""
        t, it = itemsets_table, items_table
        with self.engine.connect() as conn:
            iset = conn.execute(sa.select(t.c.id).where(
                t.c.app == self.app_id, t.c.pool_key == pool_key, t.c.complete.is_(True))
                .order_by(t.c.id.desc()).limit(1)).scalar()
            if iset is None:
                return None
            return list(conn.execute(sa.select(it.c.item_id).where(it.c.iset == iset)
                                     .order_by(it.c.seq)).scalars())

    def _build_index(self, iset: int, token: str) -> None:
        while self._index_chunk(iset, token):
            pass

    def _index_step(self, app: sa.Row, token: str) -> bool:
        if app.iset is None or app.iset_complete:
            return False
        return self._index_chunk(app.iset, token)

    def _index_chunk(self, iset: int, token: str) -> bool:
        """Index the pool's next items (`INDEX_CHUNK` per transaction); False once complete."""
        t = itemsets_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.done, t.c.complete, t.c.pool_key).where(
                t.c.id == iset)).first()
        if row is None or row.complete:
            return False
        done = int(row.done)
        if self._index_iter is None or self._index_iter[0] != iset or \
                self._index_iter[1][0] != done:
            self._index_iter = (iset, [done, self._pool_pieces(done)])
        state = self._index_iter[1]
        piece = next(state[1], None)
        total = self._pool_total()

        def write(conn: sa.Connection) -> bool:
            now = conn.execute(sa.select(t.c.done).where(t.c.id == iset)).scalar()
            if now != done:
                return True  # another builder got here first: look again
            if piece is None:
                n = conn.execute(sa.select(sa.func.count()).select_from(items_table)
                                 .where(items_table.c.iset == iset)).scalar_one()
                conn.execute(sa.update(t).where(t.c.id == iset).values(n=int(n), complete=True))
                conn.execute(sa.update(apps_table).where(
                    apps_table.c.id == self.app_id, apps_table.c.iset == iset).values(
                    n_items=int(n), prep=None))
                return False
            ids, rows, n_read = piece
            if ids:
                conn.execute(_INSERT_ITEMS_SQL, [
                    {"iset": iset, "item_id": i, "seq": done + k, "row": r}
                    for k, (i, r) in enumerate(zip(ids, rows, strict=True))])
            conn.execute(sa.update(t).where(t.c.id == iset).values(done=done + n_read))
            conn.execute(sa.update(apps_table).where(apps_table.c.id == self.app_id).values(
                lease_until=_now() + LEASE_SECONDS,
                prep={"what": "indexing the pool", "done": done + n_read, "total": total}))
            return True

        more = self._write(write, background=True)
        if piece is not None:
            state[0] = done + piece[2]
        if not more:
            self._index_iter = None
            self._after_index(iset)
        return more

    def _pool_total(self) -> int:
        app = self._read_app()
        return int(app.n_items or 0)

    def _pool_pieces(self, skip: int) -> Any:
        """The pool's (ids, rows) in pieces of `INDEX_CHUNK`, after the first `skip` rows.

        Why pieces this small even when reading: turning rows into JSON holds the GIL for the
        whole call, and annotators' requests in other threads wait for it meanwhile.
        """
        if self.dtype.from_folder:
            pieces = self.dtype.iter_items()
        else:
            schema = self.dtype.item_schema()
            chunks = self.dtype._pool().iter_chunks(chunksize=INDEX_CHUNK,
                                                    columns=[c["name"] for c in schema])
            pieces = (self.dtype._ids_and_lines(chunk, schema) for chunk in chunks)
        seen = 0
        for ids, rows in pieces:
            if seen + len(ids) <= skip:
                seen += len(ids)
                continue
            lo = max(0, skip - seen)
            seen += len(ids)
            for k in range(lo, len(ids), INDEX_CHUNK):
                keep = [(i, r) for i, r in zip(ids[k:k + INDEX_CHUNK], rows[k:k + INDEX_CHUNK],
                                               strict=True) if i is not None]
                yield [i for i, _r in keep], [r for _i, r in keep], min(INDEX_CHUNK, len(ids) - k)

    def _after_index(self, iset: int) -> None:
        """The index is complete: older queues and item sets are no longer needed."""
        app = self._read_app()
        with self.engine.connect() as conn:
            queues = conn.execute(sa.select(queues_table.c.id).where(
                queues_table.c.app == self.app_id, queues_table.c.id != app.queue_id)
            ).scalars().all()
            isets = conn.execute(sa.select(itemsets_table.c.id).where(
                itemsets_table.c.app == self.app_id, itemsets_table.c.id != iset)
            ).scalars().all()
        for qid in queues:
            self._drop_queue(qid)
        it = items_table
        for old in isets:
            while True:
                def drop(conn: sa.Connection, old: int = old) -> bool:
                    last = conn.execute(sa.select(it.c.seq).where(it.c.iset == old)
                                        .order_by(it.c.seq).offset(DROP_CHUNK).limit(1)).first()
                    cond = [it.c.iset == old]
                    if last is not None:
                        cond.append(it.c.seq < last.seq)
                    conn.execute(sa.delete(it).where(*cond))
                    if last is None:
                        conn.execute(sa.delete(itemsets_table).where(itemsets_table.c.id == old))
                    return last is not None

                if not self._write(drop, background=True):
                    break
        if self.engine.dialect.name == "sqlite":
            # A build writes a large WAL; fold it into the database now, in this background
            # thread, so the next annotator's commit doesn't pay for it. PASSIVE blocks nobody.
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    # ------------------------------------------------------------------ checking input
    def _user(self, user: Any) -> str:
        user = "anonymous" if user in (None, "") else user
        if not isinstance(user, str) or len(user) > MAX_USER:
            raise LabelloopError(f"annotator name must be a string of at most {MAX_USER} "
                                 "characters")
        return user

    def _owner(self, user: str) -> str:
        return user if self.cfg.per_annotator else ""

    def check_label(self, label: Any) -> str:
        """The label as stored (a category, or a JSON list of categories when multi-label)."""
        cats = self.cfg.categories
        if self.cfg.multi_label:
            if isinstance(label, str):
                label = [label]
            if not isinstance(label, list) or not all(isinstance(x, str) for x in label):
                raise LabelloopError(f"label must be a list of categories, got {label!r}")
            bad = [x for x in label if x not in cats]
            if bad:
                raise LabelloopError(f"unknown categor{'y' if len(bad) == 1 else 'ies'} "
                                     f"{', '.join(map(repr, bad))}: use "
                                     f"{', '.join(map(repr, cats))}")
            chosen = set(label)
            return json.dumps([c for c in cats if c in chosen])
        if isinstance(label, list):
            raise LabelloopError(f"this webapp takes one category per item, got a list "
                                 f"{label!r}: send one of {', '.join(map(repr, cats))}")
        if not isinstance(label, str) or label not in cats:
            raise LabelloopError(f"label {label!r} is not a category: use one of "
                                 f"{', '.join(map(repr, cats))}")
        return label

    def _label_value(self, stored: str | None) -> Any:
        if stored is None:
            return None
        return json.loads(stored) if self.cfg.multi_label else stored

    def _label_keys(self, status: str, stored: str | None) -> list[str]:
        if status == SKIPPED:
            return ["skipped"]
        keys = ["labeled"]
        if stored is not None:
            values = json.loads(stored) if self.cfg.multi_label else [stored]
            keys += [f"label:{v}" for v in values]
        return keys

    # ------------------------------------------------------------------ datasets
    def _dataset_table(self, conn: sa.Connection, name: str, schema: list[dict]
                       ) -> _RowDataset:
        table = self._tables.get(name)
        if table is None:
            table = _RowDataset(self.project.dataset(name, create=True), schema,
                                self.cfg.label_id_col)
            self._tables[name] = table
        return table

    # ------------------------------------------------------------------ actions
    def label(self, user: Any, item_id: Any, label: Any, comment: Any = None) -> dict:
        """Record (or change) the caller's label of an item: `{"label_id", "stats"}`."""
        stored = self.check_label(label)
        return self._annotate(user, item_id, LABELED, stored, comment)

    def skip(self, user: Any, item_id: Any, comment: Any = None) -> dict:
        """Record that the caller skipped an item: `{"label_id", "stats"}`."""
        return self._annotate(user, item_id, SKIPPED, None, comment)

    def _item_row(self, conn: sa.Connection, app: sa.Row, item_id: str) -> str | None:
        """An item's row: from the queue being served, the item index, or an older queue."""
        row = None
        if app.queue_id is not None:
            row = conn.execute(_QUEUE_ROW_SQL, {"qid": app.queue_id, "item_id": item_id}).first()
        if (row is None or row[0] is None) and app.iset is not None:
            row = conn.execute(_ITEM_SQL, {"iset": app.iset, "item_id": item_id}).first()
        if row is None and not app.iset_complete:
            row = conn.execute(_ANY_QUEUE_ROW_SQL, {"app": self.app_id,
                                                    "item_id": item_id}).first()
            if row is None:
                raise IndexNotReady(f"item {item_id!r} is not among the items served so far "
                                    "and the pool is still being indexed: retry in a few "
                                    "seconds")
        return None if row is None else row[0]

    def _annotate(self, user: Any, item_id: Any, status: str, stored: str | None,
                  comment: Any) -> dict:
        user = self._user(user)
        item_id = self.dtype.check_id(item_id)
        if comment is not None and not isinstance(comment, str):
            raise LabelloopError(f"comment must be a string, got {comment!r}")
        if comment is not None and len(comment) > MAX_COMMENT:
            raise LabelloopError(f"comment is longer than {MAX_COMMENT} characters: shorten it")
        comment = comment or None
        owner = self._owner(user)
        self._ensure_queue()
        now = _now()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        label_col = self.cfg.label_col
        ttl = self.cfg.reservation_seconds

        def write(conn: sa.Connection) -> dict:
            app = self._app(conn)
            session = int(app.q_session or 0)
            row = self._item_row(conn, app, item_id)
            if row is None:
                raise NotFoundError(f"no item {item_id!r} in {self.cfg.unlabeled!r}: use an id "
                                    "from a batch")
            key = {"app": self.app_id, "owner": owner, "item_id": item_id}
            old = conn.execute(_OLD_SQL, key).first()
            lt = self._dataset_table(conn, self.cfg.labels_ds, self._labels_schema())
            mt = self._dataset_table(conn, self.cfg.metadata_ds, self._metadata_schema())
            if old is not None and not self.cfg.per_annotator:
                old = self._answered_by_another(conn, old, user, lt)
            meta = {"date": when, "data_id": item_id, "comment": comment, "session": session,
                    "status": status, "annotator": user, label_col: stored}
            values = {**key, "annotator": user, "status": status, "label": stored,
                      "comment": comment, "session": session, "now": now}
            deltas: dict[str, int] = {}
            if old is None:
                label_id = int(conn.execute(_INSERT_ANNOTATION_SQL, values).scalar_one())
                labels_row = None
                if status == LABELED:
                    labels_row = lt.insert(conn, {**self.dtype.labels_row(json.loads(row)),
                                                  label_col: stored}, label_id)
                meta_row = mt.insert(conn, meta, label_id)
                if not self.cfg.per_annotator and app.queue_id is not None:
                    conn.execute(_DONE_SQL, {"qid": app.queue_id, "item_id": item_id})
            else:
                label_id = int(old.label_id)
                labels_row = old.labels_row
                if status == LABELED and labels_row is not None:
                    if not lt.update(conn, labels_row, label_id, {label_col: stored}):
                        labels_row = None
                if status == LABELED and labels_row is None:
                    labels_row = lt.insert(conn, {**self.dtype.labels_row(json.loads(row)),
                                                  label_col: stored}, label_id)
                if status == SKIPPED and labels_row is not None:
                    lt.delete(conn, labels_row, label_id)
                    labels_row = None
                meta_row = old.meta_row
                if meta_row is None or not mt.update(conn, meta_row, label_id, meta):
                    meta_row = mt.insert(conn, meta, label_id)
                for k in self._label_keys(old.status, old.label):
                    deltas[k] = deltas.get(k, 0) - 1
            for k in self._label_keys(status, stored):
                deltas[k] = deltas.get(k, 0) + 1
            conn.execute(_UPDATE_ANNOTATION_SQL, {**values, "label_id": label_id,
                                                  "labels_row": labels_row, "meta_row": meta_row})
            params = [{"app": self.app_id, "owner": owner, "key": k, "n": n}
                      for k, n in deltas.items() if n]
            if params:
                conn.execute(_COUNT_SQL, params)
            if not self.cfg.per_annotator:
                conn.execute(_UNRESERVE_SQL, {"app": self.app_id, "item_id": item_id})
                # An annotator who answers is still there: what they hold stays theirs.
                conn.execute(_RENEW_SQL, {"app": self.app_id, "user": user, "now": now,
                                          "until": now + ttl})
            from .interop.events import emit_annotation  # outgoing webhooks, same transaction

            emit_annotation(self, conn, old is None, label_id, item_id, user, status, stored,
                            comment, row)
            return {"label_id": label_id, "stats": self._stats(conn, app, owner)}

        return self._write(write)

    def release(self, user: Any, item_ids: Any) -> dict:
        """End the caller's reservations of `item_ids` now: `{"released", "stats"}`."""
        user = self._user(user)
        if not isinstance(item_ids, list) or len(item_ids) > MAX_BATCH:
            raise LabelloopError(f"ids must be a list of at most {MAX_BATCH} item ids, got "
                                 f"{type(item_ids).__name__}")
        ids = [self.dtype.check_id(i) for i in item_ids]

        r = reservations_table

        def write(conn: sa.Connection) -> int:
            if not ids:
                return 0
            return conn.execute(sa.delete(r).where(r.c.app == self.app_id, r.c.annotator == user,
                                                   r.c.item_id.in_(ids))).rowcount

        released = self._write(write) if not self.cfg.per_annotator else 0
        return {"released": max(int(released or 0), 0)}

    def _answered_by_another(self, conn: sa.Connection, old: Any, user: str,
                             lt: _RowDataset) -> Any:
        """Shared mode: an item someone else answered is theirs (409), unless the webapp allows
        relabeling: then their annotation stays in the history and the caller's becomes a new
        one (the earlier label row is removed, its metadata row kept). Returns what `old`
        becomes (None: record a new annotation)."""
        an = annotations_table
        prev = conn.execute(sa.select(an.c.annotator, an.c.updated)
                            .where(an.c.label_id == old.label_id)).first()
        if prev is None or prev.annotator == user:
            return old  # the caller's own answer: they may always change it
        when = dt.datetime.fromtimestamp(prev.updated, dt.UTC).isoformat(timespec="seconds")
        if not self.cfg.allow_relabel:
            exc = ConflictError(f"item already answered by {prev.annotator} at {when}: take "
                                "the next item (the webapp does not allow relabeling answers "
                                "of others)")
            exc.details = {"answered_by": prev.annotator, "answered_at": when}
            raise exc
        conn.execute(sa.update(an).where(an.c.label_id == old.label_id)
                     .values(owner=f"~{old.label_id}", labels_row=None))
        if old.labels_row is not None:
            lt.delete(conn, old.labels_row, old.label_id)
        deltas = [{"app": self.app_id, "owner": "", "key": k, "n": -1}
                  for k in self._label_keys(old.status, old.label)]
        conn.execute(_COUNT_SQL, deltas)
        return None

    def _ensure_queue(self) -> None:
        """Follow a new session; prepare the first queue now (a second at most)."""
        self.refresh()
        if not self._has_queue:
            if self._read_app().queue_id is None:
                self.refresh(wait=True)
            self._has_queue = True  # a queue, once there, is only ever switched for another

    @property
    def max_reserved(self) -> int:
        """How many items one annotator may hold at once (and the largest batch)."""
        return int(getattr(self.cfg, "max_reserved", None) or 50)

    # ------------------------------------------------------------------ reading
    def batch(self, user: Any, size: int = 20) -> dict:
        """The next items for the caller, reserved for them: DESIGN's batch answer."""
        user = self._user(user)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH:
            raise LabelloopError(f"size must be an integer from 1 to {MAX_BATCH}, got {size!r}")
        cap = self.max_reserved
        if size > cap:
            raise LabelloopError(f"size {size} is above this webapp's cap: an annotator holds "
                                 f"at most {cap} items at once; ask for {cap} or fewer")
        self._ensure_queue()
        owner = self._owner(user)
        for _attempt in range(3):
            out, app, top = self._write(lambda conn: self._take_batch(conn, user, owner, size))
            short = len(out["rows"]) <= size and not app.complete
            if not short:
                break
            # Fewer items written than asked for: write the next positions now (rare: a
            # background worker keeps writing ahead of the furthest item served).
            if not self._fill(app, (app.filled or 0) + max(FILL, size + 1), background=False):
                break
        if app.queue_id is not None and not app.complete:
            target = max(top + AHEAD, self._fill_target[1] if self._fill_target[0] ==
                         app.queue_id else 0)
            self._fill_target = (app.queue_id, target)
            if self.background and target > (app.filled or 0):
                self._start_worker(app.session_key)
        rows = out["rows"]
        items = [self._item(r) for r in rows[:size] if r.pos in out["served"]]
        return {"items": items, "stats": out["stats"], "session": int(app.q_session or 0),
                "is_last_batch": len(rows) <= size and not out["capped"],
                "done": not out["pending"], "preparing": self._preparing(app)}

    def _take_batch(self, conn: sa.Connection, user: str, owner: str, size: int) -> tuple:
        """Select and reserve the caller's next items (in the writer: never served twice)."""
        now = _now()
        app = self._app(conn)
        capped = False
        if self.cfg.per_annotator:
            cur = conn.execute(sa.select(cursors_table.c.pos).where(
                cursors_table.c.qid == app.queue_id, cursors_table.c.owner == user)).first()
            cursor = cur[0] if cur else 0
            rows = setaside.screened(self, conn, app.queue_id, size, lambda n: conn.execute(
                _OWN_BATCH_SQL, {"qid": app.queue_id, "cursor": cursor, "app": self.app_id,
                                 "user": user, "limit": n}).all())
            if rows and rows[0].pos > cursor:  # all before it are answered: skip them next time
                if cur is None:
                    conn.execute(sa.insert(cursors_table).values(
                        qid=app.queue_id, owner=user, pos=rows[0].pos))
                else:
                    conn.execute(sa.update(cursors_table).where(
                        cursors_table.c.qid == app.queue_id,
                        cursors_table.c.owner == user).values(pos=rows[0].pos))
            served = {r.pos for r in rows[:size]}
            pending = bool(rows) or not app.complete
        else:
            rows = setaside.screened(self, conn, app.queue_id, size, lambda n: conn.execute(
                _SHARED_BATCH_SQL, {"app": self.app_id, "qid": app.queue_id, "now": now,
                                    "user": user, "limit": n}).all())
            held = conn.execute(_HELD_SQL, {"app": self.app_id, "user": user,
                                            "now": now}).scalar_one()
            room = max(0, self.max_reserved - int(held))
            served = set()
            for r in rows[:size]:
                if r.mine:
                    served.add(r.pos)
                elif room > 0:
                    served.add(r.pos)
                    room -= 1
                else:
                    capped = True
            until = now + self.cfg.reservation_seconds  # one length for every item
            if served:
                conn.execute(_RESERVE_SQL, [
                    {"app": self.app_id, "item_id": r.item_id, "annotator": user,
                     "until": until} for r in rows[:size] if r.pos in served])
            pending = bool(rows) or not app.complete
            if not rows and app.complete:
                pending = conn.execute(_PENDING_SQL, {"qid": app.queue_id}).first() is not None
        stats = self._stats(conn, app, owner)
        top = max((r.pos for r in rows), default=int(app.filled or 0))
        return {"rows": rows, "served": served, "stats": stats, "pending": pending,
                "capped": capped}, app, top

    def _item(self, r: sa.Row) -> dict:
        cats = self.cfg.categories
        suggestion = None
        if r.prediction is not None and r.prediction in cats:
            suggestion = {"label": r.prediction, "confidence": r.confidence}
            if r.model_version is not None:
                suggestion["model_version"] = r.model_version
        return {"id": r.item_id, "data": self.dtype.render(r.item_id, json.loads(r.row)),
                "suggestion": suggestion, "halting": r.halting, "uncertainty": r.uncertainty}

    def annotations(self, user: Any, before: int | None = None, limit: int = 50) -> dict:
        """The caller's annotations, newest first (`before` a label id), with item data."""
        user = self._user(user)
        if not isinstance(limit, int) or not 1 <= limit <= MAX_BATCH:
            raise LabelloopError(f"limit must be an integer from 1 to {MAX_BATCH}")
        an, it = annotations_table, items_table
        with self.engine.connect() as conn:
            app = self._app(conn)
            q = (sa.select(an.c.label_id, an.c.item_id, an.c.status, an.c.label, an.c.comment,
                           an.c.session, an.c.created, an.c.updated, it.c.row)
                 .select_from(an.outerjoin(it, sa.and_(it.c.iset == app.iset,
                                                       it.c.item_id == an.c.item_id)))
                 .where(an.c.app == self.app_id, an.c.annotator == user)
                 .order_by(an.c.label_id.desc()).limit(limit))
            if before is not None:
                q = q.where(an.c.label_id < before)
            rows = conn.execute(q).all()
            found = {}
            for r in rows:
                if r.row is None and not app.iset_complete:  # not indexed yet: a queue has it
                    got = conn.execute(_ANY_QUEUE_ROW_SQL, {"app": self.app_id,
                                                            "item_id": r.item_id}).first()
                    if got is not None:
                        found[r.item_id] = got[0]
        out = []
        for r in rows:
            row = r.row if r.row is not None else found.get(r.item_id)
            out.append({
                "label_id": r.label_id, "id": r.item_id, "status": r.status,
                "label": self._label_value(r.label), "comment": r.comment, "session": r.session,
                "date": dt.datetime.fromtimestamp(r.updated, dt.UTC).isoformat(),
                "data": None if row is None else self.dtype.render(r.item_id, json.loads(row)),
            })
        return {"annotations": out, "next_before": out[-1]["label_id"] if out else None}

    def stats(self, user: Any = None) -> dict:
        """`{"labeled", "skipped", "total", "remaining", "per_label", "session"}`."""
        user = self._user(user)
        self._ensure_queue()
        with self.engine.connect() as conn:
            return self._stats(conn, self._app(conn), self._owner(user))

    def _stats(self, conn: sa.Connection, app: sa.Row, owner: str) -> dict:
        counts = dict(conn.execute(_COUNTS_SQL, {"app": self.app_id, "owner": owner}).all())
        total = app.n_items or 0
        labeled, skipped = counts.get("labeled", 0), counts.get("skipped", 0)
        aside = setaside.summary(self, conn) if self.cfg.from_folder else {}
        return {"labeled": labeled, "skipped": skipped, "total": int(total),
                "remaining": max(0, int(total) - labeled - skipped - aside.get("set_aside", 0)),
                "per_label": {k: counts.get(f"label:{k}", 0) for k in self.cfg.categories},
                "session": int(app.q_session or 0), **aside}

    def _preparing(self, app: sa.Row) -> dict | None:
        return dict(app.prep) if app.prep else None

    def queue_info(self) -> dict:
        """The current queue's build info (scored items, halting thresholds, warnings)."""
        app = self._read_app()
        if app.queue_id is None:
            return {"ready": False, "build_error": app.build_error,
                    "preparing": self._preparing(app)}
        info = dict(app.q_info or {})
        info.update(ready=True, session=int(app.q_session or 0), n=app.q_n or 0,
                    build_error=app.build_error, preparing=self._preparing(app))
        return info

    def config(self) -> dict:
        """What the page needs to know: DESIGN's config answer (cheap: poll it every second)."""
        self._ensure_queue()
        info = self.queue_info()
        warnings = [w for w in (info.get("warning"), info.get("build_error")) if w]
        if self.cfg.from_folder:
            with self.engine.connect() as conn:
                warnings += setaside.summary(self, conn)["warnings"]
        return {
            "webapp": self.cfg.webapp, "data_type": self.cfg.data_type,
            "categories": [{"name": k, "description": v} for k, v in self.cfg.categories.items()],
            "multi_label": self.cfg.multi_label, "per_annotator": self.cfg.per_annotator,
            "label_column": self.cfg.label_col,
            "reservation_seconds": self.cfg.reservation_seconds,
            "max_reserved": self.max_reserved,
            "al_enabled": bool(info.get("scored")), "session": info.get("session", 0),
            "queue_session": info.get("session", 0), "model_version": info.get("model_version"),
            "halting": {"low": info.get("low"), "high": info.get("high")},
            "warnings": warnings, "preparing": info.get("preparing"),
        }


_DTYPES = {"string": object, "bigint": "int64", "double": "float64", "boolean": bool,
           "date": "datetime64[ns, UTC]"}


__all__: Sequence[str] = ("LabelingEngine", "QueueNotReady", "BadItemId", "create_tables",
                          "session_variable", "metadata")
