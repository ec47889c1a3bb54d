"""Overlap (`annotators_per_item`): several annotators hold one item; labels counted per item.

Revision ID: lb0005
Revises: lb0004
Create Date: 2026-12-06

Before: `lb_reservations` was keyed by (app, item_id): one annotator held an item. After: by
(app, item_id, annotator), so up to k annotators hold it in parallel; the rows are kept. New:
`lb_item_answers` (app, item_id, n), how many annotators labeled an item of a webapp with
overlap (the queue keeps an item until n reaches k).

SQLite cannot change a primary key in place: the table is copied into one with the new key.
"""

import sqlalchemy as sa
from alembic import op

revision = "lb0005"
down_revision = "lb0004"
branch_labels = None
depends_on = None

_COLS = "app, item_id, annotator, until"


def _reservations(name: str, key: list[str]) -> None:
    op.create_table(
        name,
        sa.Column("app", sa.Integer, nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("annotator", sa.String(200), nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )


def _rekey(key: list[str]) -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("lb_reservations"):
        return
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE lb_reservations DROP CONSTRAINT lb_reservations_pkey")
        if len(key) == 2:  # down: one holder per item, the latest
            op.execute("DELETE FROM lb_reservations r USING lb_reservations o WHERE "
                       "o.app = r.app AND o.item_id = r.item_id AND (o.until > r.until OR "
                       "(o.until = r.until AND o.annotator > r.annotator))")
        op.execute(f"ALTER TABLE lb_reservations ADD PRIMARY KEY ({', '.join(key)})")
        return
    _reservations("lb_reservations_new", key)
    op.execute(f"INSERT OR REPLACE INTO lb_reservations_new ({_COLS}) SELECT {_COLS} "
               "FROM lb_reservations ORDER BY until")
    op.drop_table("lb_reservations")  # its index too
    op.rename_table("lb_reservations_new", "lb_reservations")
    op.create_index("ix_lb_reservations_user", "lb_reservations", ["annotator", "app"])


def upgrade() -> None:
    _rekey(["app", "item_id", "annotator"])
    if not sa.inspect(op.get_bind()).has_table("lb_item_answers"):
        op.create_table(
            "lb_item_answers",
            sa.Column("app", sa.Integer, nullable=False),
            sa.Column("item_id", sa.Text, nullable=False),
            sa.Column("n", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint("app", "item_id"),
        )


def downgrade() -> None:
    op.drop_table("lb_item_answers")
    _rekey(["app", "item_id"])
