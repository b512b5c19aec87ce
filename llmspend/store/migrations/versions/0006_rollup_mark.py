"""rollups caught up after the call on SQLite

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00

On SQLite a live call no longer adds its row to the rollups in its own transaction (two
upserts, the costliest statements of a call): the rows past ``rolled_through`` are
summed into them later, before any analytics read. Every row stored at upgrade time is
already in the rollups, so the mark starts at the highest usage id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_MEASURES = (
    "calls", "error_calls", "refused_calls", "unpriced_calls", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cost_nanos",
)  # fmt: skip
_DIMS = "org_name, project_name, user_name, provider, model"


def upgrade() -> None:
    op.create_table(
        "llmspend_rollup_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rolled_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llmspend_rollup_state")),
    )
    op.execute(
        "INSERT INTO llmspend_rollup_state (id, rolled_through) "
        "SELECT 1, coalesce(max(id), 0) FROM llmspend_usage"
    )


def downgrade() -> None:
    # The earlier schema keeps the rollups complete with every write: on SQLite, rows past
    # the mark are not in them yet, so both tables are summed again from the raw rows.
    if op.get_bind().dialect.name == "sqlite":
        columns = f"bucket, {_DIMS}, {', '.join(_MEASURES)}"
        op.execute("DELETE FROM llmspend_rollup_hourly")
        op.execute("DELETE FROM llmspend_rollup_daily")
        # Only constant identifiers and expressions are formatted in; there are no values.
        op.execute(
            f"INSERT INTO llmspend_rollup_hourly ({columns}) "  # noqa: S608
            f"SELECT substr(ts, 1, 13) || ':00:00.000000', {_DIMS}, count(*), "
            "coalesce(sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN cost_nanos IS NULL THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0), "
            "coalesce(sum(cache_write_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_nanos), 0) "
            "FROM llmspend_usage GROUP BY 1, 2, 3, 4, 5, 6"
        )
        op.execute(
            f"INSERT INTO llmspend_rollup_daily ({columns}) "  # noqa: S608
            f"SELECT substr(bucket, 1, 10) || ' 00:00:00.000000', {_DIMS}, "
            f"{', '.join(f'sum({m})' for m in _MEASURES)} "
            "FROM llmspend_rollup_hourly GROUP BY 1, 2, 3, 4, 5, 6"
        )
    op.drop_table("llmspend_rollup_state")
