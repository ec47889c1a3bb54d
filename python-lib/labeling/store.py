"""The labeling engine's tables, its SQL statements and the row writer of its output datasets.

State lives in the project's database (no in-memory state a second server process would
need), in the engine's own tables:

- `lb_apps`: one row per webapp instance: its current item index and queue, the session key
  the queue was built for, what is being prepared (`prep`, for the page).
- `lb_builder_leases`: the builder lease of each webapp instance (one builder at a time
  across processes), held with the host's `labelloop.project.Lease` like a scenario lock:
  owner `host:pid:token` and a heartbeat, so a lease whose owner died is taken over at once.
- `lb_itemsets` / `lb_items`: the pool indexed by item id, with each item's row (JSON);
  built in the background, in small transactions, when the pool changes.
- `lb_queues` / `lb_queue`: the order of one session, materialized from its head on: `pos`,
  `item_id`, `state` (0 pending, 1 annotated: shared mode), the scores, the item's row.
  Only the positions annotators are about to reach are written (`filled`), a few thousand
  at a time (see `labeling.queue`), so a new order of a million items is served within a
  second. A batch is an indexed range query on `(qid, state, pos)`.
- `lb_reservations`: (item, annotator) -> expiry (epoch seconds). With overlap
  (`annotators_per_item` k > 1) up to k annotators hold an item at once, less those who
  already labeled it; otherwise one.
- `lb_item_answers`: overlap (k > 1): how many annotators labeled each item (skips do not
  count), updated in the answer's transaction; an item leaves the queue (state 1) at k.
- `lb_annotations`: one row per (item, owner) annotation; `label_id` is an AUTOINCREMENT
  key, so label ids grow and are never reused, across processes. `owner` is `""` with shared
  labels, the annotator with per-annotator labels and with overlap. Keeps the rows it wrote in the labels and
  metadata datasets, so a change is an UPDATE of those rows.
- `lb_counts`: the stats counters, updated in the label's transaction (overlap: each
  annotator's own, and the items partly answered and complete under owner `""`).
- `lb_cursors`: per-annotator mode, the position before which an annotator has answered all.
- `lb_consensus`: each answered item's consensus and its row in the consensus dataset;
  defined and written by `labeling.quality.consensus` (in the answer's transaction).

The tables are made and changed by the plugin's Alembic history alone (`labeling.migrations`,
brought to head by the host: see README, "Schema migrations"); these definitions must match
its head (`tests/test_migrations.py`).

Written by `labeling.build` (queues, the item index), `labeling.annotate` (answers) and
`labeling.engine` (batches, reservations).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import sqlalchemy as sa

from labelloop.errors import ConflictError, NotFoundError
from labelloop.project import run

log = logging.getLogger("labeling.engine")

LABELED, SKIPPED = "LABELED", "SKIPPED"
# The width of the user-name columns (the accepted names are shorter: the host's rule,
# `labelloop.web.check_user_name`). Kept as it was: a narrower column is a schema change.
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
    sa.Column("build_error", sa.Text),
    sa.Column("prep", sa.JSON),  # what is being prepared: {"what", "done", "total"}
)
# The columns `labelloop.project.Lease` needs (owner, acquired, expires) + the key.
builder_leases_table = sa.Table(
    "lb_builder_leases", metadata,
    sa.Column("app", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(300), nullable=False),  # host:pid:token
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
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
    # In the key since lb0005: with overlap several annotators hold one item.
    sa.Column("annotator", sa.String(MAX_USER), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
    # Annotator first (migration lb0003): the primary key is the only index led by `app`.
    sa.Index("ix_lb_reservations_user", "annotator", "app"),
)
item_answers_table = sa.Table(
    "lb_item_answers", metadata,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),  # annotators whose answer is a label
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
    sa.Index("ix_lb_annotations_user", "annotator", "app", "label_id"),
    sa.Index("ix_lb_annotations_item", "item_id", "app"),  # an item's answers (consensus)
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

# ON CONFLICT ... DO UPDATE: SQLite >= 3.24 and PostgreSQL share this syntax.
@functools.cache
def reserve_sql(n: int) -> sa.TextClause:
    """Reserve `n` items for one annotator until a time, in one statement (one round trip,
    not an executemany); a reservation the annotator had is extended. Parameters `app`,
    `annotator`, `until` and `item0`, `item1`... (distinct items). The batch queries serve an
    item only while others hold fewer than allowed: an expired reservation of someone else
    counts for nothing and goes when the item is answered."""
    rows = ", ".join(f"(:app, :item{i}, :annotator, :until)" for i in range(n))
    return sa.text(f"INSERT INTO lb_reservations (app, item_id, annotator, until) VALUES {rows} "
                   "ON CONFLICT (app, item_id, annotator) DO UPDATE SET until = excluded.until")


# Renewed once half their time is gone, not on every answer. Why: rewriting all the items an
# annotator holds on each answer (up to 50 rows) left PostgreSQL thousands of dead row
# versions a minute that every reservation probe of a batch stepped over until autovacuum
# came: with 32 annotators, batches slowed from 5 to 30-90 ms within a minute.
_RENEW_SQL = sa.text("UPDATE lb_reservations SET until = :until WHERE app = :app AND "
                     "annotator = :user AND until > :now AND until < :stale")
_HELD_SQL = sa.text("SELECT count(*) FROM lb_reservations WHERE app = :app AND "
                    "annotator = :user AND until > :now")

# A counter's delta added to it (the row made on first use); `count_sql` for several at once.
_COUNT_UPSERT = "ON CONFLICT (app, owner, key) DO UPDATE SET n = lb_counts.n + excluded.n"
_COUNT_SQL = sa.text(
    f"INSERT INTO lb_counts (app, owner, key, n) VALUES (:app, :owner, :key, :n) {_COUNT_UPSERT}")
_ITEM_COLS = ("q.pos, q.item_id, q.uncertainty, q.prediction, q.confidence, q.halting, "
              "q.model_version, q.row")
# Why a correlated subquery per candidate, not a join: PostgreSQL plans a join with the
# reservations table's statistics, and before autovacuum first analyzes it (a new project, a
# busy first minute) it guesses one row and may scan every reservation once per queue row:
# 30-120 ms per batch with 32 annotators holding 20 items each. A scalar subquery runs as one
# probe of the primary key (app, item_id, ...) per row the LIMIT reads, with or without
# statistics. LIMIT 1: two processes may reserve one item at the same moment.
_SHARED_BATCH_SQL = sa.text(
    f"SELECT {_ITEM_COLS}, COALESCE((SELECT 1 FROM lb_reservations r WHERE r.app = :app AND "
    "r.item_id = q.item_id AND r.annotator = :user AND r.until > :now), 0) AS mine "
    "FROM lb_queue q WHERE q.qid = :qid AND q.state = 0 AND (SELECT 1 FROM lb_reservations r "
    "WHERE r.app = :app AND r.item_id = q.item_id AND r.until > :now AND r.annotator <> :user "
    "LIMIT 1) IS NULL ORDER BY q.pos LIMIT :limit")
# Overlap (k > 1): a position is served to the caller while it is pending (fewer than k
# labels), the caller has no answer for it, and its labels plus the live reservations of others
# are fewer than k: the k annotators get it in parallel, and no more. Each condition is a probe
# of a primary or unique key, for the reason above.
_OVERLAP_BATCH_SQL = sa.text(
    f"SELECT {_ITEM_COLS}, COALESCE((SELECT 1 FROM lb_reservations r WHERE r.app = :app AND "
    "r.item_id = q.item_id AND r.annotator = :user AND r.until > :now), 0) AS mine "
    "FROM lb_queue q WHERE q.qid = :qid AND q.state = 0 AND (SELECT 1 FROM lb_annotations a "
    "WHERE a.app = :app AND a.owner = :user AND a.item_id = q.item_id) IS NULL AND "
    "COALESCE((SELECT c.n FROM lb_item_answers c WHERE c.app = :app AND "
    "c.item_id = q.item_id), 0) + (SELECT count(*) FROM lb_reservations r WHERE r.app = :app "
    "AND r.item_id = q.item_id AND r.until > :now AND r.annotator <> :user) < :k "
    "ORDER BY q.pos LIMIT :limit")
# Overlap: whether the caller may still get something (a pending position they did not answer).
_OVERLAP_PENDING_SQL = sa.text(
    "SELECT 1 FROM lb_queue q WHERE q.qid = :qid AND q.state = 0 AND (SELECT 1 FROM "
    "lb_annotations a WHERE a.app = :app AND a.owner = :user AND a.item_id = q.item_id) IS NULL "
    "LIMIT 1")
# Overlap: the labels of an item changed by `d` (+1, -1): its count after.
_ITEM_ANSWERS_SQL = sa.text(
    "INSERT INTO lb_item_answers (app, item_id, n) VALUES (:app, :item_id, :d) "
    "ON CONFLICT (app, item_id) DO UPDATE SET n = lb_item_answers.n + excluded.n RETURNING n")
# Overlap: an item back in the queue (a label changed to a skip left it under k labels).
_UNDONE_SQL = sa.text(
    "UPDATE lb_queue SET state = 0 WHERE qid = :qid AND item_id = :item_id AND state = 1")
_UNRESERVE_MINE_SQL = sa.text(
    "DELETE FROM lb_reservations WHERE app = :app AND item_id = :item_id AND "
    "annotator = :user")
# Overlap: the caller's counters with the team's (`overlap:*` under owner "").
OVERLAP_KEYS = ("overlap:partial", "overlap:complete")
_OVERLAP_COUNTS_SQL = sa.text(
    "SELECT key, n FROM lb_counts WHERE app = :app AND (owner = :owner OR (owner = '' AND "
    "key IN ('overlap:partial', 'overlap:complete')))")
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
# A scalar subquery, not EXISTS, for the reason of `_SHARED_BATCH_SQL`: without statistics
# PostgreSQL ran the EXISTS as a join that read every annotation once per position (1.7 s for
# 2,000 positions and 2,400 answers, against 36 ms probing the unique key).
_MARK_DONE_SQL = sa.text(
    "UPDATE lb_queue SET state = 1 WHERE qid = :qid AND pos >= :lo AND pos < :hi AND "
    "(SELECT 1 FROM lb_annotations a WHERE a.app = :app AND a.owner = '' "
    "AND a.item_id = lb_queue.item_id) IS NOT NULL")
# Overlap: the positions written for a new queue that k annotators labeled already.
_MARK_COMPLETE_SQL = sa.text(
    "UPDATE lb_queue SET state = 1 WHERE qid = :qid AND pos >= :lo AND pos < :hi AND "
    "(SELECT c.n FROM lb_item_answers c WHERE c.app = :app AND c.item_id = lb_queue.item_id) "
    ">= :k")
_INSERT_ITEMS_SQL = sa.text(
    "INSERT INTO lb_items (iset, item_id, seq, row) VALUES (:iset, :item_id, :seq, :row) "
    "ON CONFLICT DO NOTHING")
# PostgreSQL: a slice of queue positions in one statement, its columns sent as arrays. Why: an
# executemany is one statement per row for the server and about 30 us of Python each on the
# writer thread: a fill step of 100 positions held the writer 4-24 ms (2 ms as arrays), and
# labels waited behind it. The item's row by a scalar subquery (one probe of the index's key
# per position), not a join: without statistics PostgreSQL hashed the whole item index
# (100,000 rows, 30-45 ms) for each 100 positions.
_INSERT_QUEUE_ARRAYS_SQL = sa.text(
    "INSERT INTO lb_queue (qid, pos, item_id, state, uncertainty, prediction, confidence, "
    "halting, model_version, row) SELECT CAST(:qid AS INTEGER), v.pos, v.item_id, 0, v.unc, "
    "v.pred, v.conf, v.halt, v.ver, v.row FROM (SELECT u.pos, u.item_id, u.unc, u.pred, "
    "u.conf, u.halt, u.ver, COALESCE(u.row, (SELECT i.row FROM lb_items i WHERE "
    "i.iset = CAST(:iset AS INTEGER) AND i.item_id = u.item_id)) AS row "
    "FROM unnest(CAST(:pos AS INTEGER[]), CAST(:item_id AS TEXT[]), "
    "CAST(:unc AS DOUBLE PRECISION[]), CAST(:pred AS TEXT[]), "
    "CAST(:conf AS DOUBLE PRECISION[]), CAST(:halt AS DOUBLE PRECISION[]), "
    "CAST(:ver AS TEXT[]), CAST(:row AS TEXT[])) AS u(pos, item_id, unc, pred, conf, halt, ver, "
    "row) OFFSET 0) v WHERE v.row IS NOT NULL ON CONFLICT DO NOTHING")


def insert_queue_positions(conn: sa.Connection, qid: int, iset: int | None, part: Any) -> None:
    """Write the positions of `part` (a `queue.Slice`) into queue `qid`; a position without
    its own row takes the item's row from item index `iset` (none there: not written)."""
    if not len(part):
        return
    if conn.dialect.name == "postgresql":
        run(conn, _INSERT_QUEUE_ARRAYS_SQL, {
            "qid": qid, "iset": iset, "pos": part.positions, "item_id": part.ids,
            "unc": part.uncertainty, "pred": part.prediction, "conf": part.confidence,
            "halt": part.halting, "ver": part.model_version, "row": part.rows})
        return
    own, indexed = [], []
    for rec in part.records(qid):
        args = {"qid": qid, "pos": rec[1], "item_id": rec[2], "unc": rec[3], "pred": rec[4],
                "conf": rec[5], "halt": rec[6], "ver": rec[7], "row": rec[8]}
        (own if rec[8] is not None else indexed).append(args)
    if own:
        conn.execute(_INSERT_QUEUE_SQL, own)
    if indexed:
        conn.execute(_INSERT_QUEUE_FROM_INDEX_SQL, [{**a, "iset": iset} for a in indexed])


# The hot paths (label, batch) use prebuilt statements: building Core statements per call
# costs more than running them.
_APP_COLS = ("a.id, a.iset, a.n_items, a.queue_id, a.session_key, a.build_error, a.prep, "
             "q.session AS q_session, q.filled, q.complete, q.n AS q_n, q.info AS q_info, "
             "s.complete AS iset_complete, s.pool_key ")
_APP_FROM = ("FROM lb_apps a LEFT JOIN lb_queues q ON q.id = a.queue_id "
             "LEFT JOIN lb_itemsets s ON s.id = a.iset ")
_APP_SQL = sa.text(f"SELECT {_APP_COLS}{_APP_FROM}WHERE a.id = :id").columns(
    prep=sa.JSON, q_info=sa.JSON)
# A label's first read, in one round trip: the app (as `_APP_SQL`), the item's row in the
# queue being served (`q_pos` NULL when that queue has no such item, or there is none) and the
# caller's earlier annotation (`label_id` NULL when none).
_ANSWER_COLS = ("qi.pos AS q_pos, qi.row AS q_row, an.label_id, an.status, an.label, "
                "an.labels_row, an.meta_row ")
_ANSWER_FROM = ("LEFT JOIN lb_queue qi ON qi.qid = a.queue_id AND qi.item_id = :item_id "
                "LEFT JOIN lb_annotations an ON an.app = a.id AND an.owner = :owner "
                "AND an.item_id = :item_id WHERE a.id = :app")
_APP_AND_ANSWER_SQL = sa.text(
    f"SELECT {_APP_COLS}, {_ANSWER_COLS}{_APP_FROM}{_ANSWER_FROM}").columns(
    prep=sa.JSON, q_info=sa.JSON)
# PostgreSQL: the same, with the id a new annotation will get (`next_id`, taken from its
# sequence whether used or not), so the annotation and its labels and metadata rows go to
# the database together (`_INSERT_ANNOTATION_ID_SQL`, one round trip).
_APP_AND_ANSWER_NEXT_SQL = sa.text(
    f"SELECT {_APP_COLS}, {_ANSWER_COLS}, "
    "nextval(pg_get_serial_sequence('lb_annotations', 'label_id')) AS next_id "
    f"{_APP_FROM}{_ANSWER_FROM}").columns(prep=sa.JSON, q_info=sa.JSON)
_ITEM_SQL = sa.text("SELECT row FROM lb_items WHERE iset = :iset AND item_id = :item_id")
_ANY_QUEUE_ROW_SQL = sa.text(
    "SELECT q.row FROM lb_queue q JOIN lb_queues s ON s.id = q.qid WHERE s.app = :app "
    "AND q.item_id = :item_id AND q.row IS NOT NULL LIMIT 1")
_INSERT_ANNOTATION_SQL = sa.text(
    "INSERT INTO lb_annotations (app, item_id, owner, annotator, status, label, comment, "
    "session, created, updated) VALUES (:app, :item_id, :owner, :annotator, :status, :label, "
    ":comment, :session, :now, :now) RETURNING label_id")
_INSERT_ANNOTATION_ID_SQL = sa.text(
    "INSERT INTO lb_annotations (label_id, app, item_id, owner, annotator, status, label, "
    "comment, session, created, updated) VALUES (:label_id, :app, :item_id, :owner, "
    ":annotator, :status, :label, :comment, :session, :now, :now)")
_UPDATE_ANNOTATION_SQL = sa.text(
    "UPDATE lb_annotations SET annotator = :annotator, status = :status, label = :label, "
    "comment = :comment, session = :session, updated = :now, labels_row = :labels_row, "
    "meta_row = :meta_row WHERE label_id = :label_id")
_DONE_SQL = sa.text("UPDATE lb_queue SET state = 1 WHERE qid = :qid AND item_id = :item_id")
_UNRESERVE_SQL = sa.text("DELETE FROM lb_reservations WHERE app = :app AND item_id = :item_id")
_COUNTS_SQL = sa.text("SELECT key, n FROM lb_counts WHERE app = :app AND owner = :owner")
@functools.cache
def count_sql(n: int) -> sa.TextClause:
    """`_COUNT_SQL` for `n` counters in one statement (one round trip, not an executemany);
    parameters `app`, `owner` and `key0`, `n0`, `key1`, `n1`... (distinct keys)."""
    rows = ", ".join(f"(:app, :owner, :key{i}, :n{i})" for i in range(n))
    return sa.text(f"INSERT INTO lb_counts (app, owner, key, n) VALUES {rows} {_COUNT_UPSERT}")


def count_params(app: int, owner: str, deltas: dict[str, int]) -> dict:
    """The parameters of `count_sql(len(deltas))`."""
    params: dict[str, Any] = {"app": app, "owner": owner}
    for i, (k, n) in enumerate(deltas.items()):
        params[f"key{i}"] = k
        params[f"n{i}"] = n
    return params


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

    def inserter(self, conn: sa.Connection, label_id: int
                 ) -> Callable[[dict], Callable[[], int]]:
        """`insert` in two steps (the host's `Dataset.inserter`): call it before a
        `pipeline` block; inside, the function it returns sends the row."""
        send = self._call(conn, "inserter")
        return lambda values: send({**values, self.lid_col: label_id})

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


_DTYPES = {"string": object, "bigint": "int64", "double": "float64", "boolean": bool,
           "date": "datetime64[ns, UTC]"}
