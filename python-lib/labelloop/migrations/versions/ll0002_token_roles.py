"""Tokens get a role: annotator, reviewer or admin.

Revision ID: ll0002
Revises: ll0001
Create Date: 2026-12-06

A token's role says what its user may do (`labelloop.web.auth`): `annotator` labels,
`reviewer` also reviews, `admin` also sees everyone's agreement figures. Tokens made before
roles existed become `annotator`, the default of `labelloop token add` (give someone more
with `labelloop token add NAME --role admin`).
"""

import sqlalchemy as sa
from alembic import op

revision = "ll0002"
down_revision = "ll0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # A database stamped at ll0001 just now (made before migrations) may have it already.
    if "role" not in {c["name"] for c in inspector.get_columns("ll_tokens")}:
        op.add_column("ll_tokens", sa.Column("role", sa.String(20), nullable=False,
                                             server_default="annotator"))


def downgrade() -> None:
    with op.batch_alter_table("ll_tokens") as batch:
        batch.drop_column("role")
