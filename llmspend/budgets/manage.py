"""Setting, changing, listing and deleting budgets; their status and history.

Everything lives in the store (never only in a cache) and every change is audited in
``llmspend_audit`` (hash-chained, see ``llmspend.store.audit``): who, when, and the definition
before and after, with the webhook URL masked. ``actor=`` is who made the change (the gateway
passes the authenticated one); without it, the local user. A webhook URL is never read back:
every :class:`Budget` returned carries its masked form.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from ..config import default_attribution
from ..errors import BudgetError
from ..money import nanos_to_usd
from ..store.audit import append_entry
from ..store.fastsql import SQL, Tx, db_time
from ..store.hierarchy import ensure_entities
from ..store.models import AuditEntry, BudgetPeriod
from ..store.models import Budget as BudgetRow
from ..timeutil import clock_shift, utcnow
from .holds import carry_holds, forget_periods, open_holds, reclaim_expired
from .ledger import (
    BUDGET_COLS,
    Period,
    budget_and_children,
    ensure_period,
    recorded_spend,
    recount_current,
)
from .periods import current_bounds, period_bounds
from .spec import (
    MODES,
    UNPRICED_POLICIES,
    Budget,
    BudgetKey,
    BudgetStatus,
    check_choice,
    check_period,
    check_timezone,
    check_webhook_url,
    mask_url,
    parse_key,
    parse_limit,
    parse_thresholds,
    thresholds_from_json,
    thresholds_json,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = [
    "budget_history",
    "budget_status",
    "delete_budget",
    "get_budget",
    "list_budgets",
    "set_budget",
    "update_budget",
]

log = logging.getLogger("llmspend")

DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
_DEFINITION = (
    "limit_nanos",
    "period",
    "mode",
    "thresholds",
    "timezone",
    "week_start",
    "unpriced_policy",
    "webhook_url",
)


def _actor(actor: str | None) -> str:
    return (actor or default_attribution()[2])[:200]


def _definition(row: Any) -> dict[str, Any]:
    d = {k: getattr(row, k) for k in _DEFINITION}
    d["limit_usd"] = str(nanos_to_usd(d.pop("limit_nanos")))
    d["thresholds"] = json.loads(d["thresholds"])
    d["webhook_url"] = mask_url(d["webhook_url"])
    return d


def _audit(
    conn: Connection,
    actor: str,
    action: str,
    key: str,
    budget_id: int | None,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> None:
    append_entry(
        conn, actor=actor, action=action, budget_key=key, budget_id=budget_id, old=old, new=new
    )


def _find(conn: Connection, key: BudgetKey) -> Any:
    return conn.execute(
        select(*BUDGET_COLS).where(
            BudgetRow.scope == key.scope,
            BudgetRow.name == key.name,
            BudgetRow.default_for == key.default_for,
        )
    ).first()


def _to_budget(row: Any, created: dt.datetime, updated: dt.datetime) -> Budget:
    return Budget(
        id=row.id,
        scope=row.scope,
        name=row.name,
        limit_usd=nanos_to_usd(row.limit_nanos),
        period=row.period,
        mode=row.mode,
        thresholds=thresholds_from_json(row.thresholds),
        timezone=row.timezone,
        week_start=row.week_start,
        is_default=bool(row.default_for),
        inherited=row.derived_from is not None,
        unpriced_policy=row.unpriced_policy or "refuse",
        webhook_url=mask_url(row.webhook_url),
        created_at=created,
        updated_at=updated,
    )


def _load(conn: Connection, budget_id: int) -> Budget:
    row = conn.execute(
        select(*BUDGET_COLS, BudgetRow.created_at, BudgetRow.updated_at).where(
            BudgetRow.id == budget_id
        )
    ).one()
    return _to_budget(row, row.created_at, row.updated_at)


def _validated(
    limit: Any,
    period: Any,
    mode: Any,
    thresholds: Any,
    timezone: Any,
    week_start: Any,
    unpriced: Any,
    webhook_url: Any,
) -> dict[str, Any]:
    if isinstance(week_start, bool) or not isinstance(week_start, int) or not 0 <= week_start <= 6:
        raise BudgetError(f"week_start must be 0 (Monday) to 6 (Sunday), got {week_start!r}")
    if webhook_url is not None:
        check_webhook_url(webhook_url)
    return {
        "limit_nanos": parse_limit(limit),
        "period": check_period(period),
        "mode": check_choice("mode", mode, MODES),
        "thresholds": thresholds_json(parse_thresholds(thresholds)),
        "timezone": check_timezone(timezone),
        "week_start": week_start,
        "unpriced_policy": check_choice("unpriced policy", unpriced, UNPRICED_POLICIES),
        "webhook_url": webhook_url,
    }


def _propagate(conn: Connection, budget_id: int, values: dict[str, Any], now: dt.datetime) -> None:
    """A changed definition reaches the current period's limit and derived children."""
    children = [
        r[0] for r in conn.execute(select(BudgetRow.id).where(BudgetRow.derived_from == budget_id))
    ]
    if children:
        conn.execute(
            update(BudgetRow).where(BudgetRow.id.in_(children)).values(**values, updated_at=now)
        )
    for bid in [budget_id, *children]:
        budget = conn.execute(select(*BUDGET_COLS).where(BudgetRow.id == bid)).one()
        if budget.default_for:
            continue
        start, _ = period_bounds(budget.period, budget.timezone, now, week_start=budget.week_start)
        conn.execute(
            update(BudgetPeriod)
            .where(BudgetPeriod.budget_id == bid, BudgetPeriod.period_start == start)
            .values(limit_nanos=budget.limit_nanos, updated_at=now)
        )


def set_budget(
    store: Store,
    scope: str,
    name: str,
    limit: Any,
    period: str = "month",
    *,
    mode: str = "hard",
    thresholds: Any = DEFAULT_THRESHOLDS,
    timezone: str = "UTC",
    week_start: int = 0,
    unpriced: str = "refuse",
    webhook_url: str | None = None,
    actor: str | None = None,
) -> Budget:
    """Create or replace the budget ``scope``/``name`` (see ``llmspend.set_budget``)."""
    key = parse_key(scope, name)
    values = _validated(
        limit, period, mode, thresholds, timezone, week_start, unpriced, webhook_url
    )
    who = _actor(actor)
    now = utcnow()
    with store.begin(write=True) as conn:
        ensure_entities(conn, [(key.org, _real(key.project), _real(key.user))])
        old = _find(conn, key)
        if old is None:
            res = conn.execute(
                insert(BudgetRow).values(
                    scope=key.scope,
                    name=key.name,
                    default_for=key.default_for,
                    org_name=key.org,
                    project_name=key.project,
                    user_name=key.user,
                    created_at=now,
                    updated_at=now,
                    created_by=who,
                    derived_from=None,
                    **values,
                )
            )
            budget_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            new_row = conn.execute(select(*BUDGET_COLS).where(BudgetRow.id == budget_id)).one()
            _audit(conn, who, "create", key.label, budget_id, None, _definition(new_row))
        else:
            budget_id = old.id
            moved = any(getattr(old, k) != values[k] for k in ("period", "timezone", "week_start"))
            holds = open_holds(conn) if moved else []  # (PostgreSQL: locked before periods)
            conn.execute(
                update(BudgetRow)
                .where(BudgetRow.id == budget_id)
                .values(**values, derived_from=None, updated_at=now)
            )
            new_row = conn.execute(select(*BUDGET_COLS).where(BudgetRow.id == budget_id)).one()
            _audit(
                conn, who, "update", key.label, budget_id, _definition(old), _definition(new_row)
            )
            _propagate(conn, budget_id, values, now)
            if moved:  # a period row left from an earlier time under this definition
                recount_current(conn, budget_id, now)
            if holds:
                _carry(conn, budget_id, holds, now)
        if not key.default_for:
            ensure_period(conn, new_row, now)
        return _load(conn, budget_id)


def _carry(conn: Connection, budget_id: int, holds: list[Any], now: dt.datetime) -> None:
    """Calls in flight on a budget (or a default's children) whose period changed: their
    holds also name the new current period, which counts what they reserve (made here if
    new: it counts only the calls recorded so far) and is charged their cost at settlement."""
    named = {int(i) for h in holds for i in h.period_ids.split(",")}
    for budget in budget_and_children(conn, budget_id):
        periods = set(
            conn.execute(select(BudgetPeriod.id).where(BudgetPeriod.budget_id == budget.id))
            .scalars()
            .all()
        )
        if periods.isdisjoint(named):
            continue
        current = ensure_period(conn, budget, now)
        carry_holds(conn, holds, periods - {current.id}, current.id, current.period_start)


def _real(part: str | None) -> str | None:
    return None if part in (None, "*") else part


def update_budget(
    store: Store, scope: str, name: str, *, actor: str | None = None, **changes: Any
) -> Budget:
    """Change some fields of an existing budget; the others keep their values."""
    allowed = {
        "limit",
        "period",
        "mode",
        "thresholds",
        "timezone",
        "week_start",
        "unpriced",
        "webhook_url",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise BudgetError(
            f"cannot update {', '.join(sorted(unknown))}; use: {', '.join(sorted(allowed))}"
        )
    current = get_budget(store, scope, name)
    with store.begin() as conn:  # the real URL: the Budget carries only its masked form
        raw_url = conn.execute(
            select(BudgetRow.webhook_url).where(BudgetRow.id == current.id)
        ).scalar()
    merged = {
        "limit": current.limit_usd,
        "period": current.period,
        "mode": current.mode,
        "thresholds": current.thresholds,
        "timezone": current.timezone,
        "week_start": current.week_start,
        "unpriced": current.unpriced_policy,
        "webhook_url": raw_url,
    }
    merged.update(changes)
    limit = merged.pop("limit")
    period = merged.pop("period")
    return set_budget(store, scope, name, limit, period, actor=actor, **merged)  # type: ignore[arg-type]


def get_budget(store: Store, scope: str, name: str) -> Budget:
    key = parse_key(scope, name)
    with store.begin() as conn:
        row = _find(conn, key)
        if row is None:
            raise BudgetError(
                f"no {key.label} budget (list_budgets() or `llmspend budget list` shows those set)"
            )
        return _load(conn, row.id)


def delete_budget(store: Store, scope: str, name: str, *, actor: str | None = None) -> None:
    """Delete a budget (a default takes its derived children with it). History is audited."""
    key = parse_key(scope, name)
    who = _actor(actor)
    with store.begin(write=True) as conn:
        row = _find(conn, key)
        if row is None:
            raise BudgetError(f"no {key.label} budget to delete")
        _audit(conn, who, "delete", key.label, row.id, _definition(row), None)
        doomed = select(BudgetPeriod.id).join(BudgetRow, BudgetRow.id == BudgetPeriod.budget_id)
        doomed = doomed.where((BudgetRow.id == row.id) | (BudgetRow.derived_from == row.id))
        forget_periods(conn, set(conn.execute(doomed).scalars()))
        conn.execute(delete(BudgetRow).where(BudgetRow.id == row.id))


def list_budgets(store: Store, scope: str | None = None) -> list[Budget]:
    if scope is not None:
        check_choice("scope", scope, ("org", "project", "user"))
    stmt = select(*BUDGET_COLS, BudgetRow.created_at, BudgetRow.updated_at).order_by(
        BudgetRow.org_name, BudgetRow.scope, BudgetRow.name
    )
    if scope is not None:
        stmt = stmt.where(BudgetRow.scope == scope)
    with store.begin() as conn:
        return [_to_budget(r, r.created_at, r.updated_at) for r in conn.execute(stmt)]


def _state(spent: int, limit: int, thresholds: tuple[Decimal, ...]) -> str:
    if spent >= limit:
        return "exceeded"
    warn = max((t for t in thresholds if t < 1), default=Decimal("0.8"))
    return "warning" if Decimal(spent) >= warn * limit else "ok"


def _status(budget: Any, period: Any, now: dt.datetime) -> BudgetStatus:
    limit, spent, reserved = period.limit_nanos, period.spent_nanos, max(period.reserved_nanos, 0)
    projected: Decimal | None = None
    if period.period_end is not None:
        elapsed = (now - period.period_start).total_seconds()
        length = (period.period_end - period.period_start).total_seconds()
        if elapsed > 0:
            projected = (
                Decimal(spent) * Decimal(length) / Decimal(elapsed) / Decimal(10**9)
            ).quantize(Decimal("0.000001"))
    percent = float(Decimal(spent) * 100 / Decimal(limit)) if limit else 0.0
    utc = dt.UTC
    return BudgetStatus(
        budget=budget.name,
        scope=budget.scope,
        mode=budget.mode,
        period=budget.period,
        period_start=period.period_start.replace(tzinfo=utc),
        period_end=None if period.period_end is None else period.period_end.replace(tzinfo=utc),
        limit_usd=nanos_to_usd(limit),
        spent_usd=nanos_to_usd(spent),
        reserved_usd=nanos_to_usd(reserved),
        remaining_usd=nanos_to_usd(max(limit - spent - reserved, 0)),
        percent_used=round(percent, 4),
        state=_state(spent, limit, thresholds_from_json(budget.thresholds)),
        projected_usd=projected,
        calls=int(period.calls),
        inherited=budget.derived_from is not None,
        timezone=budget.timezone,
    )


_EXPIRED = SQL(
    "SELECT period_ids, amount_nanos FROM llmspend_reservations WHERE lease_expires_at < :now"
)
_EXPIRED_DB_CLOCK = SQL(  # PostgreSQL: the database's clock, as holds.reclaim_expired reads it
    "SELECT period_ids, amount_nanos FROM llmspend_reservations WHERE lease_expires_at < "
    "(statement_timestamp() AT TIME ZONE 'UTC') + CAST(:shift AS double precision) "
    "* interval '1 second'"
)


def budget_status(
    store: Store, scope: str | None = None, name: str | None = None, *, wait: float | None = None
) -> list[BudgetStatus]:
    """Status of every concrete budget (or one scope, or one budget) in its current period.

    Read first; then, only when a current period row is missing or a hold's lease has
    expired, write (make the row, give the hold back). A store that cannot be written
    (read-only) gets the status computed without writing. On SQLite the write lock is
    taken first, waiting ``wait`` seconds (default: the busy timeout) a slice at a time,
    so the status is one consistent reading and a locked store says so.
    """
    stmt = select(*BUDGET_COLS).where(BudgetRow.default_for == "")
    if scope is not None:
        check_choice("scope", scope, ("org", "project", "user"))
        stmt = stmt.where(BudgetRow.scope == scope)
    if name is not None:
        if scope is None:
            raise BudgetError("budget_status(name=...) needs a scope too")
        key = parse_key(scope, name)
        stmt = stmt.where(BudgetRow.name == key.name)
    now = utcnow()
    with store.begin(write=True, wait=wait) as conn:
        budgets = list(
            conn.execute(stmt.order_by(BudgetRow.org_name, BudgetRow.scope, BudgetRow.name))
        )
        if name is not None and not budgets:
            raise BudgetError(f"no {scope} budget {name!r}")
        tx = Tx.of(conn)
        periods = _current(conn, budgets, now)
        missing = [b for b in budgets if b.id not in periods]
        expired = _expired(tx, now)
        if missing or expired:
            try:
                with conn.begin_nested():
                    made = {b.id: ensure_period(conn, b, now) for b in missing}
                    reclaim_expired(conn, now)
            except DBAPIError as e:
                if not _read_only(e):
                    raise
                log.debug("llmspend: the store is read-only; budget status computed unsaved")
                for b in missing:
                    periods[b.id] = _unsaved_period(tx, b, now)
                return [_status(b, _without(periods[b.id], expired), now) for b in budgets]
            periods = {**made, **_current(conn, budgets, now)}  # (as reclaimed)
        return [_status(b, periods[b.id], now) for b in budgets]


def _current(conn: Connection, budgets: list[Any], now: dt.datetime) -> dict[int, Period]:
    """The current period row of each budget that has one (a read)."""
    if not budgets:
        return {}
    rows = conn.execute(
        select(
            BudgetPeriod.id,
            BudgetPeriod.budget_id,
            BudgetPeriod.period_start,
            BudgetPeriod.period_end,
            BudgetPeriod.limit_nanos,
            BudgetPeriod.spent_nanos,
            BudgetPeriod.reserved_nanos,
            BudgetPeriod.calls,
        )
        .where(BudgetPeriod.budget_id.in_([b.id for b in budgets]))
        .where(BudgetPeriod.period_start <= now)
        .where(BudgetPeriod.period_end.is_(None) | (BudgetPeriod.period_end > now))
    ).all()
    by_start = {(r.budget_id, r.period_start): r for r in rows}
    out = {}
    for b in budgets:
        start, _ = current_bounds(b.period, b.timezone, now, week_start=b.week_start)
        r = by_start.get((b.id, start))
        if r is not None:
            out[b.id] = Period(
                r.id,
                r.period_start,
                r.period_end,
                r.limit_nanos,
                r.spent_nanos,
                r.reserved_nanos,
                r.calls,
            )
    return out


def _expired(tx: Tx, now: dt.datetime) -> list[Any]:
    """``(period_ids, amount_nanos)`` of the holds whose lease has expired (a read)."""
    if tx.sqlite:
        return tx.run(_EXPIRED, {"now": db_time(tx, now)}).all()
    return tx.run(_EXPIRED_DB_CLOCK, {"shift": clock_shift().total_seconds()}).all()


def _unsaved_period(tx: Tx, budget: Any, now: dt.datetime) -> Period:
    """The current period a budget would get (see ``ensure_period``), not written."""
    start, end = current_bounds(budget.period, budget.timezone, now, week_start=budget.week_start)
    spent, calls = recorded_spend(tx, budget, start, end)
    return Period(0, start, end, budget.limit_nanos, spent, 0, calls)


def _without(period: Period, expired: list[Any]) -> Period:
    """``period`` with what expired holds keep on it taken off its reserved amount."""
    gone = sum(amount for ids, amount in expired if str(period.id) in ids.split(","))
    return period._replace(reserved_nanos=period.reserved_nanos - gone) if gone else period


def _read_only(e: DBAPIError) -> bool:
    """Whether ``e`` says the store cannot be written at all (SQLite's SQLITE_READONLY,
    PostgreSQL's read-only transaction), rather than not now."""
    orig = e.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF == 8)
    return getattr(orig, "sqlstate", None) == "25006"


def budget_history(store: Store, scope: str, name: str) -> pd.DataFrame:
    """Every period of a budget so far: start, end, limit, spent, calls (newest first)."""
    import pandas as pd

    key = parse_key(scope, name)
    with store.begin() as conn:
        row = _find(conn, key)
        if row is None:
            raise BudgetError(f"no {key.label} budget")
        periods = conn.execute(
            select(
                BudgetPeriod.period_start,
                BudgetPeriod.period_end,
                BudgetPeriod.limit_nanos,
                BudgetPeriod.spent_nanos,
                BudgetPeriod.calls,
            )
            .where(BudgetPeriod.budget_id == row.id)
            .order_by(BudgetPeriod.period_start.desc())
        ).all()
    utc = dt.UTC
    return pd.DataFrame(
        {
            "period_start": [p.period_start.replace(tzinfo=utc) for p in periods],
            "period_end": [
                None if p.period_end is None else p.period_end.replace(tzinfo=utc) for p in periods
            ],
            "limit_usd": pd.Series([nanos_to_usd(p.limit_nanos) for p in periods], dtype=object),
            "spent_usd": pd.Series([nanos_to_usd(p.spent_nanos) for p in periods], dtype=object),
            "calls": pd.Series([int(p.calls) for p in periods], dtype="int64"),
        },
        columns=["period_start", "period_end", "limit_usd", "spent_usd", "calls"],
    )


def audit_log(store: Store, scope: str | None = None, name: str | None = None) -> pd.DataFrame:
    """The audit trail of budget changes (oldest first)."""
    import pandas as pd

    stmt = select(
        AuditEntry.ts,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.budget_key,
        AuditEntry.old,
        AuditEntry.new,
    ).order_by(AuditEntry.seq, AuditEntry.id)
    if scope is not None and name is not None:
        stmt = stmt.where(AuditEntry.budget_key == parse_key(scope, name).label)
    with store.begin() as conn:
        rows = conn.execute(stmt).all()
    return pd.DataFrame(
        [
            {
                "ts": r.ts.replace(tzinfo=dt.UTC),
                "actor": r.actor,
                "action": r.action,
                "budget": r.budget_key,
                "old": json.loads(r.old) if r.old else None,
                "new": json.loads(r.new) if r.new else None,
            }
            for r in rows
        ],
        columns=["ts", "actor", "action", "budget", "old", "new"],
    )
