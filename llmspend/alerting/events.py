"""Deciding alerts: in the transaction that settles a call's cost, exactly once.

A threshold fires when a budget period's spent reaches ``threshold × limit``. The
decision is an ``INSERT ... ON CONFLICT DO NOTHING`` on the unique key (budget, period,
kind, threshold), inside the same transaction that adds the call's cost: with many
kernels on one store, exactly one of them inserts the row and fires the event.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from ..money import format_usd, nanos_to_usd
from ..store.fastsql import SQL, py_time, run
from ..store.models import Alert
from ..store.models import Budget as BudgetRow
from ..timeutil import utcnow

if TYPE_CHECKING:
    from ..pipeline import Call

__all__ = ["BudgetThresholdReached", "decide_refusal", "decide_thresholds"]

PPM = 1_000_000


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
            f"{self.threshold * 100:.0f} % — {spent} of {limit} ({self.percent_used:.1f} %)"
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


def _insert_returning_id(conn: Connection, values: dict[str, Any]) -> int | None:
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(Alert).values(**values).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(Alert).values(**values).on_conflict_do_nothing()
    row = conn.execute(stmt.returning(Alert.id)).first()
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


def _thresholds_ppm(thresholds_json: str, mode: str) -> list[int]:
    values = {int(Decimal(t) * PPM) for t in json.loads(thresholds_json or "[]")}
    if mode == "soft":
        values.add(PPM)  # soft budgets always say when they pass 100 %
    return sorted(values)


_CROSSING = (
    "SELECT p.id, p.period_start, p.spent_nanos, p.limit_nanos, b.id AS budget_id, b.name, "
    "b.scope, b.mode, b.thresholds, b.webhook_url FROM llmspend_budget_periods p "
    "JOIN llmspend_budgets b ON b.id = p.budget_id WHERE p.id IN ({ids}) ORDER BY b.id"
)


def decide_thresholds(
    conn: Connection, call: Call, period_ids: list[int], cost_nanos: int
) -> list[BudgetThresholdReached]:
    """Insert the alert rows this call's settlement crossed; return their events in order."""
    ids = ", ".join(str(int(i)) for i in period_ids)  # integers from the store, not input
    rows = run(conn, SQL(_CROSSING.replace("{ids}", ids))).all()
    now = utcnow()
    events = []
    for r in rows:
        if r.limit_nanos <= 0:
            continue
        pstart = py_time(r.period_start)
        for ppm in _thresholds_ppm(r.thresholds, r.mode):
            if r.spent_nanos * PPM < ppm * r.limit_nanos:
                break
            values = {
                "ts": now,
                "kind": "threshold",
                "budget_id": r.budget_id,
                "budget_name": r.name,
                "scope": r.scope,
                "period_start": pstart,
                "threshold_ppm": ppm,
                "percent_used": round(r.spent_nanos * 100 / r.limit_nanos, 4),
                "spent_nanos": r.spent_nanos,
                "limit_nanos": r.limit_nanos,
                "call_cost_nanos": cost_nanos,
                "org_name": call.org,
                "project_name": call.project,
                "user_name": call.user,
                "meta": json.dumps(_metadata(call, r.mode), sort_keys=True, default=str),
                "acknowledged": False,
            }
            alert_id = _insert_returning_id(conn, values)
            if alert_id is not None:
                events.append(_event(alert_id, values, r.mode, r.webhook_url))
    return events


def decide_refusal(
    conn: Connection, call: Call, scope: str, budget_name: str
) -> BudgetThresholdReached | None:
    """Record that a hard budget refused a call: once per budget and period."""
    from ..budgets.enforce import ensure_period
    from ..budgets.spec import parse_key

    key = parse_key(scope, budget_name)
    from ..budgets.enforce import _BUDGET_COLS

    budget = conn.execute(
        select(*_BUDGET_COLS).where(
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
