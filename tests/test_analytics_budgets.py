"""Budget utilization, alerts summary and recommendations against the budget API and records()."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from typing import Any

import pandas as pd
import pytest

import llmspend
from llmspend import analytics
from llmspend.call import Usage
from llmspend.pipeline import begin_call
from llmspend.timeutil import utcnow

UTC = dt.UTC


def live_call(model: str, usage: Usage, **attribution: Any) -> bool:
    """One call through the real pipeline; False when a budget refused it."""
    with llmspend.attribute(**attribution):
        try:
            call = begin_call(
                "openai",
                "chat.completions",
                model,
                input_tokens=usage.input_tokens,
                max_output_tokens=usage.output_tokens,
            )
        except llmspend.BudgetExceeded:
            return False
        assert call is not None
        call.finish(usage)
        return True


def test_utilization_and_alerts_follow_the_budgets(installed_any) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("org", "acme", "0.05", "day", mode="soft")
    llmspend.set_budget(
        "project", "acme/churn", "0.02", "month", mode="hard", thresholds=(0.5, 1.0)
    )
    llmspend.set_budget("user", "acme/bob", "1", "week", mode="soft")
    outcomes = [
        live_call(
            ("gpt-4o", "gpt-4o-mini")[i % 2],
            Usage(1000, 0, 0, 400, 0),
            project=("churn", "web")[i % 3 % 2],
            user=("ana", "bob")[i % 2],
        )
        for i in range(14)
    ]
    assert not all(outcomes)  # the hard project budget refused some

    status = {(s.scope, s.budget): s for s in llmspend.budget_status()}
    util = analytics.budget_utilization()
    assert len(util) == len(status) == 3
    for row in util.to_dict("records"):
        s = status[(row["scope"], row["budget"])]
        assert row["spent_usd"] == s.spent_usd and row["limit_usd"] == s.limit_usd
        assert row["calls"] == s.calls and row["state"] == s.state and row["current"]
        # the budget counters agree with the raw rows in the period (refusals cost nothing)
        df = llmspend.records(since=s.period_start, until=s.period_end, org="acme")
        if row["project"]:
            df = df[df["project"] == row["project"]]
        if row["user"]:
            df = df[df["user"] == row["user"]]
        df = df[df["status"] != "refused"]
        assert sum(df["cost_usd"], Decimal(0)) == row["spent_usd"]
    assert list(analytics.budget_utilization(project="churn")["budget"]) == ["acme/churn"]
    assert analytics.budget_utilization(org="beta").empty
    history = analytics.budget_utilization(since="2d", until=utcnow() + dt.timedelta(days=1))
    assert set(history["budget"]) == {"acme", "acme/churn", "acme/bob"}
    assert history["current"].all()

    alerts = llmspend.alerts()
    assert len(alerts) >= 2
    summary = analytics.alerts_summary()
    assert summary["alerts"].sum() == len(alerts)
    for row in summary.to_dict("records"):
        mine = alerts[alerts["budget"] == row["budget"]]
        assert row["alerts"] == len(mine)
        assert row["refusals"] == int((mine["kind"] == "refused").sum())
        assert row["unacknowledged"] == int((~mine["acknowledged"]).sum())
        assert row["last_ts"] == mine["ts"].max() and row["first_ts"] == mine["ts"].min()
        thresholds = mine.loc[mine["kind"] == "threshold", "threshold"]
        assert row["max_threshold"] == (max(thresholds) if len(thresholds) else None)
    assert list(summary["last_ts"]) == sorted(summary["last_ts"], reverse=True)
    gpt4o = analytics.alerts_summary(model="gpt-4o")
    wanted = sum(1 for m in alerts["metadata"] if m.get("model") == "gpt-4o")
    assert gpt4o["alerts"].sum() == wanted
    llmspend.acknowledge_alerts()
    assert analytics.alerts_summary(acknowledged=False).empty

    levels = analytics.aggregated_spending("project")
    churn = levels[levels["project"] == "churn"].iloc[0]
    s = status[("project", "acme/churn")]
    assert churn["budget"] == "acme/churn" and churn["budget_spent_usd"] == s.spent_usd
    assert churn["budget_percent_used"] == s.percent_used
    users = analytics.aggregated_spending("user", user="bob")
    assert list(users["budget"]) == ["acme/bob"]


def _nice(value: Fraction) -> Decimal:
    usd = Decimal(value.numerator) / Decimal(value.denominator)
    quantum = Decimal(1).scaleb(usd.adjusted() - 1)
    return (usd / quantum).to_integral_value(rounding=ROUND_CEILING) * quantum


def test_budget_recommendations(tracker) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    start = now - dt.timedelta(days=20, hours=5, minutes=7)
    rows = []
    for i in range(400):
        ts = start + dt.timedelta(minutes=73 * i)
        if ts >= now:
            break
        model, provider = (
            ("gpt-4o", "openai"),
            ("gemini-2.5-flash", "google"),
            ("house-model-z", "openai"),
        )[i % 3]
        rows.append(
            {
                "ts": ts,
                "provider": provider,
                "model": model,
                "org": "acme",
                "project": ("churn", "web")[i % 2],
                "user": ("ana", "bob")[i % 5 % 2],
                "input_tokens": 1000 + 37 * i,
                "cached_input_tokens": 11 * i,
                "output_tokens": 300 + i,
                "price_status": "unknown" if i % 3 == 2 else None,
            }
        )
    llmspend.ingest(rows)  # house-model-z rows say their price is unknown
    llmspend.set_budget("org", "acme", "100", "week")
    llmspend.set_budget("user", "acme/ana", "2", "day", mode="soft")
    since, until = now - dt.timedelta(days=28), now
    asked = pd.Timestamp(utcnow(), tz=UTC)  # the function reads the clock in between
    recs = analytics.budget_recommendations(
        since=since,
        until=until,
        alternatives={"gpt-4o": ["gpt-4o-mini", ("google", "gemini-2.5-pro")]},
    )
    answered = pd.Timestamp(utcnow(), tz=UTC)
    df = llmspend.records()
    first_day = df["ts"].min().floor("D") + pd.Timedelta(days=1)
    today = pd.Timestamp(now, tz=UTC).floor("D")
    forecasts = recs[recs["kind"] == "forecast"].set_index("budget")
    assert set(forecasts.index) == {"acme", "acme/ana"}
    for budget, user, period in (("acme", None, "week"), ("acme/ana", "ana", "day")):
        scope = df if user is None else df[df["user"] == user]
        daily = [
            sum(
                scope.loc[
                    (scope["ts"] >= d) & (scope["ts"] < d + pd.Timedelta(days=1)), "cost_usd"
                ].dropna(),
                Decimal(0),
            )
            for d in pd.date_range(first_day, today, freq="D", inclusive="left")
        ]
        row = forecasts.loc[budget]
        mean = Fraction(sum(daily)) / len(daily)
        assert row["daily_rate_usd"] == Decimal(round(mean * 10**9)).scaleb(-9)
        # the rest of the period from the function's clock: between these two readings
        late, early = ((row["period_end"] - t) / pd.Timedelta(days=1) for t in (answered, asked))
        low = float(row["spent_usd"] + Decimal(float(mean) * late))
        high = float(row["spent_usd"] + Decimal(float(mean) * early))
        assert low - 1e-6 <= float(row["forecast_usd"]) <= high + 1e-6
        left = late
        band = 1.2815515655446004 * statistics.stdev(float(d) for d in daily) * math.sqrt(left)
        assert float(row["forecast_high_usd"] - row["forecast_usd"]) == pytest.approx(
            band, rel=1e-3
        )
        assert row["forecast_low_usd"] <= row["forecast_usd"] <= row["forecast_high_usd"]
        assert row["will_exceed"] == (row["forecast_usd"] > row["limit_usd"])
        # suggested limit: 1.2 x max(last three complete periods, high forecast), 2 figures up
        step = pd.Timedelta(days=7 if period == "week" else 1)
        cur = row["period_start"]
        past = []
        for k in range(1, 4):
            lo = cur - k * step
            if lo <= df["ts"].min():
                break
            part = scope[(scope["ts"] >= lo) & (scope["ts"] < lo + step)]
            past.append(sum(part["cost_usd"].dropna(), Decimal(0)))
        base = max([*past, row["forecast_high_usd"]])
        assert row["suggested_limit_usd"] == _nice(Fraction(base) * Fraction(6, 5))

    cheaper = recs[recs["kind"] == "cheaper_model"]
    pairs = set(zip(cheaper["model"], cheaper["alternative_model"], strict=True))
    assert pairs == {
        ("gpt-4o", "gpt-4o-mini"),
        ("gpt-4o", "gemini-2.5-pro"),
        ("gemini-2.5-flash", "gemini-2.5-flash-lite"),
    }
    window = df[
        (df["ts"] >= pd.Timestamp(since, tz=UTC)) & (df["ts"] < pd.Timestamp(until, tz=UTC))
    ]
    for row in cheaper.to_dict("records"):
        used = window[window["model"] == row["model"]]
        assert row["calls"] == len(used)
        assert row["cost_usd"] == sum(used["cost_usd"], Decimal(0))
        per_call = sum(
            (
                llmspend.price(
                    row["alternative_model"],
                    provider=row["alternative_provider"],
                    input_tokens=r.input_tokens,
                    cached_input_tokens=r.cached_input_tokens,
                    output_tokens=r.output_tokens,
                ).total_usd
                for r in used.itertuples()
            ),
            Decimal(0),
        )
        # one rounding of the exact sum, against one rounding per call
        assert abs(row["alternative_cost_usd"] - per_call) <= Decimal(len(used)).scaleb(-9)
        assert row["saving_usd"] == row["cost_usd"] - row["alternative_cost_usd"] > 0
        assert ("upper bound" in row["note"]) == (row["alternative_model"] == "gemini-2.5-pro")
    assert recs[recs["kind"] == "cheaper_model"]["model"].ne("house-model-z").all()
    only = analytics.budget_recommendations(since=since, until=until, org="beta")
    assert only.empty and "forecast_usd" in only.columns
