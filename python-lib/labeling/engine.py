"""The labeling engine: the queue, reservations, labels, history, stats and sessions.

State lives in the project's database (no in-memory state a second server process would
need), in the engine's own tables (created at engine start):

- `lb_apps`: one row per webapp instance: its current item set and queue, the session key
  they were built for, and the builder lease (one builder at a time, across processes).
- `lb_itemsets` / `lb_items`: the pool indexed by item id, with each item's row (JSON);
  rebuilt when the pool changes (dataset generation, folder listing).
- `lb_queues` / `lb_queue`: the queue order of one session: `pos`, `item_id`, `state`
  (0 pending, 1 annotated: shared mode), `uncertainty`, `prediction`, `confidence`,
  `halting`. Rebuilt when the session changes, then swapped in one transaction; the old
  order is served meanwhile. A batch is an indexed range query on `(qid, state, pos)`.
- `lb_reservations`: item -> annotator, expiry (epoch seconds).
- `lb_annotations`: one row per (item, owner) annotation; `label_id` is an AUTOINCREMENT
  key, so label ids grow and are never reused, across processes. `owner` is `""` with shared
  labels, the annotator with per-annotator labels. Keeps the rows it wrote in the labels and
  metadata datasets, so a change is an UPDATE of those rows.
- `lb_counts`: the stats counters, updated in the label's transaction.
- `lb_cursors`: per-annotator mode, the position before which an annotator has answered all.

Sessions: the Query Sampler writes the queries dataset, then increments the project
variable `"<queries dataset name>_session"` (see `session_variable`). The engine compares
`(pool, queries dataset generation, session variable)` with the key its queue was built for
(at most every `check_interval` seconds) and rebuilds in a background thread when it changed.

Queue order: the items of the queries dataset, most uncertain first (ties by id), then the
rest of the pool in a seeded random order; without queries, the whole pool in that random
order. Items already annotated (by anyone with shared labels) are left out.

Halting (`labeling.stopping`): the session's low/high thresholds are quantiles of its
uncertainties; an item's halting value is 0 at or under the low one (the model learns little
from it), 1 at or over the high one, linear in between. Computed once per session at build.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from labelloop.errors import ConfigError, LabelloopError, NotFoundError
from labelloop.project import write_transaction

from .datatypes import BadItemId, DataType, data_type
from .sampling import session_variable
from .settings import EngineConfig
from .stopping import halting_thresholds, halting_values

log = logging.getLogger(__name__)

LABELED, SKIPPED = "LABELED", "SKIPPED"
LEASE_SECONDS = 120.0  # a builder that dies frees the build after this
RETRY_SECONDS = 60.0  # a rebuild that failed is retried after this
INSERT_CHUNK = 50_000
MAX_BATCH = 500
MAX_COMMENT = 10_000
MAX_USER = 200

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
    sa.Column("lease_until", sa.Float),
    sa.Column("build_error", sa.Text),
)
itemsets_table = sa.Table(
    "lb_itemsets", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("pool_key", sa.Text, nullable=False),
    sa.Column("n", sa.Integer, nullable=False, default=0),
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
    sa.Column("n", sa.Integer, nullable=False, default=0),
    sa.Column("info", sa.JSON),
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
    sa.Index("ix_lb_queue_pending", "qid", "state", "pos"),
    sa.Index("ix_lb_queue_item", "qid", "item_id"),
)
reservations_table = sa.Table(
    "lb_reservations", metadata,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("annotator", sa.String(MAX_USER), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
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
    scenario runs may open a fresh database at the same moment)."""
    with write_transaction(engine) as conn:
        metadata.create_all(conn)


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
_COUNT_SQL = sa.text(
    "INSERT INTO lb_counts (app, owner, key, n) VALUES (:app, :owner, :key, :n) "
    "ON CONFLICT (app, owner, key) DO UPDATE SET n = lb_counts.n + excluded.n")
_SHARED_BATCH_SQL = sa.text(
    "SELECT q.pos, q.item_id, q.uncertainty, q.prediction, q.confidence, q.halting, i.row "
    "FROM lb_queue q JOIN lb_items i ON i.iset = :iset AND i.item_id = q.item_id "
    "LEFT JOIN lb_reservations r ON r.app = :app AND r.item_id = q.item_id "
    "WHERE q.qid = :qid AND q.state = 0 "
    "AND (r.item_id IS NULL OR r.until <= :now OR r.annotator = :user) "
    "ORDER BY q.pos LIMIT :limit")
_OWN_BATCH_SQL = sa.text(
    "SELECT q.pos, q.item_id, q.uncertainty, q.prediction, q.confidence, q.halting, i.row "
    "FROM lb_queue q JOIN lb_items i ON i.iset = :iset AND i.item_id = q.item_id "
    "WHERE q.qid = :qid AND q.pos >= :cursor AND NOT EXISTS (SELECT 1 FROM lb_annotations a "
    "WHERE a.app = :app AND a.owner = :user AND a.item_id = q.item_id) "
    "ORDER BY q.pos LIMIT :limit")


# The hot paths (label, batch) use prebuilt statements: building Core statements per call
# costs more than running them.
_APP_SQL = sa.text("SELECT * FROM lb_apps WHERE id = :id")
_VARIABLE_SQL = sa.text("SELECT value FROM ll_variables WHERE name = :name").columns(
    value=sa.JSON)
_DATASET_SQL = sa.text("SELECT table_name, storage FROM ll_datasets WHERE name = :name")
_ITEM_SQL = sa.text("SELECT row FROM lb_items WHERE iset = :iset AND item_id = :item_id")
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


class _RowTable:
    """Prebuilt insert / update / delete statements of a row-stored dataset's table."""

    def __init__(self, table: sa.Table, lid_col: str, dialect: Any):
        quote = dialect.identifier_preparer.quote
        self.name = table.name
        self.table = table
        self.params = {c.name: f"p{i}" for i, c in enumerate(table.columns) if c.name != "_row"}
        self.has_lid = lid_col in self.params
        self.lid_col = lid_col
        types = [sa.bindparam(p, type_=table.c[n].type) for n, p in self.params.items()]
        names = ", ".join(quote(n) for n in self.params)
        binds = ", ".join(f":{p}" for p in self.params.values())
        tname = quote(table.name)
        self._insert = sa.text(f"INSERT INTO {tname} ({names}) VALUES ({binds}) "
                               "RETURNING _row").bindparams(*types)
        self._types = {p: t for p, t in zip(self.params.values(), types, strict=True)}
        self._quote = quote
        self._updates: dict[tuple[str, ...], sa.TextClause] = {}
        where = f"_row = :row AND {quote(lid_col)} = :lid" if self.has_lid else "1 = 0"
        self._where = where
        self._delete = sa.text(f"DELETE FROM {tname} WHERE {where}")

    def insert(self, conn: sa.Connection, values: dict, label_id: int) -> int:
        values = {**values, self.lid_col: label_id}
        return int(conn.execute(self._insert, {p: values.get(n) for n, p in self.params.items()}
                                ).scalar_one())

    def update(self, conn: sa.Connection, row: int, label_id: int, values: dict) -> bool:
        """Update the row an annotation wrote; False if it is gone (dataset replaced)."""
        cols = tuple(n for n in values if n in self.params and n != self.lid_col)
        stmt = self._updates.get(cols)
        if stmt is None:
            sets = ", ".join(f"{self._quote(n)} = :{self.params[n]}" for n in cols)
            stmt = sa.text(f"UPDATE {self._quote(self.name)} SET {sets} WHERE {self._where}"
                           ).bindparams(*[self._types[self.params[n]] for n in cols])
            self._updates[cols] = stmt
        args = {self.params[n]: values[n] for n in cols}
        if conn.execute(stmt, {**args, "row": row, "lid": label_id}).rowcount:
            return True
        if not self.has_lid:
            return False
        # The dataset was rewritten (rows renumbered): find the row by its label id (a scan,
        # only after such a rewrite) rather than add a second row for this label.
        by_lid = self._updates.get(("lid",) + cols)
        if by_lid is None:
            sets = ", ".join(f"{self._quote(n)} = :{self.params[n]}" for n in cols)
            by_lid = sa.text(f"UPDATE {self._quote(self.name)} SET {sets} WHERE "
                             f"{self._quote(self.lid_col)} = :lid"
                             ).bindparams(*[self._types[self.params[n]] for n in cols])
            self._updates[("lid",) + cols] = by_lid
        return bool(conn.execute(by_lid, {**args, "lid": label_id}).rowcount)

    def delete(self, conn: sa.Connection, row: int, label_id: int) -> None:
        conn.execute(self._delete, {"row": row, "lid": label_id})


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
        self._ready = False
        self._failed: dict[str, float] = {}
        self._tables: dict[str, _RowTable] = {}
        self.engine = project.engine
        create_tables(self.engine)
        self.app_id = self._register()
        self._check_output_schemas()

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
        """The current queries session number (0 before the first Query Sampler run)."""
        if not self.cfg.queries_ds:
            return 0
        if conn is None:
            with self.engine.connect() as c:
                return self.session(c)
        name = session_variable(self.cfg.queries_ds)
        row = conn.execute(_VARIABLE_SQL, {"name": name}).first()
        value = row[0] if row is not None else self.project.variables.initial.get(name, 0)
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
        qpart = f"{q.name}:{q.generation()}:{self.session()}" if q is not None else "-"
        return f"{self.dtype.pool_key()}|{qpart}"

    def _app(self, conn: sa.Connection) -> sa.Row:
        return conn.execute(_APP_SQL, {"id": self.app_id}).first()

    def refresh(self, wait: bool = False) -> None:
        """Rebuild the queue if the session changed (in the background if one is served)."""
        now = _now()
        if not wait and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        key = self.session_key()
        with self.engine.connect() as conn:
            app = self._app(conn)
        if app.queue_id is not None and app.session_key == key:
            return
        if app.queue_id is not None and self.background and not wait:
            self._start_background(key)
            return
        self._build_or_wait(key)

    def _start_background(self, key: str) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            failed = self._failed.get(key)
            if failed is not None and _now() - failed < RETRY_SECONDS:
                return  # the same inputs failed a moment ago: don't rebuild in a loop
            self._thread = threading.Thread(target=self._build_logged, args=(key,),
                                            name=f"labeling-build-{self.cfg.webapp}", daemon=True)
            self._thread.start()

    def _build_logged(self, key: str) -> None:
        try:
            self.build(key)
        except Exception:  # a failed rebuild must not stop labeling: the old queue is served
            self._failed[key] = _now()
            log.exception("rebuilding the queue of %s failed", self.cfg.webapp)

    def _build_or_wait(self, key: str) -> None:
        deadline = _now() + self.wait_seconds
        while True:
            if self.build(key):
                return
            with self.engine.connect() as conn:
                app = self._app(conn)
            if app.queue_id is not None and app.session_key == key:
                return
            if app.queue_id is not None and self.background:
                return  # someone else builds the new order; serve the current one
            if _now() > deadline:
                raise QueueNotReady(f"the queue of {self.cfg.webapp!r} is still being built; "
                                    "retry in a few seconds")
            time.sleep(0.2)

    # ------------------------------------------------------------------ building
    def _take_lease(self, token: str) -> bool:
        t = apps_table
        with self.project.write_transaction() as conn:
            app = self._app(conn)
            if app.builder and app.builder != token and (app.lease_until or 0) > _now():
                return False
            conn.execute(sa.update(t).where(t.c.id == self.app_id)
                         .values(builder=token, lease_until=_now() + LEASE_SECONDS))
        return True

    def _renew_lease(self, conn: sa.Connection, token: str) -> None:
        t = apps_table
        conn.execute(sa.update(t).where(t.c.id == self.app_id, t.c.builder == token)
                     .values(lease_until=_now() + LEASE_SECONDS))

    def build(self, key: str | None = None) -> bool:
        """Build the item index (if the pool changed) and the queue; False if another builds."""
        token = uuid.uuid4().hex
        if not self._take_lease(token):
            return False
        try:
            key = key or self.session_key()
            with self.engine.connect() as conn:
                app = self._app(conn)
            if app.queue_id is not None and app.session_key == key:
                return True
            pool_key = key.split("|", 1)[0]
            iset = self._current_iset(app, pool_key)
            if iset is None:
                iset = self._build_items(pool_key, token)
            self._build_queue(key, iset, app, token)
            self._checkpoint()
            return True
        except LabelloopError as exc:
            with self.project.write_transaction() as conn:
                conn.execute(sa.update(apps_table).where(apps_table.c.id == self.app_id)
                             .values(build_error=str(exc)))
            raise
        finally:
            with self.project.write_transaction() as conn:
                conn.execute(sa.update(apps_table).where(apps_table.c.id == self.app_id,
                                                         apps_table.c.builder == token)
                             .values(builder=None, lease_until=None))

    def _checkpoint(self) -> None:
        # A build writes a large WAL; fold it into the database now, in the builder's thread,
        # so the next annotator's commit doesn't pay for it. PASSIVE blocks nobody.
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _current_iset(self, app: sa.Row, pool_key: str) -> int | None:
        if app.iset is None:
            return None
        t = itemsets_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.pool_key).where(t.c.id == app.iset)).first()
        return app.iset if row is not None and row[0] == pool_key else None

    def _build_items(self, pool_key: str, token: str) -> int:
        with self.project.write_transaction() as conn:
            iset = int(conn.execute(sa.insert(itemsets_table).values(
                app=self.app_id, pool_key=pool_key, n=0)).inserted_primary_key[0])
        seq = 0
        sqlite = self.engine.dialect.name == "sqlite"
        for ids, rows in self.dtype.iter_items():
            for lo in range(0, len(ids), INSERT_CHUNK):
                part = [(iset, i, seq + k, r) for k, (i, r) in
                        enumerate(zip(ids[lo:lo + INSERT_CHUNK], rows[lo:lo + INSERT_CHUNK],
                                      strict=True))]
                seq += len(part)
                with self.project.write_transaction() as conn:
                    if sqlite:  # first occurrence of a duplicate id wins
                        conn.exec_driver_sql("INSERT OR IGNORE INTO lb_items (iset, item_id, seq, "
                                             "row) VALUES (?, ?, ?, ?)", part)
                    else:
                        from sqlalchemy.dialects.postgresql import insert as pg_insert

                        conn.execute(pg_insert(items_table).on_conflict_do_nothing(),
                                     [dict(iset=a, item_id=b, seq=c, row=d)
                                      for a, b, c, d in part])
                    self._renew_lease(conn, token)
        with self.project.write_transaction() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(items_table)
                             .where(items_table.c.iset == iset)).scalar_one()
            conn.execute(sa.update(itemsets_table).where(itemsets_table.c.id == iset)
                         .values(n=int(n)))
        return iset

    def _scores(self, item_ids: pd.Index) -> tuple[pd.DataFrame | None, str | None]:
        queries = self._queries()
        if queries is None or queries.count() == 0:
            return None, None
        try:
            frames = list(self.dtype.iter_scores(queries))
        except LabelloopError as exc:
            return None, str(exc)
        scores = pd.concat(frames, ignore_index=True) if frames else None
        if scores is None or scores.empty:
            return None, None
        scores = scores[scores["id"].notna()]
        scores = scores[scores["id"].isin(item_ids)]
        # Most uncertain first; ties (and duplicates) resolved by id for a stable order.
        scores = scores.sort_values("id", kind="mergesort")
        unc = scores["uncertainty"].fillna(-np.inf).to_numpy()
        scores = scores.iloc[np.argsort(-unc, kind="mergesort")]
        scores = scores.drop_duplicates("id", keep="first").reset_index(drop=True)
        return scores, None

    def _build_queue(self, key: str, iset: int, app: sa.Row, token: str) -> None:
        it = items_table
        an = annotations_table
        with self.engine.connect() as conn:
            ids = pd.Index(conn.execute(sa.select(it.c.item_id).where(it.c.iset == iset)
                                        .order_by(it.c.seq)).scalars().all(), dtype=object)
            snapshot = conn.execute(sa.select(sa.func.coalesce(sa.func.max(an.c.label_id), 0))
                                    .where(an.c.app == self.app_id)).scalar_one()
            done: set[str] = set()
            if not self.cfg.per_annotator:
                done = set(conn.execute(sa.select(an.c.item_id).where(
                    an.c.app == self.app_id, an.c.owner == "")).scalars())
        scores, warning = self._scores(ids)
        rng = np.random.default_rng(self.cfg.seed)
        if scores is not None and not scores.empty:
            rest = ids[~ids.isin(scores["id"])]
            rest = rest[rng.permutation(len(rest))]
            scored = scores["uncertainty"]
            thresholds = halting_thresholds(scored.to_numpy(dtype=float))
            halting = np.full(len(scores), np.nan)
            info: dict[str, Any] = {"scored": int(len(scores))}
            if thresholds is not None:
                unc = scored.to_numpy(dtype=float)
                halting = np.where(np.isfinite(unc), halting_values(unc, *thresholds), np.nan)
                info.update(low=thresholds[0], high=thresholds[1])
            order = pd.DataFrame({
                "item_id": np.concatenate([scores["id"].to_numpy(dtype=object),
                                           rest.to_numpy(dtype=object)]),
                "uncertainty": np.concatenate([scored.to_numpy(dtype=float),
                                               np.full(len(rest), np.nan)]),
                "prediction": list(scores["prediction"]) + [None] * len(rest),
                "confidence": np.concatenate([scores["confidence"].to_numpy(dtype=float),
                                              np.full(len(rest), np.nan)]),
                "halting": np.concatenate([halting, np.full(len(rest), np.nan)]),
            })
        else:
            perm = ids[rng.permutation(len(ids))]
            order = pd.DataFrame({"item_id": perm.to_numpy(dtype=object),
                                  "uncertainty": np.nan, "prediction": None,
                                  "confidence": np.nan, "halting": np.nan})
            info = {"scored": 0}
        if warning:
            info["warning"] = warning
        if done:
            order = order[~order["item_id"].isin(done)]
        session = int(key.rsplit(":", 1)[-1]) if not key.endswith("|-") else 0
        with self.project.write_transaction() as conn:
            qid = int(conn.execute(sa.insert(queues_table).values(
                app=self.app_id, iset=iset, session_key=key, session=session, created=_now(),
                n=len(order), info=info)).inserted_primary_key[0])
        self._insert_queue(qid, order, token)
        old_queue, old_iset = app.queue_id, app.iset
        with self.project.write_transaction() as conn:
            if not self.cfg.per_annotator:
                late = conn.execute(sa.select(an.c.item_id).where(
                    an.c.app == self.app_id, an.c.owner == "", an.c.label_id > snapshot)).scalars()
                for item_id in late:
                    conn.execute(sa.update(queue_table).where(
                        queue_table.c.qid == qid, queue_table.c.item_id == item_id).values(state=1))
            conn.execute(sa.update(apps_table).where(apps_table.c.id == self.app_id).values(
                queue_id=qid, iset=iset, n_items=len(ids), session_key=key, build_error=None))
        self._drop_old(old_queue, old_iset if old_iset != iset else None)

    def _insert_queue(self, qid: int, order: pd.DataFrame, token: str) -> None:
        def clean(values: np.ndarray) -> list:
            return [None if v != v else float(v) for v in values.tolist()]

        item_ids = order["item_id"].tolist()
        unc = clean(order["uncertainty"].to_numpy(dtype=float))
        conf = clean(order["confidence"].to_numpy(dtype=float))
        halt = clean(order["halting"].to_numpy(dtype=float))
        pred = order["prediction"].tolist()
        sqlite = self.engine.dialect.name == "sqlite"
        for lo in range(0, len(item_ids), INSERT_CHUNK):
            hi = lo + INSERT_CHUNK
            rows = list(zip([qid] * len(item_ids[lo:hi]), range(lo, lo + len(item_ids[lo:hi])),
                            item_ids[lo:hi], unc[lo:hi], pred[lo:hi], conf[lo:hi], halt[lo:hi],
                            strict=True))
            with self.project.write_transaction() as conn:
                if sqlite:
                    conn.exec_driver_sql(
                        "INSERT INTO lb_queue (qid, pos, item_id, state, uncertainty, prediction, "
                        "confidence, halting) VALUES (?, ?, ?, 0, ?, ?, ?, ?)", rows)
                else:
                    keys = ("qid", "pos", "item_id", "uncertainty", "prediction", "confidence",
                            "halting")
                    conn.execute(sa.insert(queue_table),
                                 [dict(zip(keys, r, strict=True), state=0) for r in rows])
                self._renew_lease(conn, token)

    def _drop_old(self, queue_id: int | None, iset: int | None) -> None:
        # Deleted in slices so annotators never wait long for the write lock.
        if queue_id is not None:
            q = queue_table
            n = 0
            while True:
                with self.project.write_transaction() as conn:
                    done = conn.execute(sa.delete(q).where(
                        q.c.qid == queue_id, q.c.pos >= n, q.c.pos < n + INSERT_CHUNK)).rowcount
                    left = conn.execute(sa.select(q.c.pos).where(q.c.qid == queue_id)
                                        .limit(1)).first()
                n += INSERT_CHUNK
                if left is None:
                    break
                del done
            with self.project.write_transaction() as conn:
                conn.execute(sa.delete(queues_table).where(queues_table.c.id == queue_id))
                conn.execute(sa.delete(cursors_table).where(cursors_table.c.qid == queue_id))
        if iset is not None:
            it = items_table
            n = 0
            while True:
                with self.project.write_transaction() as conn:
                    conn.execute(sa.delete(it).where(it.c.iset == iset, it.c.seq >= n,
                                                     it.c.seq < n + INSERT_CHUNK))
                    left = conn.execute(sa.select(it.c.seq).where(it.c.iset == iset)
                                        .limit(1)).first()
                n += INSERT_CHUNK
                if left is None:
                    break
            with self.project.write_transaction() as conn:
                conn.execute(sa.delete(itemsets_table).where(itemsets_table.c.id == iset))

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for a background rebuild of this engine to end (tests, benchmarks)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

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
                       ) -> _RowTable:
        # One indexed read tells whether the cached statements still fit the dataset's table.
        info = conn.execute(_DATASET_SQL, {"name": name}).first()
        cached = self._tables.get(name)
        if info is not None and info.storage == "rows" and cached is not None \
                and cached.name == info.table_name:
            return cached
        ds = self.project.dataset(name, create=True)
        if info is None:
            empty = pd.DataFrame({c["name"]: pd.Series([], dtype=_DTYPES[c["type"]])
                                  for c in schema})
            ds.write(empty, conn=conn, storage="rows")
        table = _RowTable(ds.table(conn), self.cfg.label_id_col, conn.dialect)
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
        self._ensure_items()
        now = _now()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        label_col = self.cfg.label_col
        with self.project.write_transaction() as conn:
            app = self._app(conn)
            session = self.session(conn)
            row = conn.execute(_ITEM_SQL, {"iset": app.iset, "item_id": item_id}).first()
            if row is None:
                raise NotFoundError(f"no item {item_id!r} in {self.cfg.unlabeled!r}: use an id "
                                    "from a batch")
            key = {"app": self.app_id, "owner": owner, "item_id": item_id}
            old = conn.execute(_OLD_SQL, key).first()
            lt = self._dataset_table(conn, self.cfg.labels_ds, self._labels_schema())
            mt = self._dataset_table(conn, self.cfg.metadata_ds, self._metadata_schema())
            meta = {"date": when, "data_id": item_id, "comment": comment, "session": session,
                    "status": status, "annotator": user, label_col: stored}
            values = {**key, "annotator": user, "status": status, "label": stored,
                      "comment": comment, "session": session, "now": now}
            deltas: dict[str, int] = {}
            if old is None:
                label_id = int(conn.execute(_INSERT_ANNOTATION_SQL, values).scalar_one())
                labels_row = None
                if status == LABELED:
                    labels_row = lt.insert(conn, {**self.dtype.labels_row(json.loads(row[0])),
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
                    labels_row = lt.insert(conn, {**self.dtype.labels_row(json.loads(row[0])),
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
            stats = self._stats(conn, app, owner, session)
            from .interop.events import emit_annotation  # outgoing webhooks, same transaction

            emit_annotation(self, conn, old is None, label_id, item_id, user, status, stored,
                            comment, row[0])
        return {"label_id": label_id, "stats": stats}

    def _ensure_queue(self) -> None:
        """Follow a new session; wait for the first queue only (later ones build meanwhile)."""
        self.refresh()
        if not self._ready:
            with self.engine.connect() as conn:
                if self._app(conn).queue_id is None:
                    self.refresh(wait=True)
            self._ready = True

    def _ensure_items(self) -> None:
        if self._ready:
            return
        with self.engine.connect() as conn:
            app = self._app(conn)
        if app.iset is None:
            self.refresh(wait=True)
        self._ready = True  # an item set, once there, is only ever swapped for another

    # ------------------------------------------------------------------ reading
    def batch(self, user: Any, size: int = 20) -> dict:
        """The next items for the caller, reserved for them: DESIGN's batch answer."""
        user = self._user(user)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_BATCH:
            raise LabelloopError(f"size must be an integer from 1 to {MAX_BATCH}, got {size!r}")
        self._ensure_queue()
        now = _now()
        owner = self._owner(user)
        with self.project.write_transaction() as conn:
            app = self._app(conn)
            session = self.session(conn)
            if self.cfg.per_annotator:
                cur = conn.execute(sa.select(cursors_table.c.pos).where(
                    cursors_table.c.qid == app.queue_id, cursors_table.c.owner == user)).first()
                cursor = cur[0] if cur else 0
                rows = conn.execute(_OWN_BATCH_SQL, {
                    "iset": app.iset, "qid": app.queue_id, "cursor": cursor, "app": self.app_id,
                    "user": user, "limit": size + 1}).all()
                if rows and rows[0].pos > cursor:  # all before it are answered: skip them next time
                    if cur is None:
                        conn.execute(sa.insert(cursors_table).values(
                            qid=app.queue_id, owner=user, pos=rows[0].pos))
                    else:
                        conn.execute(sa.update(cursors_table).where(
                            cursors_table.c.qid == app.queue_id,
                            cursors_table.c.owner == user).values(pos=rows[0].pos))
            else:
                rows = conn.execute(_SHARED_BATCH_SQL, {
                    "iset": app.iset, "app": self.app_id, "qid": app.queue_id, "now": now,
                    "user": user, "limit": size + 1}).all()
                served = rows[:size]
                ttl = self.cfg.reservation_seconds
                if served:
                    conn.execute(_RESERVE_SQL, [
                        {"app": self.app_id, "item_id": r.item_id, "annotator": user,
                         "until": now + ttl * (k + 1)} for k, r in enumerate(served)])
            stats = self._stats(conn, app, owner, session)
            pending = bool(rows)
            if not rows and not self.cfg.per_annotator:
                pending = conn.execute(sa.select(queue_table.c.pos).where(
                    queue_table.c.qid == app.queue_id, queue_table.c.state == 0)
                    .limit(1)).first() is not None
        items = [self._item(r) for r in rows[:size]]
        return {"items": items, "stats": stats, "is_last_batch": len(rows) <= size,
                "done": not pending}

    def _item(self, r: sa.Row) -> dict:
        cats = self.cfg.categories
        suggestion = None
        if r.prediction is not None and r.prediction in cats:
            suggestion = {"label": r.prediction, "confidence": r.confidence}
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
        out = []
        for r in rows:
            out.append({
                "label_id": r.label_id, "id": r.item_id, "status": r.status,
                "label": self._label_value(r.label), "comment": r.comment, "session": r.session,
                "date": dt.datetime.fromtimestamp(r.updated, dt.UTC).isoformat(),
                "data": None if r.row is None else self.dtype.render(r.item_id, json.loads(r.row)),
            })
        return {"annotations": out, "next_before": out[-1]["label_id"] if out else None}

    def stats(self, user: Any = None) -> dict:
        """`{"labeled", "skipped", "total", "remaining", "per_label", "session"}`."""
        user = self._user(user)
        self._ensure_items()
        with self.engine.connect() as conn:
            app = self._app(conn)
            session = self.session(conn)
            return self._stats(conn, app, self._owner(user), session)

    def _stats(self, conn: sa.Connection, app: sa.Row, owner: str, session: int) -> dict:
        counts = dict(conn.execute(_COUNTS_SQL, {"app": self.app_id, "owner": owner}).all())
        total = app.n_items or 0
        labeled, skipped = counts.get("labeled", 0), counts.get("skipped", 0)
        return {"labeled": labeled, "skipped": skipped, "total": int(total),
                "remaining": max(0, int(total) - labeled - skipped),
                "per_label": {k: counts.get(f"label:{k}", 0) for k in self.cfg.categories},
                "session": session}

    def queue_info(self) -> dict:
        """The current queue's build info (scored items, halting thresholds, warnings)."""
        with self.engine.connect() as conn:
            app = self._app(conn)
            if app.queue_id is None:
                return {"ready": False, "build_error": app.build_error}
            q = conn.execute(sa.select(queues_table).where(queues_table.c.id == app.queue_id)
                             ).first()
        info = dict(q.info or {}) if q is not None else {}
        info.update(ready=True, session=q.session if q is not None else 0,
                    n=q.n if q is not None else 0, build_error=app.build_error)
        return info

    def config(self) -> dict:
        """What the page needs to know: DESIGN's config answer."""
        self._ensure_queue()
        info = self.queue_info()
        warnings = [w for w in (info.get("warning"), info.get("build_error")) if w]
        return {
            "webapp": self.cfg.webapp, "data_type": self.cfg.data_type,
            "categories": [{"name": k, "description": v} for k, v in self.cfg.categories.items()],
            "multi_label": self.cfg.multi_label, "per_annotator": self.cfg.per_annotator,
            "label_column": self.cfg.label_col,
            "reservation_seconds": self.cfg.reservation_seconds,
            "al_enabled": bool(info.get("scored")), "session": self.session(),
            "queue_session": info.get("session"),
            "halting": {"low": info.get("low"), "high": info.get("high")},
            "warnings": warnings,
        }


_DTYPES = {"string": object, "bigint": "int64", "double": "float64", "boolean": bool,
           "date": "datetime64[ns, UTC]"}


__all__: Sequence[str] = ("LabelingEngine", "QueueNotReady", "BadItemId", "create_tables",
                          "session_variable", "metadata")
