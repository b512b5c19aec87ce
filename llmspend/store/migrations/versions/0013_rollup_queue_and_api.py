"""rollups caught up after the write on PostgreSQL too; api and service tier in the model family

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 11:00:00

* ``llmspend_rollup_pending`` (usage ids not yet summed into the rollups) and, on
  PostgreSQL, a statement-level trigger on ``llmspend_usage`` that queues every inserted
  row's id there: a live call no longer upserts rollup rows (the rollups module folds
  the queue in before analytics read). The table stays empty on SQLite (the mark of
  0006 serves there).
* The model family's tables (``llmspend_rollup_{quarter,hourly,daily,weekly}_model``)
  get ``api`` and ``service_tier`` (NULL stored as "") in their key; they are recreated
  and filled from the raw rows (on SQLite the rows up to the mark; on PostgreSQL every
  committed row, with writers held off until the commit).

Downgrading drops the trigger and the queue; on PostgreSQL every rollup table is then
recomputed from the raw rows (the queued rows are in them again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_MEASURES = (
    "calls", "error_calls", "refused_calls", "unpriced_calls", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cost_nanos",
)  # fmt: skip
_DIMS = ("org_name", "project_name", "user_name", "provider", "model")
_EXTRA = ("api", "service_tier")
_MODEL_TABLES = {
    "llmspend_rollup_hourly_model": "hour",
    "llmspend_rollup_daily_model": "day",
    "llmspend_rollup_weekly_model": "week",
    "llmspend_rollup_quarter_model": "quarter",
}
#: Every rollup table at 0012: name → (kept dimensions, grain).
_ALL = {
    "llmspend_rollup_hourly": (_DIMS, "hour"),
    "llmspend_rollup_daily": (_DIMS, "day"),
    "llmspend_rollup_weekly": (_DIMS, "week"),
    "llmspend_rollup_hourly_team": (("org_name", "project_name", "provider", "model"), "hour"),
    "llmspend_rollup_daily_team": (("org_name", "project_name", "provider", "model"), "day"),
    "llmspend_rollup_weekly_team": (("org_name", "project_name", "provider", "model"), "week"),
    "llmspend_rollup_quarter_team": (("org_name", "project_name", "provider", "model"), "quarter"),
    **{name: (("provider", "model"), grain) for name, grain in _MODEL_TABLES.items()},
}
_SQLITE_BUCKET = {
    "quarter": "substr(ts, 1, 14) || CASE WHEN substr(ts, 15, 2) < '15' THEN '00' "
    "WHEN substr(ts, 15, 2) < '30' THEN '15' WHEN substr(ts, 15, 2) < '45' THEN '30' "
    "ELSE '45' END || ':00.000000'",
    "hour": "substr(ts, 1, 13) || ':00:00.000000'",
    "day": "substr(ts, 1, 10) || ' 00:00:00.000000'",
    "week": "date(substr(ts, 1, 10), '-6 days', 'weekday 1') || ' 00:00:00.000000'",
}
_PG_BUCKET = {
    "quarter": "date_bin(interval '15 minutes', ts, timestamp '2000-01-01')",
    "hour": "date_trunc('hour', ts)",
    "day": "date_trunc('day', ts)",
    "week": "date_trunc('week', ts)",
}
_SUMS = (
    "count(*), "
    "coalesce(sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(CASE WHEN cost_nanos IS NULL THEN 1 ELSE 0 END), 0), "
    "coalesce(sum(input_tokens), 0), coalesce(sum(cached_input_tokens), 0), "
    "coalesce(sum(cache_write_tokens), 0), coalesce(sum(output_tokens), 0), "
    "coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost_nanos), 0)"
)
_QUEUE_FUNCTION = """
CREATE FUNCTION llmspend_rollup_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO llmspend_rollup_pending (usage_id) SELECT id FROM added;
    RETURN NULL;
END
$$
"""
_QUEUE_TRIGGER = (
    "CREATE TRIGGER llmspend_rollup_queue AFTER INSERT ON llmspend_usage "
    "REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION llmspend_rollup_queue()"
)


def _create(name: str, extra: bool) -> None:
    key = (*_DIMS, *_EXTRA) if extra else _DIMS
    op.create_table(
        name,
        sa.Column("bucket", sa.DateTime(), nullable=False),
        sa.Column("org_name", sa.String(length=200), nullable=False),
        sa.Column("project_name", sa.String(length=200), nullable=False),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        # the key's columns before the measures: SQLite 3.40's integrity_check reports false
        # "NULL value" errors in a WITHOUT ROWID table whose key columns follow other columns
        *(
            (
                sa.Column("api", sa.String(length=64), nullable=False),
                sa.Column("service_tier", sa.String(length=32), nullable=False),
            )
            if extra
            else ()
        ),
        *(sa.Column(m, sa.BigInteger(), nullable=False) for m in _MEASURES),
        sa.PrimaryKeyConstraint("bucket", *key, name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def _fill(name: str, kept: tuple[str, ...], grain: str, extra: bool, pg: bool) -> None:
    """Sum the raw rows into one empty rollup table (SQLite: the rows up to the mark)."""
    key = (*_DIMS, *_EXTRA) if extra else _DIMS
    dims = []
    for d in key:
        if d not in kept and d not in _EXTRA:
            dims.append("''")
        else:
            dims.append("coalesce(service_tier, '')" if d == "service_tier" else d)
    where = "" if pg else "WHERE id <= (SELECT rolled_through FROM llmspend_rollup_state) "
    groups = ", ".join(str(i) for i in range(1, len(key) + 2))
    bucket = (_PG_BUCKET if pg else _SQLITE_BUCKET)[grain]
    columns = ", ".join(("bucket", *key, *_MEASURES))
    # Only constant identifiers and expressions are formatted in; there are no values.
    # (Sent as is: the text holds ':00', which a text() would read as a parameter.)
    op.get_bind().exec_driver_sql(
        f"INSERT INTO {name} ({columns}) "  # noqa: S608
        f"SELECT {bucket}, {', '.join(dims)}, {_SUMS} FROM llmspend_usage {where}"
        f"GROUP BY {groups}"
    )


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:  # no row is written while the tables change (writers wait for the commit)
        op.execute("LOCK TABLE llmspend_usage IN SHARE MODE")
    op.create_table(
        "llmspend_rollup_pending",
        sa.Column("usage_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("usage_id", name=op.f("pk_llmspend_rollup_pending")),
    )
    if pg:
        op.execute(_QUEUE_FUNCTION)
        op.execute(_QUEUE_TRIGGER)
    for name, grain in _MODEL_TABLES.items():
        op.drop_table(name)
        _create(name, extra=True)
        _fill(name, ("provider", "model"), grain, True, pg)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    if pg:
        op.execute("LOCK TABLE llmspend_usage IN SHARE MODE")
        op.execute("DROP TRIGGER llmspend_rollup_queue ON llmspend_usage")
        op.execute("DROP FUNCTION llmspend_rollup_queue()")
    op.drop_table("llmspend_rollup_pending")
    for name in _MODEL_TABLES:
        op.drop_table(name)
        _create(name, extra=False)
    for name, (kept, grain) in _ALL.items():
        if pg:  # the queued rows were in no table: recompute them all
            op.execute(f"DELETE FROM {name}")  # noqa: S608
        if pg or name in _MODEL_TABLES:
            _fill(name, kept, grain, False, pg)
