"""The queue builder's lease moves to a table of its own, held through the host's `Lease`.

Revision ID: lb0002
Revises: lb0001
Create Date: 2026-11-26

Before: four columns of `lb_apps` (builder, lease_until, builder_host, builder_pid) and the
engine's own take-over rules. After: one row per webapp in `lb_builder_leases` (owner
`host:pid:token`, acquired, expires), taken with `labelloop.project.Lease` like a scenario lock.
A lease in flight is not carried over: its builder takes the new one at its next heartbeat.

Both steps look first: a database the engine created at this schema (its tables are created on
first use) is only stamped.
"""

import sqlalchemy as sa
from alembic import op

revision = "lb0002"
down_revision = "lb0001"
branch_labels = None
depends_on = None

OLD_COLUMNS = ("builder", "lease_until", "builder_host", "builder_pid")


def _columns(table: str) -> set[str]:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table(table):
        return set()
    return {c["name"] for c in inspector.get_columns(table)}


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("lb_builder_leases"):
        op.create_table(
            "lb_builder_leases",
            sa.Column("app", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("owner", sa.String(300), nullable=False),
            sa.Column("acquired", sa.Float, nullable=False),
            sa.Column("expires", sa.Float, nullable=False),
        )
    gone = [c for c in OLD_COLUMNS if c in _columns("lb_apps")]
    if gone:
        # Batch mode: SQLite rebuilds the table (it cannot drop several columns in place).
        with op.batch_alter_table("lb_apps") as batch:
            for column in gone:
                batch.drop_column(column)


def downgrade() -> None:
    have = _columns("lb_apps")
    with op.batch_alter_table("lb_apps") as batch:
        for column in (sa.Column("builder", sa.String(64)),
                       sa.Column("lease_until", sa.Float),
                       sa.Column("builder_host", sa.String(255)),
                       sa.Column("builder_pid", sa.Integer)):
            if column.name not in have:
                batch.add_column(column)
    if sa.inspect(op.get_bind()).has_table("lb_builder_leases"):
        op.drop_table("lb_builder_leases")
