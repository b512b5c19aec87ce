"""one reservation row per call

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 04:30:00

A call held its estimate with one ``llmspend_reservations`` row per budget period, each
in four B-trees (the table and three indexes): a reservation wrote twelve entries for a
call under three budgets, and its settlement deleted them again. Now a call holds one
row, keyed by its token, listing the periods it holds the same amount on
(``period_ids``, comma-separated). On SQLite the table is ``WITHOUT ROWID``. Holds in
flight during the upgrade are carried over, grouped by call.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_OLD = "llmspend_reservations"


def _holds(table: str) -> list[Any]:
    return list(op.get_bind().execute(sa.text(f"SELECT * FROM {table}")).mappings())  # noqa: S608


def _when(value: Any) -> dt.datetime:
    """A stored timestamp as a datetime (SQLite hands back its text form)."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def upgrade() -> None:
    rows = _holds(_OLD)
    op.drop_table(_OLD)
    table = op.create_table(
        _OLD,
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.Column("period_ids", sa.Text(), nullable=False),
        sa.Column("amount_nanos", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_llmspend_reservations")),
        sqlite_with_rowid=False,
    )
    # llmspend held one amount per call; a token whose rows differ (never written by
    # llmspend) becomes one hold per amount, so that nothing held is lost.
    by_token: dict[str, list[Any]] = defaultdict(list)
    for r in rows:
        by_token[r["token"]].append(r)
    merged = []
    for token, held in sorted(by_token.items()):
        for n, amount in enumerate(sorted({r["amount_nanos"] for r in held})):
            same = [r for r in held if r["amount_nanos"] == amount]
            merged.append(
                {
                    "token": token if n == 0 else f"{token}-{n}",
                    "period_ids": ",".join(sorted((str(r["period_id"]) for r in same), key=int)),
                    "amount_nanos": amount,
                    "created_at": min(_when(r["created_at"]) for r in same),
                    "lease_expires_at": max(_when(r["lease_expires_at"]) for r in same),
                    "owner": same[0]["owner"],
                }
            )
    if merged:
        op.bulk_insert(table, merged)


def downgrade() -> None:
    rows = _holds(_OLD)
    op.drop_table(_OLD)
    table = op.create_table(
        _OLD,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("token", sa.String(length=36), nullable=False),
        sa.Column(
            "period_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount_nanos", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["period_id"],
            ["llmspend_budget_periods.id"],
            name=op.f("fk_llmspend_reservations_period_id_llmspend_budget_periods"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llmspend_reservations")),
    )
    op.create_index("ix_llmspend_reservations_lease", _OLD, ["lease_expires_at"])
    op.create_index("ix_llmspend_reservations_period_id", _OLD, ["period_id"])
    op.create_index("ix_llmspend_reservations_token", _OLD, ["token"])
    existing = {
        int(i)
        for i in op.get_bind().execute(sa.text("SELECT id FROM llmspend_budget_periods")).scalars()
    }
    split = [
        {
            "token": r["token"],
            "period_id": int(pid),
            "amount_nanos": r["amount_nanos"],
            "created_at": _when(r["created_at"]),
            "lease_expires_at": _when(r["lease_expires_at"]),
            "owner": r["owner"],
        }
        for r in rows
        for pid in r["period_ids"].split(",")
        if pid and int(pid) in existing
    ]
    if split:
        op.bulk_insert(table, split)
