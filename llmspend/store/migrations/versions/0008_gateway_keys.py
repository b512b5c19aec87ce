"""gateway keys

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:10:00

The llmspend gateway's keys: each names the org, project and user its calls are charged
to. Only the SHA-256 of a key is stored (a key is 256 random bits, so a plain hash is
enough: there is nothing to guess), with its first characters for people to recognize it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLE = "llmspend_gateway_keys"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("org_name", sa.String(length=200), nullable=False),
        sa.Column("project_name", sa.String(length=200), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llmspend_gateway_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_llmspend_gateway_keys_key_hash")),
    )


def downgrade() -> None:
    op.drop_table(_TABLE)
