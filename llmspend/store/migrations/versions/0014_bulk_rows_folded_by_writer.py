"""the rollup queue trigger skips rows a bulk writer folds itself

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 13:30:00

PostgreSQL only: ``llmspend_rollup_queue()`` (migration 0013) queues no ids for a
statement run while the transaction's ``llmspend.rollups_folded`` setting is ``on``.
The bulk ingest path sets it around its ``COPY`` and sums that batch into the rollups
itself in the same transaction (``llmspend.store.rollups.fold_pg_batch``), instead of
queueing every row's id and reading each row back by id. Nothing changes on SQLite.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_SKIPPING = """
CREATE OR REPLACE FUNCTION llmspend_rollup_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('llmspend.rollups_folded', true) = 'on' THEN
        RETURN NULL;
    END IF;
    INSERT INTO llmspend_rollup_pending (usage_id) SELECT id FROM added;
    RETURN NULL;
END
$$
"""
_QUEUEING = """
CREATE OR REPLACE FUNCTION llmspend_rollup_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO llmspend_rollup_pending (usage_id) SELECT id FROM added;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SKIPPING)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_QUEUEING)
