"""The consensus of each answered item, and the annotations of one item found by its id.

Revision ID: lb0006
Revises: lb0005
Create Date: 2026-12-06

`lb_consensus`: one row per (webapp, item) with an answer: the consensus label, its agreement,
how many answers, its source (`majority` or `reviewed`), the reviewer and comment, and the row
it wrote in the webapp's consensus dataset (so a change is an UPDATE of that row). Kept by
`labeling.quality.consensus` in the answer's transaction; the review queue reads it.

`ix_lb_annotations_item (item_id, app)`: every answer of one item (the consensus recomputed
at each answer). Led by the item id, not by `app`, for the reason lb0003 gives.

Each step looks first, like lb0004's: a database that already has a part keeps it.
"""

import sqlalchemy as sa
from alembic import op

revision = "lb0006"
down_revision = "lb0005"
branch_labels = None
depends_on = None


def _indexes(inspector: sa.Inspector, table: str) -> set[str]:
    return {i["name"] for i in inspector.get_indexes(table)}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("lb_consensus"):
        if "ix_lb_consensus_open" not in _indexes(inspector, "lb_consensus"):
            op.create_index("ix_lb_consensus_open", "lb_consensus",
                            ["app", "source", "agreement"])
    else:
        _create_consensus()
    if "ix_lb_annotations_item" not in _indexes(inspector, "lb_annotations"):
        op.create_index("ix_lb_annotations_item", "lb_annotations", ["item_id", "app"])


def _create_consensus() -> None:
    op.create_table(
        "lb_consensus",
        sa.Column("app", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("label", sa.Text),
        sa.Column("agreement", sa.Float),
        sa.Column("n_answers", sa.Integer, nullable=False, server_default="0"),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("reviewer", sa.String(200)),
        sa.Column("comment", sa.Text),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("row", sa.Integer),
    )
    op.create_index("ix_lb_consensus_open", "lb_consensus", ["app", "source", "agreement"])


def downgrade() -> None:
    op.drop_index("ix_lb_annotations_item", table_name="lb_annotations")
    op.drop_index("ix_lb_consensus_open", table_name="lb_consensus")
    op.drop_table("lb_consensus")
