"""Budgets and alerts as frames: utilization per budget, alerts summed per budget."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from ..alerting.query import fetch_alerts
from ..budgets.manage import budget_status
from ..budgets.spec import check_choice, parse_key, thresholds_from_json
from ..errors import ValidationError
from ..money import nanos_to_usd
from ..names import name_list
from ..store.models import Budget as BudgetRow
from ..store.models import BudgetPeriod
from ..timeutil import utcnow
from .frames import Filter, empty_frame, period_dtype, resolve_store, served, window

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = ["ALERT_SUMMARY_COLUMNS", "UTILIZATION_COLUMNS", "alerts_summary", "budget_utilization"]

UTC = dt.UTC

#: budget_utilization() columns → dtype.
UTILIZATION_COLUMNS: dict[str, Any] = {
    "budget": object, "scope": object, "org": object, "project": object, "user": object,
    "mode": object, "period": object, "period_start": "utc", "period_end": "utc",
    "limit_usd": object, "spent_usd": object, "reserved_usd": object, "remaining_usd": object,
    "percent_used": "float64", "state": object, "projected_usd": object, "calls": "int64",
    "inherited": bool, "current": bool,
}  # fmt: skip


def _no_usage_filters(provider: Filter, model: Filter, extra: dict[str, Any], what: str) -> None:
    named = [n for n, v in (("provider", provider), ("model", model)) if v is not None]
    named += [n for n, v in extra.items() if v is not None]
    if named:
        raise ValidationError(
            f"{what}: budgets count every provider and model; the filter(s) "
            f"{', '.join(named)} do not apply (use org, project, user or scope)"
        )


def _dtypes(columns: dict[str, Any]) -> dict[str, Any]:
    return {c: (period_dtype(UTC) if t == "utc" else t) for c, t in columns.items()}


def _state(spent: int, limit: int, thresholds: Sequence[Decimal]) -> str:
    if spent >= limit:
        return "exceeded"
    warn = max((t for t in thresholds if t < 1), default=Decimal("0.8"))
    return "warning" if Decimal(spent) >= warn * limit else "ok"


@served
def budget_utilization(
    since: Any = None,
    until: Any = None,
    *,
    scope: str | None = None,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Each budget's utilization: its current period, or its periods in a time range.

    Without ``since``/``until``: every concrete budget in its current period (from
    :func:`llmspend.budget_status`: expired reservations reclaimed, ``projected_usd`` a
    straight-line projection to the period end). With them: every stored period of every
    budget that overlaps ``[since, until)`` (``projected_usd`` only for current periods).
    ``org``/``project``/``user`` keep budgets whose own name has that part (an org budget
    has no project); ``scope`` keeps one scope. Budgets count every provider and model, so
    ``provider``/``model`` filters are a ValidationError.

    Columns: ``budget``, ``scope``, ``org``, ``project``, ``user``, ``mode``, ``period``,
    ``period_start``, ``period_end`` (UTC; None for ``total``), ``limit_usd``,
    ``spent_usd``, ``reserved_usd``, ``remaining_usd``, ``projected_usd`` (Decimal),
    ``percent_used`` (0–100), ``state`` (ok/warning/exceeded), ``calls``, ``inherited``
    (made from a default), ``current`` (the period in force now).
    """
    import pandas as pd

    _no_usage_filters(provider, model, filters, "budget_utilization")
    if scope is not None:
        check_choice("scope", scope, ("org", "project", "user"))
    wanted = {"org": name_list(org, "org"), "project": name_list(project, "project"),
              "user": name_list(user, "user")}  # fmt: skip
    lo, hi = window(since, until)
    st = resolve_store(store)
    rows: list[dict[str, Any]] = []
    now = utcnow()
    current = {
        (s.scope, s.budget): s
        for s in budget_status(st, scope)  # also creates current periods
    }
    if lo is None and hi is None:
        for s in current.values():
            key = parse_key(s.scope, s.budget)
            rows.append(
                {
                    "budget": s.budget,
                    "scope": s.scope,
                    "org": key.org,
                    "project": key.project,
                    "user": key.user,
                    "mode": s.mode,
                    "period": s.period,
                    "period_start": s.period_start,
                    "period_end": s.period_end,
                    "limit_usd": s.limit_usd,
                    "spent_usd": s.spent_usd,
                    "reserved_usd": s.reserved_usd,
                    "remaining_usd": s.remaining_usd,
                    "percent_used": s.percent_used,
                    "state": s.state,
                    "projected_usd": s.projected_usd,
                    "calls": s.calls,
                    "inherited": s.inherited,
                    "current": True,
                }
            )
    else:
        stmt = (
            select(
                BudgetRow.scope,
                BudgetRow.name,
                BudgetRow.mode,
                BudgetRow.period,
                BudgetRow.thresholds,
                BudgetRow.derived_from,
                BudgetPeriod.period_start,
                BudgetPeriod.period_end,
                BudgetPeriod.limit_nanos,
                BudgetPeriod.spent_nanos,
                BudgetPeriod.reserved_nanos,
                BudgetPeriod.calls,
            )
            .join(BudgetRow, BudgetRow.id == BudgetPeriod.budget_id)
            .where(BudgetRow.default_for == "")
            .order_by(BudgetRow.name, BudgetRow.scope, BudgetPeriod.period_start)
        )
        if scope is not None:
            stmt = stmt.where(BudgetRow.scope == scope)
        if hi is not None:
            stmt = stmt.where(BudgetPeriod.period_start < hi)
        if lo is not None:
            stmt = stmt.where(or_(BudgetPeriod.period_end.is_(None), BudgetPeriod.period_end > lo))
        with st.begin() as conn:
            periods = conn.execute(stmt).all()
        for p in periods:
            key = parse_key(p.scope, p.name)
            live = current.get((p.scope, p.name))
            is_current = (
                live is not None and live.period_start.replace(tzinfo=None) == p.period_start
            )
            limit, spent, reserved = p.limit_nanos, p.spent_nanos, max(p.reserved_nanos, 0)
            rows.append(
                {
                    "budget": p.name,
                    "scope": p.scope,
                    "org": key.org,
                    "project": key.project,
                    "user": key.user,
                    "mode": p.mode,
                    "period": p.period,
                    "period_start": p.period_start.replace(tzinfo=UTC),
                    "period_end": p.period_end and p.period_end.replace(tzinfo=UTC),
                    "limit_usd": nanos_to_usd(limit),
                    "spent_usd": nanos_to_usd(spent),
                    "reserved_usd": nanos_to_usd(reserved),
                    "remaining_usd": nanos_to_usd(max(limit - spent - reserved, 0)),
                    "percent_used": round(float(Decimal(spent) * 100 / Decimal(limit)), 4)
                    if limit
                    else 0.0,
                    "state": _state(spent, limit, thresholds_from_json(p.thresholds)),
                    "projected_usd": live.projected_usd if is_current and live else None,
                    "calls": int(p.calls),
                    "inherited": p.derived_from is not None,
                    "current": is_current and p.period_start <= now,
                }
            )
    rows = [r for r in rows if all(w is None or r[k] in w for k, w in wanted.items())]
    columns = _dtypes(UTILIZATION_COLUMNS)
    if not rows:
        return empty_frame(columns)
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=t) for c, t in columns.items()})


#: alerts_summary() columns → dtype.
ALERT_SUMMARY_COLUMNS: dict[str, Any] = {
    "budget": object, "scope": object, "org": object, "project": object, "user": object,
    "alerts": "int64", "threshold_alerts": "int64", "refusals": "int64",
    "unacknowledged": "int64", "max_threshold": object, "max_percent_used": "float64",
    "first_ts": "utc", "last_ts": "utc", "last_spent_usd": object, "limit_usd": object,
}  # fmt: skip


@served
def alerts_summary(
    since: Any = None,
    until: Any = None,
    *,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    acknowledged: bool | None = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Alerts in ``[since, until)`` summed per budget, the most recent first.

    ``org``/``project``/``user`` filter the alerts' attribution; ``provider``/``model``
    keep alerts whose crossing (or refused) call used that provider/model;
    ``acknowledged`` keeps only acknowledged (True) or open (False) alerts.

    Columns: ``budget``, ``scope``, ``org``, ``project``, ``user`` (of the latest alert),
    ``alerts`` (count), ``threshold_alerts``, ``refusals``, ``unacknowledged``,
    ``max_threshold`` (Decimal fraction, None if only refusals), ``max_percent_used``,
    ``first_ts``, ``last_ts`` (UTC), ``last_spent_usd`` and ``limit_usd`` (Decimal, from
    the latest alert).
    """
    import pandas as pd

    if filters:
        raise ValidationError(
            f"unknown filter {next(iter(filters))!r} for alerts_summary; use one of: org, "
            "project, user, provider, model, acknowledged"
        )
    providers, models = name_list(provider, "provider"), name_list(model, "model")
    st = resolve_store(store)
    lo, hi = window(since, until)
    frame = fetch_alerts(st, lo, hi, acknowledged=acknowledged, org=org, project=project,
                         user=user)  # fmt: skip
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in frame.to_dict("records"):
        meta: dict[str, Any] = r["metadata"] if isinstance(r["metadata"], dict) else {}
        if providers is not None and meta.get("provider") not in providers:
            continue
        if models is not None and meta.get("model") not in models:
            continue
        g = groups.get((r["budget"], r["scope"]))
        if g is None:
            g = groups[(r["budget"], r["scope"])] = {
                "budget": r["budget"], "scope": r["scope"], "alerts": 0, "threshold_alerts": 0,
                "refusals": 0, "unacknowledged": 0, "max_threshold": None,
                "max_percent_used": float("nan"), "first_ts": r["ts"],
            }  # fmt: skip
        g["alerts"] += 1
        if r["kind"] == "refused":
            g["refusals"] += 1
        else:
            g["threshold_alerts"] += 1
            if g["max_threshold"] is None or r["threshold"] > g["max_threshold"]:
                g["max_threshold"] = r["threshold"]
        g["unacknowledged"] += 0 if r["acknowledged"] else 1
        pct = float(r["percent_used"])
        if not g["max_percent_used"] >= pct:  # NaN-safe max
            g["max_percent_used"] = pct
        g.update(org=r["org"], project=r["project"], user=r["user"], last_ts=r["ts"],
                 last_spent_usd=r["spent_usd"], limit_usd=r["limit_usd"])  # fmt: skip
    columns = _dtypes(ALERT_SUMMARY_COLUMNS)
    rows = sorted(groups.values(), key=lambda g: (g["last_ts"], g["budget"]), reverse=True)
    if not rows:
        return empty_frame(columns)
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=t) for c, t in columns.items()})
