"""Answers: checking what annotators send, and recording labels, skips and comments, with the
labels and metadata datasets and the stats counters in the same transaction: `Answers`, a
collaborator of `labeling.engine.LabelingEngine`.

What an answer is belongs to the webapp's annotation kind (`labeling.kinds`): it checks the
answer and gives the value stored. A label never waits for a queue: the item's row comes from
the queue served, the item index or an older queue, whichever has it.

Overlap (`annotators_per_item` k > 1): each annotator's answer is their own annotation (as
with `labels_per_annotator`); the item's count of labels (`lb_item_answers`) changes in the
same transaction, and the item leaves the queue when it reaches k. A label that would be the
(k+1)-th is refused (409): the item was completed by others meanwhile. A skip does not count:
it only takes the item out of the skipper's stream.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from labelloop.errors import ConfigError, ConflictError, LabelloopError, NotFoundError
from labelloop.project import pipeline, run
from labelloop.web import check_user_name

from .kinds import Item
from .quality import consensus
from .queue import IndexNotReady
from .store import (
    _ANY_QUEUE_ROW_SQL,
    _APP_AND_ANSWER_NEXT_SQL,
    _APP_AND_ANSWER_SQL,
    _COUNTS_SQL,
    _DONE_SQL,
    _INSERT_ANNOTATION_ID_SQL,
    _INSERT_ANNOTATION_SQL,
    _ITEM_ANSWERS_SQL,
    _ITEM_SQL,
    _OVERLAP_COUNTS_SQL,
    _RENEW_SQL,
    _UNDONE_SQL,
    _UNRESERVE_MINE_SQL,
    _UNRESERVE_SQL,
    _UPDATE_ANNOTATION_SQL,
    LABELED,
    OVERLAP_KEYS,
    SKIPPED,
    _RowDataset,
    annotations_table,
    count_params,
    count_sql,
    item_answers_table,
    reservations_table,
)

MAX_BATCH = 500
MAX_COMMENT = 10_000


def check_user(user: Any) -> str:
    """The annotator's name (`anonymous` when none) by the host's rule."""
    if user in (None, ""):
        return "anonymous"
    if not isinstance(user, str):
        raise LabelloopError(f"annotator name must be a string, got "
                             f"{type(user).__name__}")
    return check_user_name(user)  # the host's rule: the names its server accepts


class Answers:
    """Checks and records a webapp's answers, keeps its labels and metadata datasets and its
    stats counters (`ctx`: the engine's shared context; `setaside`: its
    `labeling.setaside.SetAside`)."""

    def __init__(self, ctx: Any, setaside: Any):
        self.ctx = ctx
        self.setaside = setaside
        self._tables: dict[str, _RowDataset] = {}
        self._check_output_schemas()
        # The counters a stats answer reads: the owner's, and with overlap the team's too.
        self.counts_sql = _OVERLAP_COUNTS_SQL if ctx.cfg.overlap else _COUNTS_SQL

    # ------------------------------------------------------------------ the datasets
    def labels_schema(self) -> list[dict]:
        """The labels dataset's columns: the item's, the label and the label id."""
        cfg = self.ctx.cfg
        return self.ctx.dtype.item_schema() + [{"name": cfg.label_col, "type": "string"},
                                               {"name": cfg.label_id_col, "type": "bigint"}]

    def metadata_schema(self) -> list[dict]:
        """The metadata dataset's columns (DESIGN's)."""
        cfg = self.ctx.cfg
        return [{"name": "date", "type": "date"}, {"name": "data_id", "type": "string"},
                {"name": "comment", "type": "string"}, {"name": "session", "type": "bigint"},
                {"name": "status", "type": "string"}, {"name": "annotator", "type": "string"},
                {"name": cfg.label_col, "type": "string"},
                {"name": cfg.label_id_col, "type": "bigint"}]

    def _check_output_schemas(self) -> None:
        cfg = self.ctx.cfg
        for name in (cfg.labels_ds, cfg.metadata_ds):
            ds = self.ctx.project.dataset(name, create=True)
            if not ds.exists():
                continue
            missing = [c for c in (cfg.label_col, cfg.label_id_col) if c not in ds.columns]
            if missing:
                raise ConfigError(
                    f"dataset {name!r} has no column {', '.join(map(repr, missing))} (it has "
                    f"{', '.join(ds.columns)}): choose an empty dataset or the label column "
                    "name it was written with")

    def _label_keys(self, status: str, stored: str | None) -> list[str]:
        if status == SKIPPED:
            return ["skipped"]
        return ["labeled", *(f"label:{v}" for v in self.ctx.kind.count_keys(stored))]

    def _dataset_table(self, conn: sa.Connection, name: str, schema: list[dict]
                       ) -> _RowDataset:
        table = self._tables.get(name)
        if table is None:
            table = _RowDataset(self.ctx.project.dataset(name, create=True), schema,
                                self.ctx.cfg.label_id_col)
            self._tables[name] = table
        return table

    # ------------------------------------------------------------------ actions
    def label(self, user: Any, item_id: Any, answer: Any, comment: Any = None) -> dict:
        """Record (or change) the caller's answer for an item: `{"label_id", "stats"}`.

        The kind checks the answer: before the write, or (a kind that needs the item) in the
        answer's transaction, which its refusal undoes."""
        kind = self.ctx.kind
        if kind.needs_item:
            return self._annotate(user, item_id, LABELED, None, comment, answer=answer)
        return self._annotate(user, item_id, LABELED, kind.check(answer, None), comment)

    def skip(self, user: Any, item_id: Any, comment: Any = None) -> dict:
        """Record that the caller skipped an item: `{"label_id", "stats"}`."""
        return self._annotate(user, item_id, SKIPPED, None, comment)

    def _item_row(self, conn: sa.Connection, app: sa.Row, item_id: str,
                  row: tuple | None) -> str | None:
        """An item's row: from the queue being served (`row`, as read with the app), the
        item index, or an older queue."""
        ctx = self.ctx
        if (row is None or row[0] is None) and app.iset is not None:
            row = conn.execute(_ITEM_SQL, {"iset": app.iset, "item_id": item_id}).first()
        if row is None and not app.iset_complete:
            row = conn.execute(_ANY_QUEUE_ROW_SQL, {"app": ctx.app_id,
                                                    "item_id": item_id}).first()
            if row is None:
                raise IndexNotReady(f"item {item_id!r} is not among the items served so far "
                                    "and the pool is still being indexed: retry in a few "
                                    "seconds")
        return None if row is None else row[0]

    def _annotate(self, user: Any, item_id: Any, status: str, stored: str | None,
                  comment: Any, answer: Any = None) -> dict:
        ctx = self.ctx
        user = check_user(user)
        item_id = ctx.dtype.check_id(item_id)
        if comment is not None and not isinstance(comment, str):
            raise LabelloopError(f"comment must be a string, got {comment!r}")
        if comment is not None and len(comment) > MAX_COMMENT:
            raise LabelloopError(f"comment is longer than {MAX_COMMENT} characters: shorten it")
        comment = comment or None
        owner = ctx.owner(user)
        now = ctx.now()
        when = dt.datetime.fromtimestamp(now, dt.UTC)
        label_col = ctx.cfg.label_col
        ttl = ctx.cfg.reservation_seconds

        def write(conn: sa.Connection) -> dict:
            key = {"app": ctx.app_id, "owner": owner, "item_id": item_id}
            lt = self._dataset_table(conn, ctx.cfg.labels_ds, self.labels_schema())
            mt = self._dataset_table(conn, ctx.cfg.metadata_ds, self.metadata_schema())
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
                raise NotFoundError(f"no item {item_id!r} in {ctx.cfg.unlabeled!r}: use an id "
                                    "from a batch")
            nonlocal stored
            if status == LABELED and stored is None:  # the kind checks it against the item
                stored = ctx.kind.check(answer, self._item(item_id, row))
            if old is not None and ctx.cfg.shared:
                old = self._answered_by_another(conn, old, user, lt)
            # Overlap: the item's labels counted before anything is written (a refusal
            # writes nothing).
            team = self._count_label(conn, app, item_id, old, status) if ctx.cfg.overlap else {}
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
                        {**ctx.dtype.labels_row(json.loads(row)), label_col: stored})
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
                    labels_row = lt.insert(conn, {**ctx.dtype.labels_row(json.loads(row)),
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
                if old is None and ctx.cfg.shared and app.queue_id is not None:
                    run(conn, _DONE_SQL, {"qid": app.queue_id, "item_id": item_id})
                run(conn, _UPDATE_ANNOTATION_SQL, {**values, "label_id": label_id,
                                                   "labels_row": labels_row,
                                                   "meta_row": meta_row})
                if deltas:  # one statement for all counters (not an executemany)
                    run(conn, count_sql(len(deltas)), count_params(ctx.app_id, owner, deltas))
                if team.get("deltas"):
                    run(conn, count_sql(len(team["deltas"])),
                        count_params(ctx.app_id, "", team["deltas"]))
                if team.get("state") is not None and app.queue_id is not None:
                    run(conn, _DONE_SQL if team["state"] else _UNDONE_SQL,
                        {"qid": app.queue_id, "item_id": item_id})
                if not ctx.cfg.per_annotator:
                    # Shared, or overlap and the item complete: nobody holds it any more;
                    # overlap and not complete: the caller's hold ends, the others' stay.
                    run(conn, _UNRESERVE_MINE_SQL if team.get("open") else _UNRESERVE_SQL,
                        {"app": ctx.app_id, "item_id": item_id, "user": user})
                    # An annotator who answers is still there: what they hold stays theirs.
                    run(conn, _RENEW_SQL, {"app": ctx.app_id, "user": user, "now": now,
                                           "until": now + ttl, "stale": now + ttl / 2})
                counts = sent.read(self.counts_sql, {"app": ctx.app_id, "owner": owner})
            from .interop.events import emit_annotation  # outgoing webhooks, same transaction

            emit_annotation(ctx, conn, old is None, label_id, item_id, user, status, stored,
                            comment, row)
            # The answer, its dataset rows, counters and queue state are written: whatever
            # follows each answer in the same transaction (the item's consensus) goes here.
            consensus.refresh(ctx, conn, [item_id])  # the item's consensus (consensus_ds)
            return {"label_id": label_id, "stats": self.stats(conn, app, owner, counts())}

        return ctx.write(write)

    def _count_label(self, conn: sa.Connection, app: sa.Row, item_id: str, old: Any,
                     status: str) -> dict:
        """Overlap: count the caller's label of an item (or its removal, a label changed to a
        skip) in `lb_item_answers`; refuse (409) a label beyond k. Returns what else the
        answer changes: `deltas` of the team counters (`OVERLAP_KEYS`), the queue `state`
        the item takes (1 complete, 0 open again, None unchanged) and whether it stays `open`.
        """
        k = self.ctx.cfg.annotators_per_item
        d = int(status == LABELED) - int(old is not None and old.status == LABELED)
        if not d:
            n = conn.execute(sa.select(item_answers_table.c.n).where(
                item_answers_table.c.app == self.ctx.app_id,
                item_answers_table.c.item_id == item_id)).scalar() or 0
            return {"open": n < k}
        n = int(run(conn, _ITEM_ANSWERS_SQL, {"app": self.ctx.app_id, "item_id": item_id,
                                              "d": d}).scalar_one())
        if d > 0 and n > k:
            raise ConflictError(f"item {item_id!r} already has its {k} answers (annotators per "
                                "item): take the next item")

        def bucket(x: int) -> str | None:
            return OVERLAP_KEYS[1] if x >= k else OVERLAP_KEYS[0] if x > 0 else None

        deltas: dict[str, int] = {}
        before, after = bucket(n - d), bucket(n)
        if before != after:
            if before:
                deltas[before] = -1
            if after:
                deltas[after] = 1
        state = 1 if n >= k > n - d else 0 if n - d >= k > n else None
        return {"deltas": deltas, "state": state, "open": n < k}

    def _item(self, item_id: str, row: str) -> Item:
        """The item a kind checks an answer against."""
        dtype = self.ctx.dtype
        values = json.loads(row)
        path = dtype._file(item_id) if dtype.from_folder else None
        return Item(item_id, values, dtype.render(item_id, values), path)

    def stats(self, conn: sa.Connection, app: sa.Row, owner: str,
              counts: list[tuple] | None = None) -> dict:
        """The stats answer; `counts`: the rows of `_COUNTS_SQL` when already read."""
        cfg = self.ctx.cfg
        if counts is None:
            counts = run(conn, self.counts_sql, {"app": self.ctx.app_id, "owner": owner}).all()
        counts = dict(counts)
        total = int(app.n_items or 0)
        labeled, skipped = counts.get("labeled", 0), counts.get("skipped", 0)
        aside = self.setaside.summary(conn) if cfg.from_folder else {}
        out = {"labeled": labeled, "skipped": skipped, "total": total,
               "remaining": max(0, total - labeled - skipped - aside.get("set_aside", 0)),
               "per_label": {k: counts.get(f"label:{k}", 0) for k in self.ctx.kind.types},
               "session": int(app.q_session or 0), **aside}
        if cfg.overlap:
            # The caller's own answers above; the team's progress here. `remaining`: the
            # items that still need a label from someone.
            partial, complete = (counts.get(k, 0) for k in OVERLAP_KEYS)
            open_ = max(0, total - partial - complete - aside.get("set_aside", 0))
            out["overlap"] = {"k": cfg.annotators_per_item, "complete": complete,
                              "partial": partial, "open": open_}
            out["remaining"] = partial + open_
        return out

    def release(self, user: Any, item_ids: Any) -> dict:
        """End the caller's reservations of `item_ids` now: `{"released", "stats"}`."""
        ctx = self.ctx
        user = check_user(user)
        if not isinstance(item_ids, list) or len(item_ids) > MAX_BATCH:
            raise LabelloopError(f"ids must be a list of at most {MAX_BATCH} item ids, got "
                                 f"{type(item_ids).__name__}")
        ids = [ctx.dtype.check_id(i) for i in item_ids]

        r = reservations_table

        def write(conn: sa.Connection) -> int:
            if not ids:
                return 0
            return conn.execute(sa.delete(r).where(r.c.app == ctx.app_id, r.c.annotator == user,
                                                   r.c.item_id.in_(ids))).rowcount

        released = ctx.write(write) if not ctx.cfg.per_annotator else 0
        return {"released": max(int(released or 0), 0)}

    def _answered_by_another(self, conn: sa.Connection, old: Any, user: str,
                             lt: _RowDataset) -> Any:
        """Shared mode: an item someone else answered is theirs (409), unless the webapp allows
        relabeling: then their annotation stays in the history and the caller's becomes a new
        one (the earlier label row is removed, its metadata row kept). Returns what `old`
        becomes (None: record a new annotation)."""
        ctx = self.ctx
        an = annotations_table
        prev = conn.execute(sa.select(an.c.annotator, an.c.updated)
                            .where(an.c.label_id == old.label_id)).first()
        if prev is None or prev.annotator == user:
            return old  # the caller's own answer: they may always change it
        when = dt.datetime.fromtimestamp(prev.updated, dt.UTC).isoformat(timespec="seconds")
        if not ctx.cfg.allow_relabel:
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
        conn.execute(count_sql(len(deltas)), count_params(ctx.app_id, "", deltas))
        return None

