"""one index on the usage table: (ts, record_uid), unique

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 08:45:00

A live call's row went into two indexes besides the table: ``ts`` (drill-down reads ts
ranges) and the unique ``record_uid`` (spooled calls are replayed once). One unique index
on ``(ts, record_uid)`` serves both: ts ranges read its prefix, and a replayed row, which
has its call's ts and uid, meets itself there. A call then writes one B-tree entry fewer
(SQLite: one page fewer per commit). Rows without a uid (ingested) never clash: NULLs
are distinct in a unique index on both stores.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLE = "llmspend_usage"


def upgrade() -> None:
    op.create_index("ix_llmspend_usage_ts_uid", _TABLE, ["ts", "record_uid"], unique=True)
    op.drop_index("ix_llmspend_usage_record_uid", table_name=_TABLE)
    op.drop_index("ix_llmspend_usage_ts", table_name=_TABLE)


def downgrade() -> None:
    op.create_index("ix_llmspend_usage_ts", _TABLE, ["ts"])
    op.create_index("ix_llmspend_usage_record_uid", _TABLE, ["record_uid"], unique=True)
    op.drop_index("ix_llmspend_usage_ts_uid", table_name=_TABLE)
