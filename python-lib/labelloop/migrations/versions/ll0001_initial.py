"""The host's tables as of the first versioned revision.

Revision ID: ll0001
Revises:
Create Date: 2026-11-26

The tables are written out here, not imported from labelloop.project.db: a revision describes
the schema as it was, and must not move when the live table definitions change.
"""

import sqlalchemy as sa

from labelloop.migrations import create_missing, drop_existing

revision = "ll0001"
down_revision = None
branch_labels = None
depends_on = None

tables = sa.MetaData()

sa.Table(
    "ll_datasets", tables,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("table_name", sa.String(250), nullable=False, unique=True),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("updated", sa.DateTime(timezone=True)),
    sa.Column("storage", sa.String(10), nullable=False),
)
sa.Table(
    "ll_dataset_chunks", tables,
    sa.Column("table_name", sa.String(250), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
)
sa.Table(
    "ll_variables", tables,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.JSON),
)
sa.Table(
    "ll_model_versions", tables,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("file", sa.String(500), nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
)
sa.Table(
    "ll_runs", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("details", sa.JSON),
    sa.Index("ix_ll_runs_kind_name", "kind", "name", "id"),
)
sa.Table(
    "ll_scenario_locks", tables,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("purpose", sa.String(20), nullable=False),
    sa.Column("run_id", sa.Integer),
    sa.Column("acquired", sa.Float, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)
sa.Table(
    "ll_trigger_states", tables,
    sa.Column("scenario", sa.String(200), primary_key=True),
    sa.Column("trigger", sa.String(250), primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("checked", sa.Float),
    sa.Column("fired", sa.Float),
    sa.Column("fire_count", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("error_count", sa.Integer, nullable=False),
)
sa.Table(
    "ll_tokens", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user", sa.String(200), nullable=False, index=True),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
)
sa.Table(
    "ll_webhook_outbox", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered", sa.Float),
    sa.Index("ix_ll_webhook_outbox_due", "status", "next_at"),
    sqlite_autoincrement=True,
)
sa.Table(
    "ll_webhook_deliveries", tables,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.Integer, nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("seconds", sa.Float),
)


def upgrade() -> None:
    create_missing(tables)


def downgrade() -> None:
    drop_existing(tables)
