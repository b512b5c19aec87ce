"""Deciding alerts: in the transaction that settles a call's cost, exactly once.

A threshold fires when a budget period's spent reaches ``threshold × limit``. The
decision is an ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key (budget, period,
kind, threshold, limit), inside the same transaction that adds the call's cost: with many
kernels on one store, exactly one of them inserts the row and fires the event. A limit
changed in the period re-arms the thresholds it puts ahead of the spend: they fire at the
new limit when a call passes them; one already passed fires only if it never fired in
the period (a budget set when its spend is past a threshold says so at its next call).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from ..budgets.ledger import BUDGET_COLS, ensure_period
from ..budgets.spec import parse_key
from ..budgets.thresholds import PPM, PeriodState, thresholds_ppm
from ..money import format_usd, nanos_to_usd
from ..store.fastsql import SQL, Tx, db_time
from ..store.models import Budget as BudgetRow
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["BudgetThresholdReached", "decide_refusal", "decide_thresholds"]


@dataclass(frozen=True)
class BudgetThresholdReached:
    """A budget crossed one of its thresholds (or refused a call, ``kind="refused"``)."""

    id: int
    ts: dt.datetime
    budget: str
    scope: str
    org: str
    project: str | None
    user: str | None
    threshold: Decimal
    percent_used: float
    spent_usd: Decimal
    limit_usd: Decimal
    call_cost_usd: Decimal | None
    period_start: dt.datetime
    acknowledged: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "threshold"
    # Where this budget's alerts go; its path is often a credential, so never in repr().
    webhook_url: str | None = field(default=None, repr=False)

    @property
    def message(self) -> str:
        spent, limit = format_usd(self.spent_usd), format_usd(self.limit_usd)
        if self.kind == "refused":
            return (
                f"llmspend: {self.scope} budget {self.budget!r} refused a call: "
                f"{spent} of {limit} spent ({self.percent_used:.1f} %)"
            )
        return (
            f"llmspend: {self.scope} budget {self.budget!r} reached "
            f"{_percent(self.threshold)} % — {spent} of {limit} ({self.percent_used:.1f} %)"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: money as exact decimal strings, times as ISO 8601 (UTC)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "ts": self.ts.isoformat(),
            "budget": self.budget,
            "scope": self.scope,
            "org": self.org,
            "project": self.project,
            "user": self.user,
            "threshold": str(self.threshold),
            "percent_used": self.percent_used,
            "spent_usd": str(self.spent_usd),
            "limit_usd": str(self.limit_usd),
            "call_cost_usd": None if self.call_cost_usd is None else str(self.call_cost_usd),
            "period_start": self.period_start.isoformat(),
            "metadata": self.metadata,
        }


def _percent(fraction: Decimal) -> str:
    """A threshold as the percentage it is: ``0.5`` → ``50``, ``0.125`` → ``12.5``."""
    return f"{(fraction * 100).normalize():f}"


_INSERT_ALERT = SQL(
    "INSERT INTO llmspend_alerts (ts, kind, budget_id, budget_name, scope, period_start, "
    "threshold_ppm, percent_used, spent_nanos, limit_nanos, call_cost_nanos, org_name, "
    "project_name, user_name, metadata, acknowledged) VALUES (:ts, :kind, :budget_id, "
    ":budget_name, :scope, :period_start, :threshold_ppm, :percent_used, :spent_nanos, "
    ":limit_nanos, :call_cost_nanos, :org_name, :project_name, :user_name, :meta, "
    ":acknowledged) ON CONFLICT DO NOTHING RETURNING id"
)


# A threshold already passed before the call, at a limit changed since: only if it has not
# fired in this period at any limit (a raised limit re-arms only what it puts ahead).
_INSERT_ALERT_FIRST = SQL(
    "INSERT INTO llmspend_alerts (ts, kind, budget_id, budget_name, scope, period_start, "
    "threshold_ppm, percent_used, spent_nanos, limit_nanos, call_cost_nanos, org_name, "
    "project_name, user_name, metadata, acknowledged) SELECT :ts, CAST(:kind AS VARCHAR(16)), "
    ":budget_id, :budget_name, :scope, :period_start, :threshold_ppm, :percent_used, "
    ":spent_nanos, :limit_nanos, :call_cost_nanos, :org_name, :project_name, :user_name, "
    ":meta, :acknowledged WHERE NOT EXISTS (SELECT 1 FROM llmspend_alerts WHERE budget_id = "
    ":budget_id AND period_start = :period_start AND kind = :kind AND threshold_ppm = "
    ":threshold_ppm) ON CONFLICT DO NOTHING RETURNING id"
)


def _insert_returning_id(
    conn: Connection | Tx, values: dict[str, Any], passed: bool = False
) -> int | None:
    """Insert the alert row unless it exists (the unique key makes it once per limit;
    ``passed``: a threshold passed before this call, once at any limit); its id."""
    tx = Tx.of(conn)
    params = dict(values)
    params["ts"] = db_time(tx, values["ts"])
    params["period_start"] = db_time(tx, values["period_start"])
    row = tx.run(_INSERT_ALERT_FIRST if passed else _INSERT_ALERT, params).first()
    return None if row is None else int(row[0])


def _metadata(call: Call, mode: str) -> dict[str, Any]:
    return {
        "provider": call.provider,
        "model": call.model,
        "api": call.api,
        "tags": dict(call.tags),
        "mode": mode,
    }


def _event(
    alert_id: int, values: dict[str, Any], mode: str, webhook: str | None
) -> BudgetThresholdReached:
    utc = dt.UTC
    return BudgetThresholdReached(
        id=alert_id,
        ts=values["ts"].replace(tzinfo=utc),
        budget=values["budget_name"],
        scope=values["scope"],
        org=values["org_name"],
        project=values["project_name"],
        user=values["user_name"],
        threshold=Decimal(values["threshold_ppm"]) / PPM,
        percent_used=values["percent_used"],
        spent_usd=nanos_to_usd(values["spent_nanos"]),
        limit_usd=nanos_to_usd(values["limit_nanos"]),
        call_cost_usd=nanos_to_usd(values["call_cost_nanos"]),
        period_start=values["period_start"].replace(tzinfo=utc),
        metadata=json.loads(values["meta"]),
        kind=values["kind"],
        webhook_url=webhook,
    )


def decide_thresholds(
    tx: Tx,
    call: Call,
    periods: list[PeriodState],
    cost_nanos: int,
    fired: set[tuple[Any, ...]] | None = None,
) -> list[BudgetThresholdReached]:
    """Insert the alert rows this call's settlement crossed; return their events in order.

    ``fired`` remembers the alerts whose row is known to exist, so that a period past a
    threshold does not try the insert again on every later call.
    """
    fired = set() if fired is None else fired
    now = utcnow()
    events = []
    for p in periods:
        if p.limit_nanos <= 0:
            continue
        b = p.budget
        for ppm in thresholds_ppm(b.thresholds, b.mode):
            if p.spent_nanos * PPM < ppm * p.limit_nanos:
                break
            key = (b.id, b.created_at, p.period_start, ppm, p.limit_nanos)
            if key in fired:
                continue
            values = {
                "ts": now,
                "kind": "threshold",
                "budget_id": b.id,
                "budget_name": b.name,
                "scope": b.scope,
                "period_start": p.period_start,
                "threshold_ppm": ppm,
                "percent_used": round(p.spent_nanos * 100 / p.limit_nanos, 4),
                "spent_nanos": p.spent_nanos,
                "limit_nanos": p.limit_nanos,
                "call_cost_nanos": cost_nanos,
                "org_name": call.org,
                "project_name": call.project,
                "user_name": call.user,
                "meta": json.dumps(_metadata(call, b.mode), sort_keys=True, default=str),
                "acknowledged": False,
            }
            passed = (p.spent_nanos - cost_nanos) * PPM >= ppm * p.limit_nanos
            alert_id = _insert_returning_id(tx, values, passed)
            if alert_id is None:
                # The row exists (committed: the insert saw it). Ours is not remembered
                # until a later call finds it, since this transaction may yet roll back.
                fired.add(key)
            else:
                events.append(_event(alert_id, values, b.mode, b.webhook_url))
    return events


def decide_refusal(
    conn: Connection, call: Call, scope: str, budget_name: str
) -> BudgetThresholdReached | None:
    """Record that a hard budget refused a call: once per budget and period."""
    key = parse_key(scope, budget_name)
    budget = conn.execute(
        select(*BUDGET_COLS).where(
            BudgetRow.scope == key.scope, BudgetRow.name == key.name, BudgetRow.default_for == ""
        )
    ).first()
    if budget is None:
        return None
    period = ensure_period(conn, budget, utcnow())
    limit = period.limit_nanos
    values = {
        "ts": utcnow(),
        "kind": "refused",
        "budget_id": budget.id,
        "budget_name": budget.name,
        "scope": budget.scope,
        "period_start": period.period_start,
        "threshold_ppm": 0,
        "percent_used": round(period.spent_nanos * 100 / limit, 4) if limit else 0.0,
        "spent_nanos": period.spent_nanos,
        "limit_nanos": limit,
        "call_cost_nanos": None,
        "org_name": call.org,
        "project_name": call.project,
        "user_name": call.user,
        "meta": json.dumps(_metadata(call, budget.mode), sort_keys=True, default=str),
        "acknowledged": False,
    }
    alert_id = _insert_returning_id(conn, values)
    return None if alert_id is None else _event(alert_id, values, budget.mode, budget.webhook_url)
