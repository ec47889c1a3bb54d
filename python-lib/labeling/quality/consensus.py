"""The consensus of each answered item, kept up to date as answers come in.

A webapp with a `consensus_ds` keeps one row per answered item in that dataset (DESIGN,
"Datasets the plugin writes"): the item's id (the column named as the labels dataset names
its item: the webapp's `id_column`, `path` for folder items, else `id`), `label`,
`answers` (JSON text: `[{"annotator", "label"}]`, first answered first), `n_answers`,
`agreement` (the share of the answers equal to the consensus label), `source`
(`majority` | `reviewed`), `reviewer`, `comment` and `updated` (epoch seconds).

How the consensus label is chosen from the answers (skips are not answers):

- a whole-value kind (`choice`; multi-label answers are stored as the sorted set, one value):
  the label most answers gave; a tie (no majority) goes to the label answered first, whose
  agreement is then at most 0.5, so the item goes to the review queue;
- `spans`: the spans a strict majority of the answers contain (an answer is its set of
  `(start, end, label)`); agreement: the share of answers with exactly those spans.

A reviewer's label (`record_review`, source `reviewed`) is final: later answers update the
row's answers and agreement, never its label. The engine's state of it is the table
`lb_consensus` (made by the plugin's Alembic history, lb0006), which also keeps the dataset row
each item wrote, so a change is an UPDATE of that row: a label never rewrites the dataset.
Everything runs in the caller's write transaction (`ctx.write`): `refresh` in the answer's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from labelloop.project import pipeline, run

from ..store import LABELED, MAX_USER, _RowDataset, annotations_table

MAJORITY, REVIEWED, MODEL = "majority", "reviewed", "model"

metadata = sa.MetaData()
consensus_table = sa.Table(
    "lb_consensus", metadata,
    sa.Column("app", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("label", sa.Text),
    sa.Column("agreement", sa.Float),
    sa.Column("n_answers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("source", sa.String(10), nullable=False),
    sa.Column("reviewer", sa.String(MAX_USER)),
    sa.Column("comment", sa.Text),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("row", sa.Integer),  # the item's row in the consensus dataset
    sa.Index("ix_lb_consensus_open", "app", "source", "agreement"),
)


def item_column(cfg: Any) -> str:
    """The name of the item's id column in the consensus and label issues datasets."""
    return cfg.id_column or ("path" if cfg.from_folder else "id")


def dataset_schema(cfg: Any) -> list[dict]:
    """The consensus dataset's columns."""
    return [{"name": item_column(cfg), "type": "string"},
            {"name": "label", "type": "string"}, {"name": "answers", "type": "string"},
            {"name": "n_answers", "type": "bigint"}, {"name": "agreement", "type": "double"},
            {"name": "source", "type": "string"}, {"name": "reviewer", "type": "string"},
            {"name": "comment", "type": "string"}, {"name": "updated", "type": "double"}]


def combine(kind: Any, stored: Sequence[str]) -> tuple[str, float]:
    """The consensus label of stored answers (first answered first) and its agreement."""
    n = len(stored)
    if not n:
        raise ValueError("no answers to combine")
    if kind.name == "spans":
        from ..kinds.spans import dumps

        sets = [{(int(s["start"]), int(s["end"]), str(s["label"])) for s in json.loads(a)}
                for a in stored]
        counts = Counter(part for parts in sets for part in parts)
        label = dumps([{"start": a, "end": b, "label": t}
                       for (a, b, t), c in counts.items() if 2 * c > n])
    else:
        counts = Counter(stored)
        first = {}
        for i, a in enumerate(stored):
            first.setdefault(a, i)
        label = max(counts, key=lambda a: (counts[a], -first[a]))
    return label, sum(a == label for a in stored) / n


# The answer's hot path uses prebuilt statements (building Core statements per call costs
# more than running them: see labeling.store).
_STATE_COLS = "label, agreement, n_answers, source, reviewer, comment, updated, row"
_ANSWERS_OF_ITEM_SQL = sa.text(
    "SELECT annotator, label FROM lb_annotations WHERE item_id = :item_id AND app = :app "
    "AND status = :labeled AND owner NOT LIKE '~%' ORDER BY label_id")
_STATE_SQL = sa.text(f"SELECT {_STATE_COLS} FROM lb_consensus WHERE app = :app AND "
                     "item_id = :item_id")
_INSERT_STATE_SQL = sa.text(
    f"INSERT INTO lb_consensus (app, item_id, {_STATE_COLS}) VALUES (:app, :item_id, :label, "
    ":agreement, :n_answers, :source, :reviewer, :comment, :updated, :row)")
_UPDATE_STATE_SQL = sa.text(
    "UPDATE lb_consensus SET label = :label, agreement = :agreement, n_answers = :n_answers, "
    "source = :source, reviewer = :reviewer, comment = :comment, updated = :updated, "
    "row = :row WHERE app = :app AND item_id = :item_id")
_DELETE_STATE_SQL = sa.text("DELETE FROM lb_consensus WHERE app = :app AND item_id = :item_id")


def _item(ctx: Any, conn: sa.Connection, item_id: str, table: _RowDataset
          ) -> tuple[list[tuple], Any]:
    """One item's current answers `(annotator, stored)` and its `lb_consensus` row (or None),
    in one round trip on PostgreSQL, with the consensus dataset marked as changed."""
    key = {"app": ctx.app_id, "item_id": item_id}
    with pipeline(conn) as sent:
        table.ds.touch(conn)  # sent with the reads, not as a round trip of the row write
        got = sent.read(_ANSWERS_OF_ITEM_SQL, {**key, "labeled": LABELED})
        state = sent.read(_STATE_SQL, key)
    rows = state()
    return [(r[0], r[1]) for r in got()], (rows[0] if rows else None)


def answers(ctx: Any, conn: sa.Connection, ids: Sequence[str]) -> dict[str, list[tuple]]:
    """Each item's current answers `(annotator, stored)`, first answered first (an answer
    someone else's relabeling replaced, owner `~<label id>`, is history, not an answer)."""
    an = annotations_table
    rows = conn.execute(
        sa.select(an.c.item_id, an.c.annotator, an.c.label)
        .where(an.c.item_id.in_(ids), an.c.app == ctx.app_id, an.c.status == LABELED,
               ~an.c.owner.startswith("~"))
        .order_by(an.c.label_id)).all()
    out: dict[str, list[tuple]] = {}
    for r in rows:
        out.setdefault(r.item_id, []).append((r.annotator, r.label))
    return out


def read(ctx: Any, conn: sa.Connection, item_ids: Iterable[str]) -> dict[str, sa.Row]:
    """The `lb_consensus` rows of those items (item id -> row; none for an item without)."""
    ids = list(dict.fromkeys(item_ids))
    if not ids:
        return {}
    c = consensus_table
    rows = conn.execute(sa.select(c).where(c.c.app == ctx.app_id, c.c.item_id.in_(ids))).all()
    return {r.item_id: r for r in rows}


def _dataset(ctx: Any) -> _RowDataset:
    cfg = ctx.cfg
    return _RowDataset(ctx.project.dataset(cfg.consensus_ds, create=True),
                       dataset_schema(cfg), item_column(cfg))


def _answers_json(ctx: Any, answers: list[tuple]) -> str:
    return json.dumps([{"annotator": a, "label": ctx.kind.value(s)} for a, s in answers],
                      ensure_ascii=False)


def _put(ctx: Any, conn: sa.Connection, table: _RowDataset, item_id: str, old: Any,
         values: dict) -> None:
    """Write an item's consensus: its `lb_consensus` row and its dataset row."""
    row = None if old is None else old.row
    if row is None or not table.update(conn, row, item_id, values):
        row = table.insert(conn, values, item_id)
    state = {k: values[k] for k in ("label", "agreement", "n_answers", "source", "reviewer",
                                    "comment", "updated")}
    run(conn, _INSERT_STATE_SQL if old is None else _UPDATE_STATE_SQL,
        {"app": ctx.app_id, "item_id": item_id, "row": row, **state})


def refresh(ctx: Any, conn: sa.Connection, item_ids: Iterable[str]) -> None:
    """Recompute the consensus of those items from their answers, in the caller's write
    transaction (nothing when the webapp has no `consensus_ds`). A reviewed label stays."""
    if not ctx.cfg.consensus_ds:
        return
    ids = list(dict.fromkeys(item_ids))
    if not ids:
        return
    table = _dataset(ctx)
    now = ctx.now()
    for item_id in ids:
        got, old = _item(ctx, conn, item_id, table)
        stored = [s for _a, s in got]
        if old is not None and old.source == REVIEWED:
            label, source, reviewer, comment = old.label, REVIEWED, old.reviewer, old.comment
            agreement = sum(s == label for s in stored) / len(stored) if stored else None
        elif not stored:  # its answers were changed to skips
            if old is not None:
                if old.row is not None:
                    table.delete(conn, old.row, item_id)
                run(conn, _DELETE_STATE_SQL, {"app": ctx.app_id, "item_id": item_id})
            continue
        else:
            label, agreement = combine(ctx.kind, stored)
            source, reviewer, comment = MAJORITY, None, None
        _put(ctx, conn, table, item_id, old, {
            "label": label, "answers": _answers_json(ctx, got), "n_answers": len(got),
            "agreement": agreement, "source": source, "reviewer": reviewer,
            "comment": comment, "updated": now})


def record_review(ctx: Any, conn: sa.Connection, item_id: str, label: str, reviewer: str,
                  comment: str | None) -> dict:
    """Make a reviewer's label the item's consensus (source `reviewed`), in the caller's
    write transaction; `label` as the kind stores it (`kind.check`'s value). The row as the
    API shows it."""
    table = _dataset(ctx)
    got, old = _item(ctx, conn, item_id, table)
    stored = [s for _a, s in got]
    values = {"label": label, "answers": _answers_json(ctx, got), "n_answers": len(got),
              "agreement": sum(s == label for s in stored) / len(stored) if stored else None,
              "source": REVIEWED, "reviewer": reviewer, "comment": comment or None,
              "updated": ctx.now()}
    _put(ctx, conn, table, item_id, old, values)
    return {"id": item_id, **values, "label": ctx.kind.value(label),
            "answers": json.loads(values["answers"])}


__all__: Sequence[str] = ("MAJORITY", "MODEL", "REVIEWED", "answers", "combine", "consensus_table",
                          "dataset_schema", "item_column", "read", "record_review", "refresh")
