"""the usage table's identity and generation, for the columnar copy records() reads

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 16:30:00

``llmspend_usage_generation`` holds one row: ``store_uid``, a random id given to the store
when this migration runs, and ``generation``, a random number triggers replace whenever
usage rows are updated or deleted (PostgreSQL: also truncated; SQLite: also a row inserted
anywhere but after the last one — PostgreSQL's copies are checked by counting instead).
``records()`` keeps a columnar copy of complete id ranges in the user's cache directory
(:mod:`llmspend.store.segments`) and uses it only while both are what they were when the
copy was made. llmspend itself only ever appends usage rows, so the triggers do not fire
on its own writes.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_BUMP = "UPDATE llmspend_usage_generation SET generation = random() WHERE id = 1"
_TRIGGERS = {
    "llmspend_usage_updated": "AFTER UPDATE ON llmspend_usage",
    "llmspend_usage_deleted": "AFTER DELETE ON llmspend_usage",
    # an insert that is not the new last row (an explicit id below the highest)
    "llmspend_usage_inserted_inside": "AFTER INSERT ON llmspend_usage "
    "WHEN NEW.id < (SELECT max(id) FROM llmspend_usage)",
}


_PG_RENEW = """
CREATE FUNCTION llmspend_usage_renew() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE llmspend_usage_generation
    SET generation = floor(random() * 9.2e18)::bigint WHERE id = 1;
    RETURN NULL;
END
$$
"""
_PG_TRIGGER = (
    "CREATE TRIGGER llmspend_usage_changed AFTER UPDATE OR DELETE OR TRUNCATE "
    "ON llmspend_usage FOR EACH STATEMENT EXECUTE FUNCTION llmspend_usage_renew()"
)


def upgrade() -> None:
    op.create_table(
        "llmspend_usage_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("store_uid", sa.String(32), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.execute(
        sa.text(
            "INSERT INTO llmspend_usage_generation (id, store_uid, generation) VALUES (1, :uid, 0)"
        ).bindparams(uid=uuid.uuid4().hex)
    )
    if op.get_bind().dialect.name == "sqlite":
        for name, when in _TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} BEGIN {_BUMP}; END")
    else:
        op.execute(_PG_RENEW)
        op.execute(_PG_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS llmspend_usage_changed ON llmspend_usage")
        op.execute("DROP FUNCTION IF EXISTS llmspend_usage_renew()")
    op.drop_table("llmspend_usage_generation")
