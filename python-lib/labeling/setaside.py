"""Folder items that cannot be shown are set aside, so one bad file never blocks the queue.

At batch time every folder item about to be served is checked: its path must stay inside the
folder (no link leading out of it), the file must be readable, and an image must decode (its
header is read). An item that fails is recorded in `lb_setaside` (app, item, reason, when),
leaves the queue (shared labels: its queue state becomes SET_ASIDE) and loses its reservation;
the batch is filled with the next items instead. `stats` and `config` carry a warning with the
count and the first reasons. Fix the file and rebuild the item set (or delete the row) to
bring it back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from labelloop.errors import LabelloopError

log = logging.getLogger(__name__)

SET_ASIDE = 2  # lb_queue.state of an item that cannot be shown (0 pending, 1 annotated)
MAX_ROUNDS = 20  # batch queries per request when items keep being set aside

metadata = sa.MetaData()

setaside_table = sa.Table(
    "lb_setaside", metadata,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
)

_INSERT_SQL = sa.text(
    "INSERT INTO lb_setaside (app, item_id, reason, since) VALUES (:app, :item_id, :reason, "
    ":since) ON CONFLICT (app, item_id) DO UPDATE SET reason = excluded.reason, "
    "since = excluded.since")
_STATE_SQL = sa.text("UPDATE lb_queue SET state = :state WHERE qid = :qid AND item_id = :item_id "
                     "AND state = 0")
_UNRESERVE_SQL = sa.text("DELETE FROM lb_reservations WHERE app = :app AND item_id = :item_id")


class SetAside:
    """Sets aside the folder items of a webapp that cannot be shown: a collaborator of
    `labeling.engine.LabelingEngine` (`ctx`: the engine's shared context)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def problem(self, item_id: str) -> str | None:
        """Why a folder item cannot be shown, or None when it can."""
        cfg = self.ctx.cfg
        try:
            folder = self.ctx.project.folder(cfg.unlabeled)
            path = folder.resolve(item_id)  # refuses a path or link leading out of the folder
        except LabelloopError as exc:
            return str(exc)
        try:
            with open(path, "rb") as f:
                head = f.read(64 * 1024)
        except FileNotFoundError:
            return f"file {item_id!r} is gone from folder {cfg.unlabeled!r}"
        except OSError as exc:
            return f"file {item_id!r} cannot be read: {exc.strerror or exc}"
        if cfg.data_type == "image":
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as img:
                    img.size  # noqa: B018 - the header is parsed here
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                return f"image {item_id!r} cannot be decoded: {exc}"
        elif cfg.data_type == "sound" and item_id.lower().endswith(".wav") \
                and not (head[:4] == b"RIFF" and head[8:12] == b"WAVE"):
            return f"sound {item_id!r} is not a WAV file"
        return None

    def screened(self, conn: sa.Connection, qid: int | None, size: int,
                 query: Callable[[int], Sequence[sa.Row]]) -> list[sa.Row]:
        """`query(limit)` (at most `size + 1` rows wanted) without the items that cannot be
        shown; those are set aside (recorded, out of the queue, reservation ended) and
        replaced."""
        if not self.ctx.cfg.from_folder:
            return list(query(size + 1))
        known = {r.item_id for r in conn.execute(sa.select(setaside_table.c.item_id).where(
            setaside_table.c.app == self.ctx.app_id))}
        limit = size + 1
        for _ in range(MAX_ROUNDS):
            rows = list(query(limit))
            good, bad = [], 0
            for row in rows:
                if row.item_id in known:
                    bad += 1
                    continue
                reason = self.problem(row.item_id)
                if reason is None:
                    good.append(row)
                    if len(good) > size:
                        break
                    continue
                bad += 1
                known.add(row.item_id)
                self._set_aside(conn, qid, row.item_id, reason)
            if not bad or len(rows) < limit or len(good) > size:
                return good[:size + 1]
            limit += bad
        return good[:size + 1]

    def _set_aside(self, conn: sa.Connection, qid: int | None, item_id: str,
                   reason: str) -> None:
        app = self.ctx.app_id
        log.warning("webapp %s: item %r set aside: %s", self.ctx.cfg.webapp, item_id, reason)
        conn.execute(_INSERT_SQL, {"app": app, "item_id": item_id, "reason": reason,
                                   "since": time.time()})
        if qid is not None:
            conn.execute(_STATE_SQL, {"state": SET_ASIDE, "qid": qid, "item_id": item_id})
        conn.execute(_UNRESERVE_SQL, {"app": app, "item_id": item_id})

    def summary(self, conn: sa.Connection, limit: int = 3) -> dict:
        """`{"set_aside": n, "warnings": [...]}` for stats and config."""
        t, app = setaside_table, self.ctx.app_id
        n = conn.execute(sa.select(sa.func.count()).select_from(t)
                         .where(t.c.app == app)).scalar() or 0
        if not n:
            return {"set_aside": 0, "warnings": []}
        rows = conn.execute(sa.select(t.c.item_id, t.c.reason, t.c.since).where(t.c.app == app)
                            .order_by(t.c.since.desc()).limit(limit)).all()
        first = "; ".join(r.reason for r in rows)
        when = dt.datetime.fromtimestamp(rows[0].since, dt.UTC).isoformat(timespec="seconds")
        return {"set_aside": int(n), "warnings": [
            f"{n} item{'s' if n != 1 else ''} of folder {self.ctx.cfg.unlabeled!r} set aside "
            f"because they cannot be shown (last at {when}): {first}"
            f"{' ...' if n > limit else ''}. Fix the files; the other items are served "
            "meanwhile."]}
