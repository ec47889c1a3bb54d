"""Answers: checking what annotators send, and recording labels, skips and comments, with the
labels and metadata datasets and the stats counters in the same transaction (a mixin of the
engine).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from labelloop.errors import ConflictError, LabelloopError, NotFoundError
from labelloop.project import pipeline, run
from labelloop.web import check_user_name

from .queue import IndexNotReady
from .store import (
    _ANY_QUEUE_ROW_SQL,
    _APP_AND_ANSWER_NEXT_SQL,
    _APP_AND_ANSWER_SQL,
    _COUNTS_SQL,
    _DONE_SQL,
    _INSERT_ANNOTATION_ID_SQL,
    _INSERT_ANNOTATION_SQL,
    _ITEM_SQL,
    _RENEW_SQL,
    _UNRESERVE_SQL,
    _UPDATE_ANNOTATION_SQL,
    LABELED,
    SKIPPED,
    _RowDataset,
    annotations_table,
    count_params,
    count_sql,
    reservations_table,
)

MAX_BATCH = 500
MAX_COMMENT = 10_000


class Annotating:
    """The engine's part that checks input and records answers (a mixin of
    `labeling.engine.LabelingEngine`)."""

    # ------------------------------------------------------------------ checking input
    def _user(self, user: Any) -> str:
        if user in (None, ""):
            return "anonymous"
        if not isinstance(user, str):
            raise LabelloopError(f"annotator name must be a string, got "
                                 f"{type(user).__name__}")
        return check_user_name(user)  # the host's rule: the names its server accepts

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

    def _item_row(self, conn: sa.Connection, app: sa.Row, item_id: str,
                  row: tuple | None) -> str | None:
        """An item's row: from the queue being served (`row`, as read with the app), the
        item index, or an older queue."""
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
        now = self._now()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        label_col = self.cfg.label_col
        ttl = self.cfg.reservation_seconds

        def write(conn: sa.Connection) -> dict:
            key = {"app": self.app_id, "owner": owner, "item_id": item_id}
            lt = self._dataset_table(conn, self.cfg.labels_ds, self._labels_schema())
            mt = self._dataset_table(conn, self.cfg.metadata_ds, self._metadata_schema())
            # PostgreSQL: the annotation's id is taken with the first read, so that a new
            # annotation and its rows go to the database together below.
            pg = conn.dialect.name == "postgresql"
            with pipeline(conn):
                # The datasets written below marked changed (undone with the rest if this
                # write fails); a skip writes metadata only, unless it removes a label row,
                # which then marks the labels itself.
                if status == LABELED:
                    lt.ds.touch(conn, [mt.ds.name])
                else:
                    mt.ds.touch(conn)
                # The app, the item's row in the queue served and the earlier answer, at once.
                got = run(conn, _APP_AND_ANSWER_NEXT_SQL if pg else _APP_AND_ANSWER_SQL, key)
            app = got.one()
            session = int(app.q_session or 0)
            row = self._item_row(conn, app, item_id,
                                 None if app.q_pos is None else (app.q_row,))
            old = None if app.label_id is None else app
            if row is None:
                raise NotFoundError(f"no item {item_id!r} in {self.cfg.unlabeled!r}: use an id "
                                    "from a batch")
            if old is not None and not self.cfg.per_annotator:
                old = self._answered_by_another(conn, old, user, lt)
            meta = {"date": when, "data_id": item_id, "comment": comment, "session": session,
                    "status": status, "annotator": user, label_col: stored}
            values = {**key, "annotator": user, "status": status, "label": stored,
                      "comment": comment, "session": session, "now": now}
            deltas: dict[str, int] = {}
            if old is None:
                # PostgreSQL: the annotation and its two rows in one round trip (its id was
                # taken with the first read); SQLite: the annotation gives its id.
                label_id = int(app.next_id) if pg else int(
                    run(conn, _INSERT_ANNOTATION_SQL, values).scalar_one())
                # Their tables found first: no read may run inside the block.
                to_labels = lt.inserter(conn, label_id) if status == LABELED else None
                to_meta = mt.inserter(conn, label_id)
                with pipeline(conn):
                    if pg:
                        run(conn, _INSERT_ANNOTATION_ID_SQL, {**values, "label_id": label_id})
                    labels_key = None if to_labels is None else to_labels(
                        {**self.dtype.labels_row(json.loads(row)), label_col: stored})
                    meta_key = to_meta(meta)
                labels_row = None if labels_key is None else labels_key()
                meta_row = meta_key()
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
            deltas = {k: n for k, n in deltas.items() if n}
            # Nothing below is read back but the counters: on PostgreSQL one round trip.
            with pipeline(conn) as sent:
                if old is None and not self.cfg.per_annotator and app.queue_id is not None:
                    run(conn, _DONE_SQL, {"qid": app.queue_id, "item_id": item_id})
                run(conn, _UPDATE_ANNOTATION_SQL, {**values, "label_id": label_id,
                                                   "labels_row": labels_row,
                                                   "meta_row": meta_row})
                if deltas:  # one statement for all counters (not an executemany)
                    run(conn, count_sql(len(deltas)), count_params(self.app_id, owner, deltas))
                if not self.cfg.per_annotator:
                    run(conn, _UNRESERVE_SQL, {"app": self.app_id, "item_id": item_id})
                    # An annotator who answers is still there: what they hold stays theirs.
                    run(conn, _RENEW_SQL, {"app": self.app_id, "user": user, "now": now,
                                           "until": now + ttl, "stale": now + ttl / 2})
                counts = sent.read(_COUNTS_SQL, {"app": self.app_id, "owner": owner})
            from .interop.events import emit_annotation  # outgoing webhooks, same transaction

            emit_annotation(self, conn, old is None, label_id, item_id, user, status, stored,
                            comment, row)
            return {"label_id": label_id, "stats": self._stats(conn, app, owner, counts())}

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
        deltas: dict[str, int] = {}
        for k in self._label_keys(old.status, old.label):
            deltas[k] = deltas.get(k, 0) - 1
        conn.execute(count_sql(len(deltas)), count_params(self.app_id, "", deltas))
        return None

