"""The labeling plugin's tables as of the first versioned revision.

Revision ID: lb0001
Revises:
Create Date: 2026-11-26

Written out here, not imported from labeling.engine: a revision describes the schema as it was.
"""

import sqlalchemy as sa
from alembic import op

revision = "lb0001"
down_revision = None
branch_labels = None
depends_on = None

tables = sa.MetaData()

sa.Table(
    "lb_apps", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("iset", sa.Integer),
    sa.Column("n_items", sa.Integer),
    sa.Column("queue_id", sa.Integer),
    sa.Column("session_key", sa.Text),
    sa.Column("builder", sa.String(64)),
    sa.Column("lease_until", sa.Float),
    sa.Column("build_error", sa.Text),
    sa.Column("builder_host", sa.String(255)),
    sa.Column("builder_pid", sa.Integer),
    sa.Column("prep", sa.JSON),
)
sa.Table(
    "lb_itemsets", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("pool_key", sa.Text, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("done", sa.Integer, nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
    sqlite_autoincrement=True,
)
sa.Table(
    "lb_items", tables,
    sa.Column("iset", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("row", sa.Text, nullable=False),
    sa.Index("ix_lb_items_seq", "iset", "seq"),
)
sa.Table(
    "lb_queues", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("iset", sa.Integer, nullable=False),
    sa.Column("session_key", sa.Text, nullable=False),
    sa.Column("session", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("info", sa.JSON),
    sa.Column("filled", sa.Integer, nullable=False),
    sa.Column("complete", sa.Boolean, nullable=False),
    sqlite_autoincrement=True,
)
sa.Table(
    "lb_queue", tables,
    sa.Column("qid", sa.Integer, primary_key=True),
    sa.Column("pos", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("uncertainty", sa.Float),
    sa.Column("prediction", sa.Text),
    sa.Column("confidence", sa.Float),
    sa.Column("halting", sa.Float),
    sa.Column("model_version", sa.Text),
    sa.Column("row", sa.Text),
    sa.Index("ix_lb_queue_pending", "qid", "state", "pos"),
    sa.Index("ux_lb_queue_item", "qid", "item_id", unique=True),
)
sa.Table(
    "lb_reservations", tables,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
    sa.Index("ix_lb_reservations_annotator", "app", "annotator"),
)
sa.Table(
    "lb_annotations", tables,
    sa.Column("label_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.Integer, nullable=False),
    sa.Column("item_id", sa.Text, nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("comment", sa.Text),
    sa.Column("session", sa.Integer),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    sa.Column("labels_row", sa.Integer),
    sa.Column("meta_row", sa.Integer),
    sa.UniqueConstraint("app", "owner", "item_id", name="uq_lb_annotations_item"),
    sa.Index("ix_lb_annotations_annotator", "app", "annotator", "label_id"),
    sqlite_autoincrement=True,
)
sa.Table(
    "lb_counts", tables,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)
sa.Table(
    "lb_cursors", tables,
    sa.Column("qid", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("pos", sa.Integer, nullable=False),
)
sa.Table(
    "lb_setaside", tables,
    sa.Column("app", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
)
sa.Table(
    "sim_questions", tables,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("app", sa.String(200), nullable=False),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("query_id", sa.Text, nullable=False),
    sa.Column("candidates", sa.JSON, nullable=False),
    sa.Column("scores", sa.JSON, nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("issued", sa.Float, nullable=False),
    sa.Column("answered", sa.Float),
    sa.Column("status", sa.String(10)),
    sa.Column("positives", sa.JSON),
    sa.Column("negatives", sa.JSON),
    sa.Column("n_pos", sa.Integer, nullable=False),
    sa.Column("n_neg", sa.Integer, nullable=False),
    sa.Index("ix_sim_questions_app_answered", "app", "answered"),
)
sa.Table(
    "sim_versions", tables,
    sa.Column("app", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("n_questions", sa.Integer, nullable=False),
    sa.Column("n_pairs", sa.Integer, nullable=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("matrix", sa.LargeBinary, nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("seconds", sa.Float),
)
sa.Table(
    "sim_saves", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("app", sa.String(200), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("tuned_version", sa.Integer, nullable=False),
    sa.Column("annotator", sa.String(200), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


def upgrade() -> None:
    # Only what is missing: a database made before this history has the tables already (the
    # plugin created them itself), which this revision then stamps.
    tables.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    tables.drop_all(op.get_bind(), checkfirst=True)
