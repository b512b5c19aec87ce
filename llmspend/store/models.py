"""The store's tables, as SQLAlchemy 2 typed ORM models.

Money is integer nanodollars (``*_nanos``); timestamps are naive UTC. Every table is
prefixed ``llmspend_``. The schema itself is created and changed only by the Alembic
migrations in ``llmspend/store/migrations``; a test checks the two agree.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

__all__ = [
    "Alert",
    "AuditEntry",
    "Base",
    "Budget",
    "BudgetConfig",
    "BudgetPeriod",
    "GatewayKey",
    "Org",
    "Project",
    "Reservation",
    "RollupDaily",
    "RollupHourly",
    "RollupModelDaily",
    "RollupModelHourly",
    "RollupModelQuarter",
    "RollupModelWeekly",
    "RollupPending",
    "RollupState",
    "RollupTeamDaily",
    "RollupTeamHourly",
    "RollupTeamQuarter",
    "RollupTeamWeekly",
    "RollupWeekly",
    "UsageGeneration",
    "UsageRecord",
    "User",
    "WebhookDelivery",
]

# A BIGINT primary key that is still SQLite's rowid alias (autoincrementing).
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Org(Base):
    __tablename__ = "llmspend_orgs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime())


class _OrgMember:
    """Columns shared by projects and users: a name, unique within its org."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("llmspend_orgs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime())

    @declared_attr.directive
    def __table_args__(cls) -> tuple[UniqueConstraint]:
        name = f"uq_{cls.__tablename__}_org_name"  # type: ignore[attr-defined]
        return (UniqueConstraint("org_id", "name", name=name),)


class Project(_OrgMember, Base):
    __tablename__ = "llmspend_projects"


class User(_OrgMember, Base):
    __tablename__ = "llmspend_users"


class UsageRecord(Base):
    """One row per billed (or refused, or failed) provider call."""

    __tablename__ = "llmspend_usage"
    # One index: analytics read rollups, drill-down reads ts ranges. Further indexes
    # slowed inserts ~3x and sometimes made planner choices worse (checked with EXPLAIN).
    # record_uid rides along in it, unique with ts, for replaying spooled calls once
    # (a replayed row has its call's ts and uid): one B-tree entry per call, not two.
    __table_args__ = (Index("ix_llmspend_usage_ts_uid", "ts", "record_uid", unique=True),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime())
    request_id: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(32))
    api: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    requested_model: Mapped[str | None] = mapped_column(String(200))
    org_name: Mapped[str] = mapped_column(String(200))
    project_name: Mapped[str] = mapped_column(String(200))
    user_name: Mapped[str] = mapped_column(String(200))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nanos: Mapped[int | None] = mapped_column(BigInteger)
    estimate_nanos: Mapped[int | None] = mapped_column(BigInteger)
    price_status: Mapped[str] = mapped_column(String(16))
    price_ref: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(64))
    notebook_path: Mapped[str | None] = mapped_column(String(500))
    # A live call's unique id: replaying the spool inserts each call at most once.
    record_uid: Mapped[str | None] = mapped_column(String(32))
    # The service tier the provider reported it served the call at (or the request asked
    # for; "batch" for Batch API jobs), lower case; NULL when neither said (migration 0010).
    service_tier: Mapped[str | None] = mapped_column(String(32))


class Budget(Base):
    """A budget on an org, project or user, or a default (``default_for``) for children."""

    __tablename__ = "llmspend_budgets"
    __table_args__ = (
        UniqueConstraint("scope", "name", "default_for", name="uq_llmspend_budgets_key"),
        Index("ix_llmspend_budgets_org", "org_name"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(500))
    # "" for an explicit budget; "project" / "user" for a default set on a parent.
    default_for: Mapped[str] = mapped_column(String(16), default="")
    org_name: Mapped[str] = mapped_column(String(200))
    project_name: Mapped[str | None] = mapped_column(String(200))
    user_name: Mapped[str | None] = mapped_column(String(200))
    limit_nanos: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(8))
    thresholds: Mapped[str] = mapped_column(Text)  # JSON list of fraction strings
    timezone: Mapped[str] = mapped_column(String(64))
    week_start: Mapped[int] = mapped_column(Integer, default=0)  # 0 = Monday
    unpriced_policy: Mapped[str | None] = mapped_column(String(16))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # Set on a budget materialized from a default for one child; cleared when set explicitly.
    derived_from: Mapped[int | None] = mapped_column(
        ForeignKey("llmspend_budgets.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime())
    created_by: Mapped[str | None] = mapped_column(String(200))


class BudgetPeriod(Base):
    """The counters of one budget in one period: spent and reserved, in nanodollars."""

    __tablename__ = "llmspend_budget_periods"
    __table_args__ = (
        UniqueConstraint("budget_id", "period_start", name="uq_llmspend_budget_periods_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    budget_id: Mapped[int] = mapped_column(ForeignKey("llmspend_budgets.id", ondelete="CASCADE"))
    period_start: Mapped[dt.datetime] = mapped_column(DateTime())
    period_end: Mapped[dt.datetime | None] = mapped_column(DateTime())
    limit_nanos: Mapped[int] = mapped_column(BigInteger)
    spent_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_nanos: Mapped[int] = mapped_column(BigInteger, default=0)
    calls: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime())


class Reservation(Base):
    """What one in-flight call holds, until it settles or its lease ends: the same amount
    on each of the budget periods listed in ``period_ids`` (comma-separated ids).

    One row per call, keyed by its token and without secondary indexes (on SQLite
    ``WITHOUT ROWID``): a reservation writes one B-tree entry and its settlement deletes
    it. The table only ever holds the calls in flight, so finding expired leases scans it.
    """

    __tablename__ = "llmspend_reservations"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)

    token: Mapped[str] = mapped_column(String(36), primary_key=True)
    period_ids: Mapped[str] = mapped_column(Text)
    amount_nanos: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime())
    lease_expires_at: Mapped[dt.datetime] = mapped_column(DateTime())
    owner: Mapped[str | None] = mapped_column(String(200))  # host:pid of the kernel


class Alert(Base):
    """A threshold crossed (or a refusal) on a budget, once per budget, period, threshold
    and limit."""

    __tablename__ = "llmspend_alerts"
    __table_args__ = (
        UniqueConstraint(  # a changed limit re-arms the thresholds (migration 0017)
            "budget_id",
            "period_start",
            "kind",
            "threshold_ppm",
            "limit_nanos",
            name="uq_llmspend_alerts_once",
        ),
        Index("ix_llmspend_alerts_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime())
    kind: Mapped[str] = mapped_column(String(16), default="threshold")  # or "refused"
    budget_id: Mapped[int | None] = mapped_column(
        ForeignKey("llmspend_budgets.id", ondelete="SET NULL")
    )
    budget_name: Mapped[str] = mapped_column(String(500))
    scope: Mapped[str] = mapped_column(String(16))
    period_start: Mapped[dt.datetime] = mapped_column(DateTime())
    threshold_ppm: Mapped[int] = mapped_column(Integer)  # fraction x 1e6
    percent_used: Mapped[float] = mapped_column(Float)
    spent_nanos: Mapped[int] = mapped_column(BigInteger)
    limit_nanos: Mapped[int] = mapped_column(BigInteger)
    call_cost_nanos: Mapped[int | None] = mapped_column(BigInteger)
    org_name: Mapped[str] = mapped_column(String(200))
    project_name: Mapped[str | None] = mapped_column(String(200))
    user_name: Mapped[str | None] = mapped_column(String(200))
    meta: Mapped[str | None] = mapped_column("metadata", Text)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(DateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))


class AuditEntry(Base):
    """Who changed which budget when, from what to what; hash-chained (``store.audit``)."""

    __tablename__ = "llmspend_audit"
    __table_args__ = (
        Index("ix_llmspend_audit_ts", "ts"),
        Index("ux_llmspend_audit_seq", "seq", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))  # create / update / delete
    budget_key: Mapped[str] = mapped_column(String(600))
    budget_id: Mapped[int | None] = mapped_column(BigInteger)
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)
    seq: Mapped[int | None] = mapped_column(BigInteger)  # 1, 2, 3... in chain order
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class WebhookDelivery(Base):
    """The outcome of POSTing one alert to one webhook (after its retries)."""

    __tablename__ = "llmspend_webhook_deliveries"
    __table_args__ = (Index("ix_llmspend_webhook_deliveries_ts", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(DateTime())
    alert_id: Mapped[int | None] = mapped_column(
        ForeignKey("llmspend_alerts.id", ondelete="SET NULL")
    )
    # Only scheme://host of the URL: webhook URLs often carry a secret token in the path.
    target: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))  # delivered / failed / refused
    attempts: Mapped[int] = mapped_column(Integer)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))


# -- analytics rollups (maintained by the rollups module) -----------------------------------


class _RollupBucket:
    """Columns shared by the rollup tables: a time bucket, the five dimensions, the sums.

    The primary key (bucket first) is both the upsert's conflict target and the index every
    analytics query range-scans; on SQLite the tables are ``WITHOUT ROWID``, so rows are
    stored in that order. ``cost_nanos`` sums the known costs; ``unpriced_calls`` counts
    calls whose cost is unknown.
    """

    bucket: Mapped[dt.datetime] = mapped_column(DateTime(), primary_key=True, sort_order=-1)
    org_name: Mapped[str] = mapped_column(String(200), primary_key=True, sort_order=-1)
    project_name: Mapped[str] = mapped_column(String(200), primary_key=True, sort_order=-1)
    user_name: Mapped[str] = mapped_column(String(200), primary_key=True, sort_order=-1)
    provider: Mapped[str] = mapped_column(String(32), primary_key=True, sort_order=-1)
    model: Mapped[str] = mapped_column(String(200), primary_key=True, sort_order=-1)
    calls: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    error_calls: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    refused_calls: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    unpriced_calls: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    cached_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)
    cost_nanos: Mapped[int] = mapped_column(BigInteger, default=0, sort_order=1)


class RollupHourly(_RollupBucket, Base):
    """Usage summed per UTC hour (``bucket`` = the hour's start, naive UTC) and dimensions."""

    __tablename__ = "llmspend_rollup_hourly"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupDaily(_RollupBucket, Base):
    """Usage summed per UTC day (``bucket`` = midnight UTC) and dimensions."""

    __tablename__ = "llmspend_rollup_daily"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupWeekly(_RollupBucket, Base):
    """Usage summed per UTC week (``bucket`` = Monday 00:00 UTC) and dimensions."""

    __tablename__ = "llmspend_rollup_weekly"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


# Narrower rollup families: the same columns, with the dimensions a family leaves out
# stored as "" (never a name), so per-org/project/model questions read far fewer rows.


class RollupTeamHourly(_RollupBucket, Base):
    """Per UTC hour × org × project × provider × model (``user_name`` = "")."""

    __tablename__ = "llmspend_rollup_hourly_team"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupTeamDaily(_RollupBucket, Base):
    """Per UTC day × org × project × provider × model (``user_name`` = "")."""

    __tablename__ = "llmspend_rollup_daily_team"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupTeamWeekly(_RollupBucket, Base):
    """Per UTC week × org × project × provider × model (``user_name`` = "")."""

    __tablename__ = "llmspend_rollup_weekly_team"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class _RollupModelBucket(_RollupBucket):
    """The model family's columns: also the call's ``api`` and ``service_tier`` (NULL
    stored as "") in the key (migration 0013), so grouping by them reads rollups too."""

    # Key columns before the measures (sort_order): SQLite 3.40's integrity_check reports
    # false "NULL value" errors in a WITHOUT ROWID table whose key columns follow others.
    api: Mapped[str] = mapped_column(String(64), primary_key=True)
    service_tier: Mapped[str] = mapped_column(String(32), primary_key=True)


class RollupModelHourly(_RollupModelBucket, Base):
    """Per UTC hour × provider × model × api × service tier (org, project, user = "")."""

    __tablename__ = "llmspend_rollup_hourly_model"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupModelDaily(_RollupModelBucket, Base):
    """Per UTC day × provider × model × api × service tier (org, project, user = "")."""

    __tablename__ = "llmspend_rollup_daily_model"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupModelWeekly(_RollupModelBucket, Base):
    """Per UTC week × provider × model × api × service tier (org, project, user = "")."""

    __tablename__ = "llmspend_rollup_weekly_model"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupTeamQuarter(_RollupBucket, Base):
    """Per UTC quarter hour × org × project × provider × model (``user_name`` = ""): time
    zones off the whole hour (+5:30, +5:45) read these instead of raw rows."""

    __tablename__ = "llmspend_rollup_quarter_team"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupModelQuarter(_RollupModelBucket, Base):
    """Per UTC quarter hour × provider × model × api × service tier (org, project, user
    = "")."""

    __tablename__ = "llmspend_rollup_quarter_model"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012  (SQLAlchemy reads it)


class RollupState(Base):
    """How far the rollups cover the usage rows, on SQLite: every row with an id up to
    ``rolled_through`` is in them, later rows are not yet (one row, ``id`` = 1).

    SQLite's writers take turns, so ids are committed in ascending order: a live call
    only appends its row, and the rows past the mark are summed into the rollups later
    (before any read of the rollups, with every ingest and spool replay, and by
    ``rebuild_rollups``), in one write transaction with the mark. PostgreSQL assigns ids
    out of commit order, so the mark is not used there: see :class:`RollupPending`.
    """

    __tablename__ = "llmspend_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rolled_through: Mapped[int] = mapped_column(BigInteger, default=0)


class BudgetConfig(Base):
    """Which budgets apply to whom: a version, PostgreSQL only (one row, ``id`` = 1;
    migration 0016).

    A deferred trigger adds one to ``version`` when a transaction that inserted, updated
    or deleted a budget commits. The guard remembers each identity's budgets with the
    version it read first, and its one-statement reservation checks the version still
    is that one (else it looks them up again). Unused on SQLite (``PRAGMA data_version``
    serves there).
    """

    __tablename__ = "llmspend_budget_config"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class UsageGeneration(Base):
    """The usage table's identity and generation (one row, ``id`` = 1; migration 0015).

    ``store_uid`` is random, given when the table is made; on SQLite triggers replace
    ``generation`` with a random number whenever a usage row is updated, deleted or
    inserted anywhere but at the end. records()'s columnar copy of complete id ranges
    (:mod:`llmspend.store.segments`) is used only while both are unchanged.
    """

    __tablename__ = "llmspend_usage_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    store_uid: Mapped[str] = mapped_column(String(32))
    generation: Mapped[int] = mapped_column(BigInteger)


class RollupPending(Base):
    """PostgreSQL: the ids of usage rows not yet summed into the rollups (migration 0013).

    A trigger on ``llmspend_usage`` adds every inserted row's id here, in the inserting
    transaction (one statement-level trigger: a live call pays no upsert); the rollups
    module folds the rows into every rollup table and deletes their ids in one statement,
    under an advisory lock, before analytics read them. Unused (empty) on SQLite.
    """

    __tablename__ = "llmspend_rollup_pending"

    usage_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


# -- the gateway -----------------------------------------------------------------------------


class GatewayKey(Base):
    """A gateway key: the SHA-256 of the secret (never the secret), its first characters
    for recognition, and the identity its calls are charged to."""

    __tablename__ = "llmspend_gateway_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    org_name: Mapped[str] = mapped_column(String(200))
    project_name: Mapped[str] = mapped_column(String(200))
    user_name: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime())
