"""the budgets' version, so the guard on PostgreSQL can remember who has which budgets

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 20:00:00

``llmspend_budget_config`` holds one row whose ``version`` PostgreSQL triggers raise when
a transaction that changed ``llmspend_budgets`` commits (a constraint trigger deferred to
the commit: the version row is locked last, after any period rows, so no lock order is
crossed; TRUNCATE by a statement trigger; both fire in every session, replication role
included). The guard remembers each identity's budgets with the version (and the row's
``xmin``: a row made again is told apart) it read before looking them up, and its
reservation statement goes ahead only while that is still the current one — one
statement before a request instead of two. SQLite gets the table and no trigger: its
guard remembers by ``PRAGMA data_version``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_PG_BUMP = """
CREATE FUNCTION llmspend_budget_config_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE llmspend_budget_config SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END
$$
"""
_PG_TRIGGERS = (
    "CREATE CONSTRAINT TRIGGER llmspend_budgets_changed AFTER INSERT OR UPDATE OR DELETE "
    "ON llmspend_budgets DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
    "EXECUTE FUNCTION llmspend_budget_config_bump()",
    "CREATE TRIGGER llmspend_budgets_truncated AFTER TRUNCATE ON llmspend_budgets "
    "FOR EACH STATEMENT EXECUTE FUNCTION llmspend_budget_config_bump()",
    # Also in sessions with session_replication_role = replica (logical replication's
    # apply, bulk fixes that skip foreign-key checks): their changes count too.
    "ALTER TABLE llmspend_budgets ENABLE ALWAYS TRIGGER llmspend_budgets_changed",
    "ALTER TABLE llmspend_budgets ENABLE ALWAYS TRIGGER llmspend_budgets_truncated",
)


def upgrade() -> None:
    op.create_table(
        "llmspend_budget_config",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO llmspend_budget_config (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name != "sqlite":
        op.execute(_PG_BUMP)
        for trigger in _PG_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS llmspend_budgets_truncated ON llmspend_budgets")
        op.execute("DROP TRIGGER IF EXISTS llmspend_budgets_changed ON llmspend_budgets")
        op.execute("DROP FUNCTION IF EXISTS llmspend_budget_config_bump()")
    op.drop_table("llmspend_budget_config")
