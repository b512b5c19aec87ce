"""audit hash chain

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 12:00:00

``llmspend_audit`` gains ``seq``, ``prev_hash`` and ``hash`` (see ``llmspend.store.audit``);
the existing entries are chained in the order they were written (by id), and ``seq`` gets a
unique index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llmspend.store.audit import entry_hash

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("llmspend_audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    audit = sa.table(
        "llmspend_audit",
        sa.column("id", sa.BigInteger()),
        sa.column("ts", sa.DateTime()),
        *(sa.column(c, sa.String()) for c in ("actor", "action", "budget_key", "old", "new")),
        sa.column("budget_id", sa.BigInteger()),
        sa.column("seq", sa.BigInteger()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(
            audit.c.id,
            audit.c.ts,
            audit.c.actor,
            audit.c.action,
            audit.c.budget_key,
            audit.c.budget_id,
            audit.c.old,
            audit.c.new,
        ).order_by(audit.c.id)
    ).all()
    prev = ""
    for seq, r in enumerate(rows, start=1):
        fields = {**r._mapping, "seq": seq}
        digest = entry_hash(fields, prev)
        conn.execute(
            sa.update(audit).where(audit.c.id == r.id).values(seq=seq, prev_hash=prev, hash=digest)
        )
        prev = digest
    with op.batch_alter_table("llmspend_audit", schema=None) as batch_op:
        batch_op.create_index("ux_llmspend_audit_seq", ["seq"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("llmspend_audit", schema=None) as batch_op:
        batch_op.drop_index("ux_llmspend_audit_seq")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
