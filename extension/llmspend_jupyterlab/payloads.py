"""What the ``/llmspend/*`` routes answer, computed with llmspend's public API.

Everything here is plain, blocking Python (the handlers run it in a worker thread) and
returns JSON-ready dicts. Conventions of every payload:

- money: fields ending in ``_usd`` hold the exact ``Decimal`` amount as a string in plain
  notation (``"12.4"``, ``"0.00000015"``), or ``null`` when unknown; never a float;
- times: ISO 8601 with an explicit UTC offset;
- percentages: ``percent_used`` is a number in 0–100+ (as in ``BudgetStatus``),
  alert ``threshold`` a fraction (``0.8``).

The *context* is the (org, project, user) the server's tracker attributes calls to: the
same defaults the kernels start with (``LLMSPEND_ORG`` / ``LLMSPEND_PROJECT`` /
``LLMSPEND_USER``, then ``JUPYTERHUB_USER`` or the OS user, and ``"default"``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import llmspend
from llmspend import teamclient
from llmspend.budgets.periods import period_bounds
from llmspend.timeutil import utcnow
from llmspend.tracker import get_tracker

if TYPE_CHECKING:
    import pandas as pd

    from llmspend import BudgetStatus

__all__ = [
    "Context",
    "acknowledge_payload",
    "alerts_payload",
    "current_context",
    "status_payload",
    "summary_payload",
    "usd",
]

# Narrow scopes last: the meter prefers the most personal budget when percentages tie.
_SCOPE_ORDER = {"org": 0, "project": 1, "user": 2}
_MONEY_FIELDS = ("spent_usd", "limit_usd", "call_cost_usd")


@dataclass(frozen=True)
class Context:
    org: str
    project: str
    user: str

    def budget_keys(self) -> list[tuple[str, str]]:
        """The (scope, name) of every budget that applies to this context, org first."""
        o, p, u = self.org, self.project, self.user
        return [("org", o), ("project", f"{o}/{p}"), ("user", f"{o}/{u}"), ("user", f"{o}/{p}/{u}")]

    def to_json(self) -> dict[str, str]:
        return {"org": self.org, "project": self.project, "user": self.user}


def current_context() -> Context:
    """Whose spend the routes show: in team mode the identity the gateway takes from the
    server's credential (``whoami``), else the server's default attribution."""
    gateway = teamclient.client()
    if gateway is not None:
        me = gateway.whoami()
        return Context(me["org"], me["project"], me["user"])
    return Context(*get_tracker().defaults)


def usd(value: Decimal | None) -> str | None:
    """Money for JSON: an exact decimal string in plain notation (``None`` stays ``None``)."""
    return None if value is None else format(value, "f")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _now() -> dt.datetime:
    """Now, aware UTC, on llmspend's clock (the one budget periods use)."""
    return utcnow().replace(tzinfo=dt.UTC)


def _calendar_period(
    period: str, tz: str | None, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """(start, end) of the calendar ``period`` (day, month) around ``now`` in ``tz`` (an IANA
    name, default UTC), in UTC; an unknown zone is a ``BudgetError``."""
    start, end = period_bounds(period, tz or "UTC", now.replace(tzinfo=None))
    assert end is not None
    return start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC)


# -- budgets --------------------------------------------------------------------------------
def _budgets(ctx: Context) -> list[BudgetStatus]:
    """Status of the budgets that apply to ``ctx``, org → project → user."""
    wanted = ctx.budget_keys()
    existing = {(b.scope, b.name) for b in llmspend.list_budgets() if not b.is_default}
    return [llmspend.budget_status(s, n)[0] for s, n in wanted if (s, n) in existing]


def _headline(budgets: list[BudgetStatus]) -> BudgetStatus | None:
    """The budget closest to its limit (ties: the narrowest scope)."""
    if not budgets:
        return None
    return max(budgets, key=lambda b: (b.percent_used, _SCOPE_ORDER.get(b.scope, 0)))


def _budget_json(b: BudgetStatus) -> dict[str, Any]:
    return {
        "budget": b.budget,
        "scope": b.scope,
        "mode": b.mode,
        "period": b.period,
        "timezone": b.timezone,
        "period_start": _iso(b.period_start),
        "period_end": _iso(b.period_end),
        "limit_usd": usd(b.limit_usd),
        "spent_usd": usd(b.spent_usd),
        "reserved_usd": usd(b.reserved_usd),
        "remaining_usd": usd(b.remaining_usd),
        "projected_usd": usd(b.projected_usd),
        "percent_used": b.percent_used,
        "state": b.state,
        "calls": b.calls,
        "inherited": b.inherited,
    }


# -- spend from records() --------------------------------------------------------------------
@dataclass
class _Tally:
    spent: Decimal
    calls: int
    unpriced: int

    def to_json(self, since: dt.datetime, until: dt.datetime | None = None) -> dict[str, Any]:
        return {
            "since": _iso(since),
            "until": _iso(until),
            "spent_usd": usd(self.spent),
            "calls": self.calls,
            "unpriced_calls": self.unpriced,
        }


def _tally(costs: Iterable[Any]) -> _Tally:
    spent, calls, unpriced = Decimal(0), 0, 0
    for cost in costs:
        calls += 1
        if isinstance(cost, Decimal):
            spent += cost
        else:
            unpriced += 1
    return _Tally(spent, calls, unpriced)


def _records(ctx: Context, since: dt.datetime, until: dt.datetime | None = None) -> pd.DataFrame:
    """The context's own calls in [since, until); refused calls (nothing sent) left out."""
    frame = llmspend.records(since, until, org=ctx.org, project=ctx.project, user=ctx.user)
    return frame[frame["status"] != "refused"]


# -- alerts ----------------------------------------------------------------------------------
def _relevant_alerts(ctx: Context, **filters: Any) -> pd.DataFrame:
    """Alerts of the budgets that apply to ``ctx`` (oldest first)."""
    keys = ctx.budget_keys()
    frame = llmspend.alerts(budget=sorted({name for _, name in keys}), **filters)
    wanted = set(keys)
    keep = [(s, b) in wanted for s, b in zip(frame["scope"], frame["budget"], strict=True)]
    return frame.loc[keep] if keep else frame


def _alert_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    """One ``alerts()`` row as JSON (the columns of ``llmspend.alerts()``)."""
    return {
        "id": int(row["id"]),
        "kind": row["kind"],
        "ts": _iso(row["ts"].to_pydatetime()),
        "budget": row["budget"],
        "scope": row["scope"],
        "org": row["org"],
        "project": row["project"],
        "user": row["user"],
        "threshold": float(row["threshold"]),
        "percent_used": float(row["percent_used"]),
        **{name: usd(row[name]) for name in _MONEY_FIELDS},
        "period_start": _iso(row["period_start"].to_pydatetime()),
        "acknowledged": bool(row["acknowledged"]),
        "metadata": row["metadata"],
    }


# -- the payloads ----------------------------------------------------------------------------
def status_payload(tz: str | None = None) -> dict[str, Any]:
    """``GET /llmspend/status``: the context's budgets, the headline one, today's spend."""
    ctx, now = current_context(), _now()
    today, tomorrow = _calendar_period("day", tz, now)
    budgets = _budgets(ctx)
    headline = _headline(budgets)
    alerts = _relevant_alerts(ctx)
    unacknowledged = int((~alerts["acknowledged"].astype(bool)).sum())
    return {
        "context": ctx.to_json(),
        "generated_at": _iso(now),
        "budgets": [_budget_json(b) for b in budgets],
        "headline": None if headline is None else _budget_json(headline),
        "today": _tally(_records(ctx, today)["cost_usd"]).to_json(today, tomorrow),
        "alerts": {
            "unacknowledged": unacknowledged,
            "latest_id": int(alerts["id"].max()) if len(alerts) else None,
        },
    }


def summary_payload(tz: str | None = None) -> dict[str, Any]:
    """``GET /llmspend/summary``: today's and this period's spend, calls and top model.

    "This period" is the headline budget's current period, else the calendar month (UTC).
    """
    ctx, now = current_context(), _now()
    today, tomorrow = _calendar_period("day", tz, now)
    headline = _headline(_budgets(ctx))
    period: dict[str, str | None]
    if headline is not None:
        start, end = headline.period_start, headline.period_end
        period = {"period": headline.period, "budget": headline.budget, "scope": headline.scope}
    else:
        start, end = _calendar_period("month", None, now)
        period = {"period": "month", "budget": None, "scope": None}
    frame = _records(ctx, min(start, today))
    in_period = frame[frame["ts"] >= start]
    top_model = None
    if len(in_period):
        by_model: dict[tuple[str, str], list[Any]] = {}
        for provider, model, cost in zip(
            in_period["provider"], in_period["model"], in_period["cost_usd"], strict=True
        ):
            by_model.setdefault((provider, model), []).append(cost)
        tallies = {key: _tally(costs) for key, costs in by_model.items()}
        (provider, model), best = max(tallies.items(), key=lambda kv: (kv[1].spent, kv[1].calls))
        top_model = {
            "provider": provider,
            "model": model,
            "spent_usd": usd(best.spent),
            "calls": best.calls,
        }
    return {
        "context": ctx.to_json(),
        "generated_at": _iso(now),
        "today": _tally(frame[frame["ts"] >= today]["cost_usd"]).to_json(today, tomorrow),
        "period": period | _tally(in_period["cost_usd"]).to_json(start, end),
        "top_model": top_model,
    }


def alerts_payload(
    *, since: str | None = None, limit: int = 20, acknowledged: bool | None = None
) -> dict[str, Any]:
    """``GET /llmspend/alerts``: the newest alerts of the context's budgets, newest first."""
    ctx = current_context()
    frame = _relevant_alerts(ctx, since=since, acknowledged=acknowledged)
    newest = frame.iloc[::-1].head(limit)
    return {
        "context": ctx.to_json(),
        "alerts": [_alert_json(row) for row in newest.to_dict("records")],
        "unacknowledged": len(_relevant_alerts(ctx, acknowledged=False)),
    }


def acknowledge_payload(ids: list[int]) -> dict[str, Any]:
    """``POST /llmspend/alerts/acknowledge``: acknowledge alerts of the context's budgets.

    Only the alerts ``GET /llmspend/alerts`` can show may be acknowledged: an id of any
    other alert (another user's, or none at all) is refused the same way, as unknown, and
    nothing is acknowledged.
    """
    ctx = current_context()
    visible = set(_relevant_alerts(ctx)["id"].astype(int))
    unknown = [i for i in ids if i not in visible]
    if unknown:
        raise ValueError(
            f"no alert {', '.join(map(str, unknown))} among the alerts of the budgets of "
            f"{ctx.org}/{ctx.project}/{ctx.user}"
        )
    return {"acknowledged": llmspend.acknowledge_alerts(ids)}
