"""Building a session's queue: its head switched in at once, the rest written ahead of the
annotators, and the pool's item index, in small transactions: `QueueBuilder`, a collaborator
of `labeling.engine.LabelingEngine` (its worker thread is `labeling.sessions`').

The order itself (scores, the halting values, slices of it) comes from `labeling.queue`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from labelloop.project import pipeline

from .publish import SessionKey
from .queue import IndexNotReady, Ranking, RankingChanged, Slice
from .store import (
    _INSERT_ITEMS_SQL,
    _MARK_COMPLETE_SQL,
    _MARK_DONE_SQL,
    apps_table,
    cursors_table,
    insert_queue_positions,
    items_table,
    itemsets_table,
    queue_table,
    queues_table,
)

HEAD = 2_000  # positions of a new order written before it is switched in
FILL = 2_000  # positions written ahead at a time after that, when fewer than AHEAD are left
FILL_STEP = 100  # positions a background write adds (it runs alone: keep it short)
AHEAD = 1_000  # keep this many positions written beyond the furthest served one
INDEX_CHUNK = 2_000  # pool items indexed per transaction
DROP_CHUNK = 5_000


Heartbeat = Callable[[sa.Connection], None]  # the builder lease's renewal, inside a write


class QueueBuilder:
    """Writes a webapp's queues and its item index (`ctx`: the engine's shared context).

    `fill_target` (queue id, position to write up to) is set by the batches that run low and
    followed by the background worker.
    """

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.fill_target: tuple[int, int] = (0, 0)
        self._rankings: dict[SessionKey, Ranking] = {}
        self._ranking_lock = threading.Lock()
        self._index_iter: tuple[int, Any] | None = None

    # ------------------------------------------------------------------ switching
    def _ranking(self, key: SessionKey) -> Ranking:
        """The order of `key` (cached; any process can rebuild it from the datasets)."""
        ranking = self._rankings.get(key)
        if ranking is not None:
            return ranking
        with self._ranking_lock:  # one thread reads the datasets, the others wait for it
            ranking = self._rankings.get(key)
            if ranking is not None:
                return ranking
            return self._new_ranking(key)

    def _new_ranking(self, key: SessionKey) -> Ranking:
        queries = self.ctx.queries() if key.dataset is not None else None
        ranking = Ranking(self.ctx.dtype, queries, self.ctx.cfg.seed,
                          lambda: self._index_ids(key.pool))
        ranking.prepare()
        if queries is not None and ranking._generation is not None and \
                int(ranking._generation) != key.generation:
            raise RankingChanged("the queries were replaced meanwhile")
        served = self._served_key()
        self._rankings = {k: v for k, v in self._rankings.items() if k == served}
        self._rankings[key] = ranking
        return ranking

    def _served_key(self) -> SessionKey | None:
        text = self.ctx.read_app().session_key
        return None if text is None else SessionKey.parse(text)

    def _set_prep(self, what: str | None, done: int = 0, total: int = 0) -> None:
        t = apps_table
        prep = None if what is None else {"what": what, "done": int(done), "total": int(total)}
        self.ctx.write(lambda conn: conn.execute(
            sa.update(t).where(t.c.id == self.ctx.app_id).values(prep=prep)), background=True)

    def switch(self, key: SessionKey, heartbeat: Heartbeat) -> None:
        """Prepare the head of the order of `key` and switch it in, in one transaction."""
        app = self.ctx.read_app()
        if app.queue_id is not None and app.session_key == key.text:
            return
        session = key.session
        if app.queue_id is not None:
            self._set_prep(f"the order of session {session}", 0, HEAD)
        iset = self._ensure_iset(key.pool)
        try:
            ranking = self._ranking(key)
        except RankingChanged:
            return  # the queries changed again meanwhile: the next check prepares the newest
        if not self.ctx.background or ranking.needs_index:
            self._build_index(iset, heartbeat)
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
            now_app = self.ctx.app(conn)
            if now_app.queue_id is not None and now_app.session_key == key.text:
                return None  # another process switched to it meanwhile
            qid = int(conn.execute(sa.insert(queues_table).values(
                app=self.ctx.app_id, iset=iset, session_key=key.text, session=session,
                created=self.ctx.now(),
                n=ranking.length, info=info, filled=0, complete=False)).inserted_primary_key[0])
            self._insert_slice(conn, qid, iset, head, 0, stop, ranking.length)
            # Until the pool is indexed (in the background), the page says so.
            prep = None if ready else {"what": "indexing the pool", "done": 0,
                                       "total": int(n_items)}
            conn.execute(sa.update(apps_table).where(apps_table.c.id == self.ctx.app_id).values(
                queue_id=qid, iset=iset, n_items=n_items, session_key=key.text, build_error=None,
                prep=prep))
            return now_app.queue_id

        old = self.ctx.write(swap)
        self.fill_target = (0, 0)
        if old is not None and ready:
            self._drop_queue(old)

    def _insert_slice(self, conn: sa.Connection, qid: int, iset: int, part: Slice, start: int,
                      stop: int, length: int) -> None:
        """Write positions `[start, stop)` of queue `qid` (their rows in `part`)."""
        with pipeline(conn):  # nothing read back: one round trip on PostgreSQL
            insert_queue_positions(conn, qid, iset, part)
            cfg = self.ctx.cfg
            if cfg.shared:
                conn.execute(_MARK_DONE_SQL, {"qid": qid, "lo": start, "hi": stop,
                                              "app": self.ctx.app_id})
            elif cfg.overlap:
                conn.execute(_MARK_COMPLETE_SQL, {"qid": qid, "lo": start, "hi": stop,
                                                  "app": self.ctx.app_id,
                                                  "k": cfg.annotators_per_item})
            conn.execute(sa.update(queues_table).where(queues_table.c.id == qid).values(
                filled=stop, complete=stop >= length))

    def fill(self, app: sa.Row, stop: int, background: bool) -> bool:
        """Write the queue's next positions up to `stop`; False if nothing could be written."""
        start = int(app.filled or 0)
        try:
            ranking = self._ranking(SessionKey.parse(app.session_key))
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

        self.ctx.write(fill, background=background)
        return True

    def fill_step(self, app: sa.Row, background: bool) -> bool:
        qid, target = self.fill_target
        if app.complete or qid != app.queue_id or target <= (app.filled or 0):
            return False
        return self.fill(app, min(target, (app.filled or 0) + FILL_STEP), background)

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

            if not self.ctx.write(drop, background=True):
                return

    # ------------------------------------------------------------------ the item index
    def _ensure_iset(self, pool_key: str) -> int:
        t = itemsets_table

        def ensure(conn: sa.Connection) -> int:
            row = conn.execute(sa.select(t.c.id).where(t.c.app == self.ctx.app_id,
                                                       t.c.pool_key == pool_key)
                               .order_by(t.c.id.desc()).limit(1)).first()
            if row is not None:
                return int(row.id)
            return int(conn.execute(sa.insert(t).values(
                app=self.ctx.app_id, pool_key=pool_key, n=0, done=0, complete=False)
            ).inserted_primary_key[0])

        return self.ctx.write(ensure)

    def _iset_complete(self, iset: int) -> bool:
        t = itemsets_table
        with self.ctx.engine.connect() as conn:
            return bool(conn.execute(sa.select(t.c.complete).where(t.c.id == iset)).scalar())

    def _iset_size(self, iset: int) -> int:
        t = itemsets_table
        with self.ctx.engine.connect() as conn:
            return int(conn.execute(sa.select(t.c.n).where(t.c.id == iset)).scalar() or 0)

    def _index_ids(self, pool_key: str) -> list[str] | None:
        """The pool's ids in pool order once its index is complete (else None)."""
        t, it = itemsets_table, items_table
        with self.ctx.engine.connect() as conn:
            iset = conn.execute(sa.select(t.c.id).where(
                t.c.app == self.ctx.app_id, t.c.pool_key == pool_key, t.c.complete.is_(True))
                .order_by(t.c.id.desc()).limit(1)).scalar()
            if iset is None:
                return None
            return list(conn.execute(sa.select(it.c.item_id).where(it.c.iset == iset)
                                     .order_by(it.c.seq)).scalars())

    def _build_index(self, iset: int, heartbeat: Heartbeat) -> None:
        while self._index_chunk(iset, heartbeat):
            pass

    def index_step(self, app: sa.Row, heartbeat: Heartbeat) -> bool:
        if app.iset is None or app.iset_complete:
            return False
        return self._index_chunk(app.iset, heartbeat)

    def _index_chunk(self, iset: int, heartbeat: Heartbeat) -> bool:
        """Index the pool's next items (`INDEX_CHUNK` per transaction); False once complete."""
        t = itemsets_table
        with self.ctx.engine.connect() as conn:
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
                    apps_table.c.id == self.ctx.app_id, apps_table.c.iset == iset).values(
                    n_items=int(n), prep=None))
                return False
            ids, rows, n_read = piece
            if ids:
                conn.execute(_INSERT_ITEMS_SQL, [
                    {"iset": iset, "item_id": i, "seq": done + k, "row": r}
                    for k, (i, r) in enumerate(zip(ids, rows, strict=True))])
            conn.execute(sa.update(t).where(t.c.id == iset).values(done=done + n_read))
            heartbeat(conn)  # the builder's lease, renewed
            conn.execute(sa.update(apps_table).where(apps_table.c.id == self.ctx.app_id).values(
                prep={"what": "indexing the pool", "done": done + n_read, "total": total}))
            return True

        more = self.ctx.write(write, background=True)
        if piece is not None:
            state[0] = done + piece[2]
        if not more:
            self._index_iter = None
            self._after_index(iset)
        return more

    def _pool_total(self) -> int:
        app = self.ctx.read_app()
        return int(app.n_items or 0)

    def _pool_pieces(self, skip: int) -> Any:
        """The pool's (ids, rows) in pieces of `INDEX_CHUNK`, after the first `skip` rows.

        Why pieces this small even when reading: turning rows into JSON holds the GIL for the
        whole call, and annotators' requests in other threads wait for it meanwhile.
        """
        if self.ctx.dtype.from_folder:
            pieces = self.ctx.dtype.iter_items()
        else:
            schema = self.ctx.dtype.item_schema()
            chunks = self.ctx.dtype._pool().iter_chunks(chunksize=INDEX_CHUNK,
                                                    columns=[c["name"] for c in schema])
            pieces = (self.ctx.dtype._ids_and_lines(chunk, schema) for chunk in chunks)
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
        app = self.ctx.read_app()
        with self.ctx.engine.connect() as conn:
            queues = conn.execute(sa.select(queues_table.c.id).where(
                queues_table.c.app == self.ctx.app_id, queues_table.c.id != app.queue_id)
            ).scalars().all()
            isets = conn.execute(sa.select(itemsets_table.c.id).where(
                itemsets_table.c.app == self.ctx.app_id, itemsets_table.c.id != iset)
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

                if not self.ctx.write(drop, background=True):
                    break
        if self.ctx.engine.dialect.name == "sqlite":
            # A build writes a large WAL; fold it into the database now, in this background
            # thread, so the next annotator's commit doesn't pay for it. PASSIVE blocks nobody.
            with self.ctx.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

