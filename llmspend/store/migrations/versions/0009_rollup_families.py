"""weekly rollups and the narrower team and model rollup families

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:00:00

Seven tables: ``llmspend_rollup_weekly`` (the full dimensions per UTC week, Monday first)
and the *team* (org, project, provider, model; ``user_name`` = "") and *model* (provider,
model; the others "") families (``llmspend_rollup_<grain>_team``, ``_model``) per hour,
day and week. They are filled by summing the full hourly table, which covers exactly the
rows the mark says (SQLite) or every committed row (PostgreSQL, with writers held off by a
lock until the commit).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_MEASURES = (
    "calls", "error_calls", "refused_calls", "unpriced_calls", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cost_nanos",
)  # fmt: skip
_DIMS = ("org_name", "project_name", "user_name", "provider", "model")
_FAMILIES = {
    "": _DIMS,
    "_team": ("org_name", "project_name", "provider", "model"),
    "_model": ("provider", "model"),
}
_GRAINS = ("hourly", "daily", "weekly")


def _tables() -> list[tuple[str, tuple[str, ...], str]]:
    out = []
    for suffix, dims in _FAMILIES.items():
        for grain in _GRAINS:
            if suffix == "" and grain != "weekly":
                continue  # the full hourly and daily tables exist (0003)
            out.append((f"llmspend_rollup_{grain}{suffix}", dims, grain))
    return out


def _create(name: str) -> None:
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


def _bucket(pg: bool, grain: str) -> str:
    if pg:
        return {"hourly": "bucket", "daily": "date_trunc('day', bucket)",
                "weekly": "date_trunc('week', bucket)"}[grain]  # fmt: skip
    return {
        "hourly": "bucket",
        "daily": "substr(bucket, 1, 10) || ' 00:00:00.000000'",
        "weekly": "date(substr(bucket, 1, 10), '-6 days', 'weekday 1') || ' 00:00:00.000000'",
    }[grain]


def upgrade() -> None:
    tables = _tables()
    for name, _, _ in tables:
        _create(name)
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute("LOCK TABLE llmspend_rollup_hourly IN EXCLUSIVE MODE")
    columns = f"bucket, {', '.join(_DIMS)}, {', '.join(_MEASURES)}"
    for name, dims, grain in tables:
        kept = ", ".join(d if d in dims else "''" for d in _DIMS)
        # Only constant identifiers and expressions are formatted in; there are no values.
        op.execute(
            f"INSERT INTO {name} ({columns}) "  # noqa: S608
            f"SELECT {_bucket(pg, grain)}, {kept}, "
            f"{', '.join(f'sum({m})' for m in _MEASURES)} "
            "FROM llmspend_rollup_hourly GROUP BY 1, 2, 3, 4, 5, 6"
        )


def downgrade() -> None:
    for name, _, _ in reversed(_tables()):
        op.drop_table(name)
