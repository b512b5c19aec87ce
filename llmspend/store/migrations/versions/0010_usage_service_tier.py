"""usage service tier

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 11:00:00

``llmspend_usage.service_tier``: the tier a call was served at (``flex``, ``priority``,
``batch``, ``default``...), as the provider reported it or the request asked; until now it
was only inside ``price_ref``. Existing rows keep NULL (not known).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("llmspend_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("service_tier", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llmspend_usage", schema=None) as batch_op:
        batch_op.drop_column("service_tier")
