# ruff: noqa: F401  (names of the engine's parts are re-exported from here)
"""The labeling engine: the queue, reservations, labels, history, stats and sessions.

State lives in the project's database (see `labeling.store` for the tables): nothing a second
server process would need is only in memory.

Writes go through the project's single writer (`project.db.execute_write_fn`): the threads
of a server take turns instead of sleeping in SQLite's busy handler.

Reservations: every item of a batch is reserved for `reservation_seconds`, renewed while
the annotator answers; an annotator holds at most `max_reserved` items; `release` ends the
caller's reservations at once (a page that is closed sends it).

Halting (`labeling.stopping`): the session's low/high thresholds are quantiles of its
uncertainties; an item's halting value is 0 at or under the low one (the model learns little
from it), 1 at or over the high one, linear in between.

The engine is one class put together from its parts: `labeling.store` (tables, SQL, the row
writer), `labeling.sessions` (sessions, the background builder and its lease),
`labeling.build` (writing queues and the item index), `labeling.annotate` (checking input,
recording answers); this module serves batches and reads. The names of those modules stay
importable from here.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from labelloop.errors import ConfigError, LabelloopError
from labelloop.project import SystemClock, pipeline, run

from . import setaside
from .annotate import MAX_BATCH, MAX_COMMENT, Annotating
from .build import AHEAD, DROP_CHUNK, FILL, HEAD, INDEX_CHUNK, QueueBuilder
from .datatypes import BadItemId, DataType, data_type
from .queue import IndexNotReady, Ranking, RankingChanged, Slice
from .sessions import (
    LEASE_SECONDS,
    RETRY_SECONDS,
    QueueNotReady,
    Sessions,
    session_variable,
)
from .settings import EngineConfig
from .store import (
    _ANY_QUEUE_ROW_SQL,
    _APP_SQL,
    _COUNT_SQL,
    _COUNTS_SQL,
    _DONE_SQL,
    _DTYPES,
    _HELD_SQL,
    _INSERT_ANNOTATION_SQL,
    _INSERT_ITEMS_SQL,
    _INSERT_QUEUE_FROM_INDEX_SQL,
    _INSERT_QUEUE_SQL,
    _ITEM_COLS,
    _ITEM_SQL,
    _MARK_DONE_SQL,
    _OWN_BATCH_SQL,
    _PENDING_SQL,
    _RENEW_SQL,
    _SHARED_BATCH_SQL,
    _UNRESERVE_SQL,
    _UPDATE_ANNOTATION_SQL,
    LABELED,
    MAX_USER,
    SKIPPED,
    _RowDataset,
    annotations_table,
    apps_table,
    builder_leases_table,
    counts_table,
    cursors_table,
    items_table,
    itemsets_table,
    log,
    metadata,
    queue_table,
    queues_table,
    reservations_table,
    reserve_sql,
)


class LabelingEngine(Annotating, QueueBuilder, Sessions):
    """The labeling engine of one webapp instance over a project's database."""

    def __init__(self, project: Any, cfg: EngineConfig, check_interval: float = 1.0,
                 background: bool = True, wait_seconds: float = 300.0, clock: Any = None):
        self.project = project
        # Reservations, leases and answers are timed by `clock` (`labelloop.project`'s
        # SystemClock by default; tests pass a ManualClock and advance it).
        self.clock = clock if clock is not None else SystemClock()
        self.cfg = cfg
        self.dtype: DataType = data_type(cfg, project)
        self.check_interval = check_interval
        self.background = background
        self.wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._checked_at = 0.0
        self._failed: dict[str, float] = {}
        self._leases: dict[str, Any] = {}  # worker run token -> its builder Lease
        self._tables: dict[str, _RowDataset] = {}
        self._rankings: dict[str, Ranking] = {}
        self._fill_target: tuple[int, int] = (0, 0)  # (queue id, position to write up to)
        self._index_iter: tuple[int, Any] | None = None
        self._has_queue = False
        self._ranking_lock = threading.Lock()
        self._wake = threading.Event()
        self.engine = project.engine
        self.app_id = self._register()
        self._check_output_schemas()

    def _now(self) -> float:
        """Epoch seconds on the engine's clock."""
        return self.clock.time()

    def _write(self, fn: Any, background: bool = False) -> Any:
        """Run `fn(conn)` in the project's single writer (see `labelloop.project.Database`)."""
        return self.project.db.execute_write_fn(fn, background=background)

    # ------------------------------------------------------------------ setup
    def _register(self) -> int:
        t = apps_table

        def register(conn: sa.Connection) -> int:
            row = conn.execute(sa.select(t.c.id).where(t.c.name == self.cfg.webapp)).first()
            if row is not None:
                return int(row[0])
            return int(conn.execute(sa.insert(t).values(name=self.cfg.webapp))
                       .inserted_primary_key[0])

        return self._write(register)

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
        if app.queue_id is not None and not app.complete and \
                (app.filled or 0) - top < AHEAD:
            # Running low: top up a whole chunk beyond. Why not after every batch: the worker
            # then woke per batch to write a few positions (a lease, a step, a release), and
            # with 32 annotators took CPU from the label writes all the time.
            target = max(top + AHEAD + FILL, self._fill_target[1] if self._fill_target[0] ==
                         app.queue_id else 0)
            self._fill_target = (app.queue_id, target)
            if self.background:
                self._start_worker(app.session_key)
        rows = out["rows"]
        items = [self._item(r) for r in rows[:size] if r.pos in out["served"]]
        return {"items": items, "stats": out["stats"], "session": int(app.q_session or 0),
                "is_last_batch": len(rows) <= size and not out["capped"],
                "done": not out["pending"], "preparing": self._preparing(app)}

    def _take_batch(self, conn: sa.Connection, user: str, owner: str, size: int) -> tuple:
        """Select and reserve the caller's next items (in the writer: never served twice)."""
        now = self._now()
        app = self._app(conn)
        capped = False
        counts = None  # the caller's counters when read with the candidates
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
            args = {"app": self.app_id, "qid": app.queue_id, "now": now, "user": user}
            # What the caller holds, the counters and the candidates: one round trip on
            # PostgreSQL (a folder's items are screened first: their query runs alone).
            with pipeline(conn):
                held = run(conn, _HELD_SQL, args)
                counts = run(conn, _COUNTS_SQL, {"app": self.app_id, "owner": owner})
                first = None if self.cfg.from_folder else run(
                    conn, _SHARED_BATCH_SQL, {**args, "limit": size + 1})

            def candidates(n: int) -> list:
                if first is not None and n == size + 1:
                    return first.all()
                return run(conn, _SHARED_BATCH_SQL, {**args, "limit": n}).all()

            rows = setaside.screened(self, conn, app.queue_id, size, candidates)
            held = held.scalar_one()
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
                ids = [r.item_id for r in rows[:size] if r.pos in served]
                run(conn, reserve_sql(len(ids)), {
                    "app": self.app_id, "annotator": user, "until": until,
                    **{f"item{i}": item_id for i, item_id in enumerate(ids)}})
            pending = bool(rows) or not app.complete
            if not rows and app.complete:
                pending = conn.execute(_PENDING_SQL, {"qid": app.queue_id}).first() is not None
        stats = self._stats(conn, app, owner, None if counts is None else counts.all())
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

    def _stats(self, conn: sa.Connection, app: sa.Row, owner: str,
               counts: list[tuple] | None = None) -> dict:
        """The stats answer; `counts`: the rows of `_COUNTS_SQL` when already read."""
        if counts is None:
            counts = run(conn, _COUNTS_SQL, {"app": self.app_id, "owner": owner}).all()
        counts = dict(counts)
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



__all__: Sequence[str] = ("LabelingEngine", "QueueNotReady", "BadItemId",
                          "session_variable", "metadata")

