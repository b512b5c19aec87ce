"""quarter-hour rollups for the team and model families

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:30:00

``llmspend_rollup_quarter_team`` and ``llmspend_rollup_quarter_model``: usage per UTC
quarter hour, so buckets in time zones off the whole hour (+5:30, +5:45) read these at
their edges instead of raw rows. Filled from the raw rows: on SQLite the rows up to the
mark (later rows are summed in by the next catch-up, as for every rollup table); on
PostgreSQL every committed row, with writers held off by a lock until the commit.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_MEASURES = (
    "calls", "error_calls", "refused_calls", "unpriced_calls", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cost_nanos",
)  # fmt: skip
_DIMS = ("org_name", "project_name", "user_name", "provider", "model")
_TABLES = {
    "llmspend_rollup_quarter_team": ("org_name", "project_name", "provider", "model"),
    "llmspend_rollup_quarter_model": ("provider", "model"),
}
_SQLITE_QUARTER = (
    "substr(ts, 1, 14) || CASE WHEN substr(ts, 15, 2) < '15' THEN '00' "
    "WHEN substr(ts, 15, 2) < '30' THEN '15' WHEN substr(ts, 15, 2) < '45' THEN '30' "
    "ELSE '45' END || ':00.000000'"
)
_PG_QUARTER = "date_bin(interval '15 minutes', ts, timestamp '2000-01-01')"


def upgrade() -> None:
    for name in _TABLES:
        op.create_table(
            name,
            sa.Column("bucket", sa.DateTime(), nullable=False),
            sa.Column("org_name", sa.String(length=200), nullable=False),
            sa.Column("project_name", sa.String(length=200), nullable=False),
            sa.Column("user_name", sa.String(length=200), nullable=False),
            sa.Column("provider", sa.String(length=32), nullable=False),
            sa.Column("model", sa.String(length=200), nullable=False),
            *(sa.Column(m, sa.BigInteger(), nullable=False) for m in _MEASURES),
            sa.PrimaryKeyConstraint("bucket", *_DIMS, name=op.f(f"pk_{name}")),
            sqlite_with_rowid=False,
        )
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute("LOCK TABLE llmspend_rollup_hourly IN EXCLUSIVE MODE")
        where = ""
    else:
        where = "WHERE id <= (SELECT rolled_through FROM llmspend_rollup_state WHERE id = 1) "
    columns = f"bucket, {', '.join(_DIMS)}, {', '.join(_MEASURES)}"
    for name, dims in _TABLES.items():
        kept = ", ".join(d if d in dims else "''" for d in _DIMS)
        # Only constant identifiers and expressions are formatted in; there are no values.
        # (Sent as is: the text holds ':00', which a text() would read as a parameter.)
        op.get_bind().exec_driver_sql(
            f"INSERT INTO {name} ({columns}) "  # noqa: S608
            f"SELECT {_PG_QUARTER if pg else _SQLITE_QUARTER}, {kept}, count(*), "
            "coalesce(sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(CASE WHEN cost_nanos IS NULL THEN 1 ELSE 0 END), 0), "
            "coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0), "
            "coalesce(sum(cache_write_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_nanos), 0) "
            f"FROM llmspend_usage {where}GROUP BY 1, 2, 3, 4, 5, 6"
        )


def downgrade() -> None:
    for name in reversed(list(_TABLES)):
        op.drop_table(name)
