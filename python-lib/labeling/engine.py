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

The engine is a facade over explicit collaborators sharing one `EngineContext` (project,
config, annotation kind, data type, clock, the app's row, the writer): `labeling.setaside`
(`SetAside`), `labeling.build` (`QueueBuilder`: queues and the item index),
`labeling.sessions` (`Sessions`: following sessions, the background worker and its lease),
`labeling.annotate` (`Answers`: checking and recording answers, the stats). What an answer is
belongs to the webapp's annotation kind (`labeling.kinds`). This module serves batches and
reads. The tables and SQL are `labeling.store`'s; their names stay importable from here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from labelloop.errors import LabelloopError
from labelloop.project import SystemClock, pipeline, run

from .annotate import MAX_BATCH, MAX_COMMENT, Answers, check_user
from .build import AHEAD, DROP_CHUNK, FILL, HEAD, INDEX_CHUNK, QueueBuilder
from .datatypes import BadItemId, DataType, data_type
from .kinds import AnnotationKind, kind_class
from .publish import SessionKey
from .queue import IndexNotReady, Ranking, RankingChanged, Slice
from .sessions import (
    LEASE_SECONDS,
    RETRY_SECONDS,
    QueueNotReady,
    Sessions,
    session_variable,
)
from .setaside import SetAside
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


class EngineContext:
    """What the parts of one webapp's engine share: the project, the webapp's config, its
    annotation kind and data type, the clock, the app's row and the one writer."""

    def __init__(self, project: Any, cfg: EngineConfig, kind: AnnotationKind, clock: Any,
                 background: bool, check_interval: float, wait_seconds: float):
        self.project = project
        self.cfg = cfg
        self.kind = kind
        # Reservations, leases and answers are timed by `clock` (`labelloop.project`'s
        # SystemClock by default; tests pass a ManualClock and advance it).
        self.clock = clock if clock is not None else SystemClock()
        self.background = background
        self.check_interval = check_interval
        self.wait_seconds = wait_seconds
        self.dtype: DataType = data_type(cfg, project)
        self.engine = project.engine
        self.app_id = self._register()

    def _register(self) -> int:
        t = apps_table

        def register(conn: sa.Connection) -> int:
            row = conn.execute(sa.select(t.c.id).where(t.c.name == self.cfg.webapp)).first()
            if row is not None:
                return int(row[0])
            return int(conn.execute(sa.insert(t).values(name=self.cfg.webapp))
                       .inserted_primary_key[0])

        return self.write(register)

    def now(self) -> float:
        """Epoch seconds on the engine's clock."""
        return self.clock.time()

    def write(self, fn: Any, background: bool = False) -> Any:
        """Run `fn(conn)` in the project's single writer (see `labelloop.project.Database`)."""
        return self.project.db.execute_write_fn(fn, background=background)

    def app(self, conn: sa.Connection) -> sa.Row:
        """The webapp's row joined with its queue and item set (`_APP_SQL`)."""
        return run(conn, _APP_SQL, {"id": self.app_id}).first()

    def read_app(self) -> sa.Row:
        with self.engine.connect() as conn:
            return self.app(conn)

    def queries(self) -> Any | None:
        """The queries dataset, when configured and written."""
        if not self.cfg.queries_ds:
            return None
        ds = self.project.dataset(self.cfg.queries_ds, create=True)
        return ds if ds.exists() else None

    def owner(self, user: str) -> str:
        """Whose annotation an answer is: the annotator's, or everyone's (shared labels)."""
        return user if self.cfg.per_annotator else ""


class LabelingEngine:
    """The labeling engine of one webapp instance over a project's database: the facade the
    routes call, over its collaborators (`ctx` the shared context, `setaside`, `builder` the
    queues and index, `sessions` the sessions and background worker, `answers`)."""

    def __init__(self, project: Any, cfg: EngineConfig, check_interval: float = 1.0,
                 background: bool = True, wait_seconds: float = 300.0, clock: Any = None,
                 kind: AnnotationKind | None = None):
        if kind is None:
            kind = kind_class(cfg.kind, project)(cfg)
        self.ctx = EngineContext(project, cfg, kind, clock, background, check_interval,
                                 wait_seconds)
        self.setaside = SetAside(self.ctx)
        self.builder = QueueBuilder(self.ctx)
        self.sessions = Sessions(self.ctx, self.builder)
        self.answers = Answers(self.ctx, self.setaside)

    # The context's parts, as callers (routes, interop, tests) have always named them.
    project = property(lambda self: self.ctx.project)
    cfg = property(lambda self: self.ctx.cfg)
    kind = property(lambda self: self.ctx.kind)
    dtype = property(lambda self: self.ctx.dtype)
    engine = property(lambda self: self.ctx.engine)
    app_id = property(lambda self: self.ctx.app_id)
    clock = property(lambda self: self.ctx.clock)

    @property
    def background(self) -> bool:
        """Whether a worker thread builds queues (else batches build them, in their thread)."""
        return self.ctx.background

    @background.setter
    def background(self, value: bool) -> None:
        self.ctx.background = value

    @property
    def max_reserved(self) -> int:
        """How many items one annotator may hold at once (and the largest batch)."""
        return int(getattr(self.cfg, "max_reserved", None) or 50)

    def refresh(self, wait: bool = False) -> None:
        """Follow a new session; the first queue is prepared now, later ones aside."""
        self.sessions.refresh(wait=wait)

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Wait for the background worker of this engine to end (tests, benchmarks)."""
        self.sessions.wait_idle(timeout)

    def session(self) -> int:
        """The session of the queue being served (0 before the first Query Sampler run)."""
        return self.sessions.session()

    # ------------------------------------------------------------------ answering
    def label(self, user: Any, item_id: Any, answer: Any, comment: Any = None) -> dict:
        """Record (or change) the caller's answer for an item: `{"label_id", "stats"}`.

        An answer never waits for a queue switch (batches and the background worker follow
        sessions); only a webapp that never had a queue prepares its first one."""
        self.sessions.first_queue()
        return self.answers.label(user, item_id, answer, comment)

    def skip(self, user: Any, item_id: Any, comment: Any = None) -> dict:
        """Record that the caller skipped an item: `{"label_id", "stats"}`."""
        self.sessions.first_queue()
        return self.answers.skip(user, item_id, comment)

    def release(self, user: Any, item_ids: Any) -> dict:
        """End the caller's reservations of `item_ids` now: `{"released"}`."""
        return self.answers.release(user, item_ids)

    # ------------------------------------------------------------------ reading
    def batch(self, user: Any, size: int = 20) -> dict:
        """The next items for the caller, reserved for them: DESIGN's batch answer. `size` is
        from 1 to `max_reserved` (the `GET batch` route's schema says so to clients)."""
        user = check_user(user)
        self.sessions.ensure_queue()
        owner = self.ctx.owner(user)
        for _attempt in range(3):
            out, app, top = self.ctx.write(lambda conn: self._take_batch(conn, user, owner, size))
            short = len(out["rows"]) <= size and not app.complete
            if not short:
                break
            # Fewer items written than asked for: write the next positions now (rare: a
            # background worker keeps writing ahead of the furthest item served).
            if not self.builder.fill(app, (app.filled or 0) + max(FILL, size + 1), background=False):
                break
        if app.queue_id is not None and not app.complete and \
                (app.filled or 0) - top < AHEAD:
            # Running low: top up a whole chunk beyond. Why not after every batch: the worker
            # then woke per batch to write a few positions (a lease, a step, a release), and
            # with 32 annotators took CPU from the label writes all the time.
            target = max(top + AHEAD + FILL, self.builder.fill_target[1] if self.builder.fill_target[0] ==
                         app.queue_id else 0)
            self.builder.fill_target = (app.queue_id, target)
            if self.background:
                self.sessions.start_worker(SessionKey.parse(app.session_key))
        rows = out["rows"]
        items = [self._item(r) for r in rows[:size] if r.pos in out["served"]]
        return {"items": items, "stats": out["stats"], "session": int(app.q_session or 0),
                "is_last_batch": len(rows) <= size and not out["capped"],
                "done": not out["pending"], "preparing": self._preparing(app)}

    def _take_batch(self, conn: sa.Connection, user: str, owner: str, size: int) -> tuple:
        """Select and reserve the caller's next items (in the writer: never served twice)."""
        now = self.ctx.now()
        app = self.ctx.app(conn)
        capped = False
        counts = None  # the caller's counters when read with the candidates
        if self.cfg.per_annotator:
            cur = conn.execute(sa.select(cursors_table.c.pos).where(
                cursors_table.c.qid == app.queue_id, cursors_table.c.owner == user)).first()
            cursor = cur[0] if cur else 0
            rows = self.setaside.screened(conn, app.queue_id, size, lambda n: conn.execute(
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

            rows = self.setaside.screened(conn, app.queue_id, size, candidates)
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
        stats = self.answers.stats(conn, app, owner, None if counts is None else counts.all())
        top = max((r.pos for r in rows), default=int(app.filled or 0))
        return {"rows": rows, "served": served, "stats": stats, "pending": pending,
                "capped": capped}, app, top

    def _item(self, r: sa.Row) -> dict:
        data = self.kind.render(self.dtype.render(r.item_id, json.loads(r.row)),
                                (lambda: self.dtype._file(r.item_id))
                                if self.cfg.from_folder else None)
        return {"id": r.item_id, "data": data,
                "suggestion": self.kind.suggestion(r.prediction, r.confidence, r.model_version),
                "halting": r.halting, "uncertainty": r.uncertainty}

    def annotations(self, user: Any, before: int | None = None, limit: int = 50) -> dict:
        """The caller's annotations, newest first (`before` a label id), with item data;
        `limit` from 1 to MAX_BATCH (the `GET annotations` route's schema)."""
        user = check_user(user)
        an, it = annotations_table, items_table
        with self.engine.connect() as conn:
            app = self.ctx.app(conn)
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
            value = self.kind.value(r.label)
            out.append({
                "label_id": r.label_id, "id": r.item_id, "status": r.status,
                "label": value, **({self.kind.field: value} if self.kind.field != "label" else {}),
                "comment": r.comment, "session": r.session,
                "date": dt.datetime.fromtimestamp(r.updated, dt.UTC).isoformat(),
                "data": None if row is None else self.dtype.render(r.item_id, json.loads(row)),
            })
        return {"annotations": out, "next_before": out[-1]["label_id"] if out else None}

    def stats(self, user: Any = None) -> dict:
        """`{"labeled", "skipped", "total", "remaining", "per_label", "session"}`."""
        user = check_user(user)
        self.sessions.ensure_queue()
        with self.engine.connect() as conn:
            return self.answers.stats(conn, self.ctx.app(conn), self.ctx.owner(user))

    def _preparing(self, app: sa.Row) -> dict | None:
        return dict(app.prep) if app.prep else None

    def queue_info(self) -> dict:
        """The current queue's build info (scored items, halting thresholds, warnings)."""
        app = self.ctx.read_app()
        if app.queue_id is None:
            return {"ready": False, "build_error": app.build_error,
                    "preparing": self._preparing(app)}
        info = dict(app.q_info or {})
        info.update(ready=True, session=int(app.q_session or 0), n=app.q_n or 0,
                    build_error=app.build_error, preparing=self._preparing(app))
        return info

    def config(self) -> dict:
        """What the page needs to know: DESIGN's config answer (cheap: poll it every second)."""
        self.sessions.ensure_queue()
        info = self.queue_info()
        warnings = [w for w in (info.get("warning"), info.get("build_error")) if w]
        if self.cfg.from_folder:
            with self.engine.connect() as conn:
                warnings += self.setaside.summary(conn)["warnings"]
        return {
            "webapp": self.cfg.webapp, "data_type": self.cfg.data_type, "kind": self.kind.name,
            "categories": [{"name": k, "description": v} for k, v in self.kind.types.items()],
            "multi_label": self.cfg.multi_label, "per_annotator": self.cfg.per_annotator,
            "label_column": self.cfg.label_col,
            "reservation_seconds": self.cfg.reservation_seconds,
            "max_reserved": self.max_reserved,
            "al_enabled": bool(info.get("scored")), "session": info.get("session", 0),
            "queue_session": info.get("session", 0), "model_version": info.get("model_version"),
            "halting": {"low": info.get("low"), "high": info.get("high")},
            "warnings": warnings, "preparing": info.get("preparing"), **self.kind.config(),
        }



__all__: Sequence[str] = ("LabelingEngine", "EngineContext", "QueueNotReady", "BadItemId",
                          "session_variable", "metadata")

