"""record uid

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 01:10:00

A unique id per live call, so that rows spooled while the store was unreachable are
replayed exactly once (``llmspend.spool``). Existing rows keep NULL (NULLs never clash).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("llmspend_usage", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record_uid", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_llmspend_usage_record_uid", ["record_uid"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("llmspend_usage", schema=None) as batch_op:
        batch_op.drop_index("ix_llmspend_usage_record_uid")
        batch_op.drop_column("record_uid")
