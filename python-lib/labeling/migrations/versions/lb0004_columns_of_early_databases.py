"""Columns and indexes that a database made by the engine before 2026-11-25 may lack.

Revision ID: lb0004
Revises: lb0003
Create Date: 2026-12-06

Before: the engine itself added them when it opened such a database (`create_tables` in
`labeling.store`: an ALTER TABLE ... ADD COLUMN per missing column, then each missing index),
beside this history. After: this revision does it, and the engine never changes a table.
What it adds had been in the tables since the build-then-swap queue (commit 8659277): the
state of a build (`lb_apps.prep`), how far an item index or a queue was written (`done`,
`filled`, `complete`), the model version and row of a queue position, and the queue's and
item index's lookup indexes. A database made since then has them all: nothing runs.

A column that must not be NULL is added with a default (the old rows then read "nothing
written yet", which makes the engine build that item index or queue again).
"""

import sqlalchemy as sa
from alembic import op

revision = "lb0004"
down_revision = "lb0003"
branch_labels = None
depends_on = None

COLUMNS = {
    "lb_apps": [sa.Column("prep", sa.JSON)],
    "lb_itemsets": [sa.Column("done", sa.Integer, nullable=False, server_default="0"),
                    sa.Column("complete", sa.Boolean, nullable=False,
                              server_default=sa.false())],
    "lb_queues": [sa.Column("filled", sa.Integer, nullable=False, server_default="0"),
                  sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.false())],
    "lb_queue": [sa.Column("model_version", sa.Text), sa.Column("row", sa.Text)],
}
# table: [(name, columns, unique)]
INDEXES = {
    "lb_items": [("ix_lb_items_seq", ["iset", "seq"], False)],
    "lb_queue": [("ix_lb_queue_pending", ["qid", "state", "pos"], False),
                 ("ux_lb_queue_item", ["qid", "item_id"], True)],
}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, columns in COLUMNS.items():
        if not inspector.has_table(table):
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        for column in columns:
            if column.name not in have:
                op.add_column(table, column)
    for table, indexes in INDEXES.items():
        if not inspector.has_table(table):
            continue
        have = {i["name"] for i in inspector.get_indexes(table)}
        for name, columns, unique in indexes:
            if name not in have:
                op.create_index(name, table, columns, unique=unique)


def downgrade() -> None:
    # Nothing to undo: every database at lb0003 or later keeps these columns and indexes.
    pass
