"""a threshold fires once per budget, period and limit: a changed limit re-arms it

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 23:10:00

The alerts' unique key (``uq_llmspend_alerts_once``) gains ``limit_nanos``: after a budget's
limit is raised (or lowered), its thresholds fire again at the new limit, once each, in
the same period. On SQLite the table is rebuilt (a UNIQUE constraint cannot be dropped):
the webhook deliveries' links to their alerts, which dropping the old table would set to
NULL (``ON DELETE SET NULL``, with foreign keys on inside the migration's transaction),
are put back. Downgrading keeps the first alert of each (budget, period, kind, threshold).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_OLD = ["budget_id", "period_start", "kind", "threshold_ppm"]
_NEW = [*_OLD, "limit_nanos"]
_LINKS = "SELECT id, alert_id FROM llmspend_webhook_deliveries WHERE alert_id IS NOT NULL"
_RELINK = "UPDATE llmspend_webhook_deliveries SET alert_id = :alert_id WHERE id = :id"


def _rekey(columns: list[str]) -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    links = bind.execute(sa.text(_LINKS)).mappings().all() if sqlite else []
    with op.batch_alter_table("llmspend_alerts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_llmspend_alerts_once", type_="unique")
        batch_op.create_unique_constraint("uq_llmspend_alerts_once", columns)
    if links:
        bind.execute(sa.text(_RELINK), [dict(r) for r in links])


def upgrade() -> None:
    _rekey(_NEW)


def downgrade() -> None:
    op.execute(
        "DELETE FROM llmspend_alerts WHERE id NOT IN (SELECT MIN(id) FROM llmspend_alerts "
        "GROUP BY budget_id, period_start, kind, threshold_ppm)"
    )
    _rekey(_OLD)
