"""llmspend.analytics: every number equals an independent pandas computation over records().

A few thousand generated rows (unaligned timestamps, unknown prices, every status, tags)
are ingested once per backend; each function is checked exactly (Decimal money) for
several groupings, filters, and since/until given in different time zones off the hour.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

import llmspend
from llmspend import analytics
from llmspend.analytics import MEASURE_COLUMNS
from llmspend.timeutil import utcnow

UTC = dt.UTC
ORGS = {"acme": ("churn", "web", "lab"), "beta": ("web", "ops")}
USERS = {"acme": ("ana", "bob", "cy"), "beta": ("dee", "eve")}
MODELS = (
    ("openai", "gpt-4o", "chat.completions"),
    ("openai", "gpt-4o-mini", "chat.completions"),
    ("openai", "gpt-4o-mini", "responses"),
    ("azure", "gpt-4o", "chat.completions"),
    ("google", "gemini-2.5-flash", "generate_content"),
    ("google", "gemini-2.5-pro", "generate_content"),
    ("xai", "grok-3-mini", "chat.completions"),
    ("openai", "house-model-x", "chat.completions"),  # no price: cost unknown
)
STATUSES = ("ok",) * 12 + ("error", "refused", "partial")


def make_rows(n: int, now: dt.datetime, *, days: float = 40, seed: int = 7) -> list[dict]:
    """Usage rows over ``days`` before ``now`` (naive UTC), plus rows on exact boundaries."""
    rnd = random.Random(seed)
    rows = []
    span = int(days * 86400 * 10**6)
    stamps = [now - dt.timedelta(microseconds=rnd.randrange(1, span)) for _ in range(n)]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    stamps += [midnight - dt.timedelta(days=k) for k in (1, 2, 9)]  # exactly on boundaries
    stamps += [midnight - dt.timedelta(hours=k) for k in (5, 30, 77)]
    for ts in stamps:
        org = rnd.choice(tuple(ORGS))
        provider, model, api = rnd.choice(MODELS)
        inp = rnd.randint(0, 8000)
        out = rnd.randint(0, 3000)
        row: dict[str, Any] = {
            "ts": ts,
            "provider": provider,
            "api": api,
            "model": model,
            "org": org,
            "project": rnd.choice(ORGS[org]),
            "user": rnd.choice(USERS[org]),
            "input_tokens": inp,
            "cached_input_tokens": rnd.randint(0, inp // 2),
            "output_tokens": out,
            "reasoning_tokens": rnd.randint(0, out // 3) if model == "gemini-2.5-pro" else 0,
            "status": rnd.choice(STATUSES),
            "latency_ms": float(rnd.randint(50, 5000)),
        }
        if rnd.random() < 0.3:
            row["cache_write_tokens"] = rnd.randint(0, inp - row["cached_input_tokens"])
        if rnd.random() < 0.15:
            row["cost_usd"] = Decimal(rnd.randint(0, 5 * 10**9)).scaleb(-9)
        elif rnd.random() < 0.05:
            row["price_status"] = "unknown"
        r = rnd.random()
        if r < 0.3:
            row["tags"] = {"team": rnd.choice(("red", "blue"))}
        elif r < 0.4:
            row["tags"] = {"team": "red", "exp": rnd.randint(1, 2)}
        rows.append(row)
    return rows


# -- the independent computation --------------------------------------------------------------


def measures(part: pd.DataFrame) -> tuple:
    """The MEASURE_COLUMNS of a set of records, computed directly."""
    return (
        sum((c for c in part["cost_usd"] if c is not None), Decimal(0)),
        len(part),
        int(part["input_tokens"].sum()),
        int(part["output_tokens"].sum()),
        int(part["cached_input_tokens"].sum()),
        int(part["cache_write_tokens"].sum()),
        int(part["reasoning_tokens"].sum()),
        int((part["status"] == "error").sum()),
        int((part["status"] == "refused").sum()),
        int(part["cost_usd"].isna().sum()),
    )


def utc(value: Any) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize(UTC) if t.tzinfo is None else t.tz_convert(UTC)


def select(df: pd.DataFrame, since: Any = None, until: Any = None, **filters: Any) -> pd.DataFrame:
    out = df
    if since is not None:
        out = out[out["ts"] >= utc(since)]
    if until is not None:
        out = out[out["ts"] < utc(until)]
    for name, value in filters.items():
        out = out[out[name].isin([value] if isinstance(value, str) else value)]
    return out


def with_keys(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    df = df.copy()
    for k in keys:
        if k.startswith("tag:"):
            name = k[4:]
            df[k] = [t.get(name) for t in df["tags"]]
    return df


def expect(df: pd.DataFrame, keys: list[str]) -> dict[tuple, tuple]:
    df = with_keys(df, keys)
    if not keys:
        return {(): measures(df)} if len(df) else {}
    out = {}
    for key, part in df.groupby(keys, dropna=False, sort=False):
        k = key if isinstance(key, tuple) else (key,)
        k = tuple(None if (isinstance(v, float) and v != v) else v for v in k)
        out[k] = measures(part)
    return out


def got(frame: pd.DataFrame, keys: list[str]) -> dict[tuple, tuple]:
    cols = list(MEASURE_COLUMNS)
    out = {}
    for row in frame.to_dict("records"):
        key = tuple(row[k] for k in keys)
        assert key not in out, f"duplicate group {key}"
        out[key] = tuple(row[c] for c in cols)
    return out


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def dataset(request, tmp_path_factory) -> Iterator[tuple[Any, pd.DataFrame, dt.datetime]]:  # type: ignore[no-untyped-def]
    """A store with generated history (shared by the read-only tests of a backend)."""
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('analytics') / 'a.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    now = utcnow().replace(microsecond=0)
    with pytest.warns(llmspend.LLMSpendWarning):  # the unpriced model warns once
        llmspend_ingest(tracker, make_rows(2500, now))
    set_tracker(tracker)
    df = llmspend.records()
    set_tracker(None)
    yield tracker, df, now
    forget_store(url)


def llmspend_ingest(tracker: Any, rows: list[dict]) -> int:
    return int(tracker.ingest(rows))


@pytest.fixture
def data(dataset):  # type: ignore[no-untyped-def]
    from llmspend.tracker import set_tracker

    tracker, df, now = dataset
    set_tracker(tracker)
    yield df, now
    set_tracker(None)


def windows(now: dt.datetime) -> list[tuple[Any, Any]]:
    """since/until pairs: open, aware in other zones off the hour, strings with offsets."""
    ny, kolkata = ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")
    a = (now - dt.timedelta(days=17, minutes=13, microseconds=7)).replace(tzinfo=UTC)
    b = (now - dt.timedelta(days=2, hours=3, seconds=41)).replace(tzinfo=UTC)
    return [
        (None, None),
        (a.astimezone(ny), b.astimezone(kolkata).isoformat()),
        ((now - dt.timedelta(hours=29, minutes=31)).isoformat() + "Z", None),
        (None, (now - dt.timedelta(days=33, seconds=1)).replace(tzinfo=UTC).astimezone(kolkata)),
        ((now - dt.timedelta(minutes=50)).replace(tzinfo=UTC), now.replace(tzinfo=UTC)),
    ]


# -- breakdowns -----------------------------------------------------------------------------

BREAKDOWNS = [
    ["model"],
    ["org", "project"],
    ["provider", "model", "user"],
    ["api"],
    ["tag:team", "model"],
]
FILTERS: list[dict[str, Any]] = [
    {},
    {"org": "acme"},
    {"model": ["gpt-4o", "gemini-2.5-flash"], "user": ["ana", "dee"]},
    {"status": "ok", "provider": "openai"},
]


@pytest.mark.parametrize("keys", BREAKDOWNS, ids=lambda k: "+".join(k))
def test_cost_breakdown_equals_records(data, keys: list[str]) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    for since, until in windows(now):
        for flt in FILTERS:
            frame = analytics.cost_breakdown(by=keys, since=since, until=until, **flt)
            want = expect(select(df, since, until, **flt), keys)
            assert got(frame, keys) == want, (since, until, flt)
            assert list(frame.columns) == [*keys, *MEASURE_COLUMNS, "cost_share"]
            costs = list(frame["cost_usd"])
            assert costs == sorted(costs, reverse=True)
            total = sum(costs, Decimal(0))
            for c, s in zip(costs, frame["cost_share"], strict=True):
                assert s == pytest.approx(float(c / total) if total else 0.0)


def test_money_is_exact_decimal(data) -> None:  # type: ignore[no-untyped-def]
    df, _ = data
    frame = analytics.cost_breakdown(by="org")
    assert frame["cost_usd"].dtype == object
    assert all(isinstance(c, Decimal) for c in frame["cost_usd"])
    assert sum(frame["cost_usd"], Decimal(0)) == sum(
        (c for c in df["cost_usd"] if c is not None), Decimal(0)
    )
    assert frame["calls"].dtype == "int64"


def test_usage_report_equals_records(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    keys = ["org", "project", "user", "model"]
    for since, until in windows(now)[:3]:
        frame = analytics.usage_report(since=since, until=until)
        want = expect(select(df, since, until), keys)
        assert got(frame, keys) == want
        rows = [tuple(r) for r in frame[keys].itertuples(index=False)]
        assert rows == sorted(rows)
        totals = frame.attrs["totals"]
        assert totals["calls"] == sum(w[1] for w in want.values())
        assert totals["cost_usd"] == sum((w[0] for w in want.values()), Decimal(0))
    frame = analytics.usage_report(group_by=("status", "tag:exp"), org="beta")
    assert got(frame, ["status", "tag:exp"]) == expect(
        select(df, org="beta"), ["status", "tag:exp"]
    )


# -- trends ---------------------------------------------------------------------------------


def local_start(ts: pd.Timestamp, granularity: str, tz: str) -> pd.Timestamp:
    zone = ZoneInfo(tz)
    loc = ts.to_pydatetime().astimezone(zone)
    if granularity == "hour":
        return pd.Timestamp(loc.replace(minute=0, second=0, microsecond=0))
    day = loc.date()
    if granularity == "week":
        day -= dt.timedelta(days=day.weekday())
    elif granularity == "month":
        day = day.replace(day=1)
    return pd.Timestamp(dt.datetime(day.year, day.month, day.day, tzinfo=zone))


TRENDS = [
    ("day", "UTC", None),
    ("day", "America/New_York", None),
    ("day", "Asia/Kolkata", "model"),
    ("hour", "Asia/Kathmandu", None),
    ("hour", "UTC", ["org", "provider"]),
    ("week", "Europe/Berlin", None),
    ("month", "Australia/Adelaide", "user"),
]


@pytest.mark.parametrize("granularity, tz, by", TRENDS, ids=lambda v: str(v))
def test_spending_trends_equal_records(data, granularity: str, tz: str, by: Any) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    keys = [by] if isinstance(by, str) else list(by or [])
    cases = windows(now)
    if granularity == "hour":
        cases = [cases[2], cases[4]]  # hours over short ranges
    for since, until in cases[:4]:
        for flt in FILTERS[:3]:
            frame = analytics.spending_trends(
                granularity, since=since, until=until, by=by, tz=tz, **flt
            )
            part = select(df, since, until, **flt).copy()
            part["period"] = [local_start(t, granularity, tz) for t in part["ts"]]
            want = expect(part, ["period", *keys])
            assert got(frame, ["period", *keys]) == want, (since, until, flt)
            assert list(frame.columns) == ["period", *keys, *MEASURE_COLUMNS]
            assert str(frame["period"].dt.tz) == tz
            assert frame["period"].is_monotonic_increasing


def test_spending_trends_fill_gaps(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    since, until = now - dt.timedelta(days=60), now - dt.timedelta(days=35, hours=5)
    frame = analytics.spending_trends("week", since, until, fill_gaps=True, model="grok-3-mini")
    first = local_start(utc(since), "week", "UTC")
    starts = pd.date_range(first, utc(until).tz_convert(first.tz), freq="7D")
    assert list(frame["period"]) == list(starts)
    assert frame["calls"].sum() == len(select(df, since, until, model="grok-3-mini"))
    assert (frame["calls"] == 0).any()


# -- comparisons, realtime ------------------------------------------------------------------


def test_usage_comparison_equals_records(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    end = now - dt.timedelta(hours=3, minutes=7, microseconds=3)
    endz = end.replace(tzinfo=UTC)
    cases = [
        (
            dict(current="7d", until=end),
            (endz - dt.timedelta(days=7), endz),
            (endz - dt.timedelta(days=14), endz - dt.timedelta(days=7)),
        ),
        (
            dict(current="36h", previous="5d", until=end),
            (endz - dt.timedelta(hours=36), endz),
            (endz - dt.timedelta(hours=36, days=5), endz - dt.timedelta(hours=36)),
        ),
        (
            dict(
                current=(endz - dt.timedelta(days=3), endz),
                previous=(endz - dt.timedelta(days=30), endz - dt.timedelta(days=20)),
            ),
            (endz - dt.timedelta(days=3), endz),
            (endz - dt.timedelta(days=30), endz - dt.timedelta(days=20)),
        ),
    ]
    for kwargs, cur, prev in cases:
        for by in (["model"], ["org", "user"]):
            frame = analytics.usage_comparison(by=by, org=["acme", "beta"], **kwargs)
            a = expect(select(df, *cur), by)
            b = expect(select(df, *prev), by)
            assert frame.attrs["current_start"] == cur[0]
            assert frame.attrs["previous_end"] == prev[1]
            zero = (Decimal(0), 0, 0, 0)
            assert len(frame) == len(set(a) | set(b))
            for row in frame.to_dict("records"):
                key = tuple(row[k] for k in by)
                now_m, was_m = a.get(key, zero), b.get(key, zero)
                for i, m in enumerate(("cost_usd", "calls", "input_tokens", "output_tokens")):
                    assert row[f"{m}_current"] == now_m[i]
                    assert row[f"{m}_previous"] == was_m[i]
                    assert row[f"{m}_change"] == now_m[i] - was_m[i]
                    if was_m[i]:
                        pct = float(Fraction(now_m[i] - was_m[i]) / Fraction(was_m[i]) * 100)
                        assert row[f"{m}_change_pct"] == pct
                    else:
                        assert row[f"{m}_change_pct"] != row[f"{m}_change_pct"]  # NaN


def test_realtime_metrics_equal_records(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    end = now - dt.timedelta(hours=1, seconds=13)
    for window, span in (
        ("15m", dt.timedelta(minutes=15)),
        ("3h", dt.timedelta(hours=3)),
        (dt.timedelta(days=2, minutes=1), dt.timedelta(days=2, minutes=1)),
    ):
        frame = analytics.realtime_metrics(window, until=end, user=["ana", "bob", "eve"])
        assert len(frame) == 1
        row = frame.iloc[0]
        endz = end.replace(tzinfo=UTC)
        part = select(df, endz - span, endz, user=["ana", "bob", "eve"])
        m = measures(part)
        assert tuple(row[c] for c in MEASURE_COLUMNS) == m
        assert row["window_start"] == endz - span and row["window_end"] == endz
        burn = Fraction(m[0]) * 3600 / Fraction(span.total_seconds())
        assert row["burn_rate_usd_per_hour"] == Decimal(round(burn * 10**9)).scaleb(-9)
        assert row["calls_per_minute"] == pytest.approx(m[1] * 60 / span.total_seconds())
        assert row["error_rate"] == (m[7] / m[1] if m[1] else 0.0)


# -- levels and the dashboard -----------------------------------------------------------------


def test_aggregated_spending_levels(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    since = (now - dt.timedelta(days=9, minutes=1)).replace(tzinfo=ZoneInfo("Europe/Paris"))
    for level, keys in (
        ("org", ["org"]),
        ("project", ["org", "project"]),
        ("user", ["org", "user"]),
    ):
        frame = analytics.aggregated_spending(level, since=since, provider=["openai", "google"])
        want = expect(select(df, since, None, provider=["openai", "google"]), keys)
        assert got(frame, keys) == want
        assert frame["budget"].isna().all()


def test_dashboard_data_agrees_with_the_functions(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    since = now - dt.timedelta(days=12, hours=7, minutes=5)
    dash = analytics.dashboard_data(since=since, org="acme")
    assert set(dash) == {
        "totals",
        "trend",
        "by_model",
        "by_project",
        "by_user",
        "budgets",
        "alerts",
        "realtime",
    }
    part = select(df, since.replace(tzinfo=UTC), None, org="acme")
    assert got(dash["totals"], []) == {(): measures(part)}
    assert got(dash["by_model"], ["provider", "model"]) == expect(part, ["provider", "model"])
    assert got(dash["by_project"], ["org", "project"]) == expect(part, ["org", "project"])
    assert got(dash["by_user"], ["org", "user"]) == expect(part, ["org", "user"])
    trend = dash["trend"]
    assert sum(trend["cost_usd"], Decimal(0)) == measures(part)[0]
    assert list(trend["period"]) == sorted(trend["period"])
    assert len(dash["realtime"]) == 1
    for key in ("budgets", "alerts"):
        assert isinstance(dash[key], pd.DataFrame)


# -- empty, single, nothing matching; bad input ----------------------------------------------------

ALL = {
    "spending_trends": lambda **kw: analytics.spending_trends(**kw),
    "cost_breakdown": lambda **kw: analytics.cost_breakdown(**kw),
    "usage_comparison": lambda **kw: analytics.usage_comparison(**kw),
    "usage_report": lambda **kw: analytics.usage_report(**kw),
    "aggregated_spending": lambda **kw: analytics.aggregated_spending(**kw),
    "budget_recommendations": lambda **kw: analytics.budget_recommendations(**kw),
    "alerts_summary": lambda **kw: analytics.alerts_summary(**kw),
}


def _check_empty(filters: dict[str, Any]) -> None:
    cols = {
        "spending_trends": ["period", *MEASURE_COLUMNS],
        "cost_breakdown": ["model", *MEASURE_COLUMNS, "cost_share"],
        "usage_report": ["org", "project", "user", "model", *MEASURE_COLUMNS, "cost_share"],
    }
    for name, fn in ALL.items():
        frame = fn(**filters)
        assert isinstance(frame, pd.DataFrame), name
        assert frame.empty, name
        if name in cols:
            assert list(frame.columns) == cols[name], name
        assert len(frame.columns) > 3, name
    util = analytics.budget_utilization(org=filters.get("org"))
    assert util.empty and "percent_used" in util.columns
    rt = analytics.realtime_metrics(**filters)
    assert len(rt) == 1 and rt["calls"].iloc[0] == 0 and rt["cost_usd"].iloc[0] == 0
    dash = analytics.dashboard_data(**filters)
    assert dash["totals"]["calls"].iloc[0] == 0
    for key in ("trend", "by_model", "by_project", "by_user", "budgets", "alerts"):
        assert dash[key].empty, key


def test_empty_store_gives_empty_frames(tracker) -> None:  # type: ignore[no-untyped-def]
    _check_empty({})


def test_filters_matching_nothing_give_empty_frames(data) -> None:  # type: ignore[no-untyped-def]
    _check_empty({"org": "nobody"})
    _, now = data
    far = now - dt.timedelta(days=400)
    assert analytics.cost_breakdown(since=far, until=far + dt.timedelta(hours=5)).empty
    assert analytics.spending_trends(since=now + dt.timedelta(days=1)).empty


def test_a_single_row(tracker) -> None:  # type: ignore[no-untyped-def]
    ts = dt.datetime(2026, 3, 8, 6, 59, 59, 999999)  # the US switches to DST that day
    llmspend.ingest(
        [
            {
                "ts": ts,
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": 1000,
                "output_tokens": 10,
                "cost_usd": "0.000123456",
            }
        ]
    )
    df = llmspend.records()
    for gran in ("hour", "day", "week", "month"):
        frame = analytics.spending_trends(gran, tz="America/New_York")
        assert len(frame) == 1
        assert frame["period"].iloc[0] == local_start(df["ts"].iloc[0], gran, "America/New_York")
        assert frame["cost_usd"].iloc[0] == Decimal("0.000123456")
    assert got(analytics.cost_breakdown(by="user"), ["user"]) == {("ana",): measures(df)}
    assert analytics.cost_breakdown(since=ts + dt.timedelta(microseconds=1)).empty
    assert len(analytics.cost_breakdown(since=ts, until=ts + dt.timedelta(microseconds=1))) == 1
    report = analytics.usage_report(group_by="provider")
    assert report["cost_share"].tolist() == [1.0]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: analytics.cost_breakdown(by="colour"), "unknown column 'colour'"),
        (lambda: analytics.cost_breakdown(by=["model", "model"]), "named twice"),
        (lambda: analytics.cost_breakdown(team="x"), "unknown filter 'team'"),
        (lambda: analytics.cost_breakdown(org=[]), "non-empty list"),
        (lambda: analytics.usage_report(group_by=["tag:"]), "unknown column"),
        (lambda: analytics.spending_trends("year"), "unknown granularity 'year'"),
        (lambda: analytics.spending_trends(tz="Mars/Base"), "unknown time zone"),
        (lambda: analytics.spending_trends(since="last tuesday"), "since: cannot parse"),
        (lambda: analytics.cost_breakdown(until=3.5), "until: expected a datetime"),
        (lambda: analytics.cost_breakdown(since="2026-02-01", until="2026-01-01"), "is after"),
        (lambda: analytics.usage_comparison(current="fortnight"), "current: expected a span"),
        (lambda: analytics.usage_comparison(previous=("2026-01-01", None)), "needs both ends"),
        (lambda: analytics.realtime_metrics("0m"), "longer than zero"),
        (lambda: analytics.aggregated_spending("team"), "unknown level 'team'"),
        (lambda: analytics.budget_utilization(model="gpt-4o"), "do not apply"),
        (lambda: analytics.alerts_summary(colour="red"), "unknown filter 'colour'"),
        (lambda: analytics.dashboard_data(granularity="fortnight"), "unknown granularity"),
        (
            lambda: analytics.spending_trends(
                "hour", since="2000-01-01", until="2030-01-01", fill_gaps=True
            ),
            "too many",
        ),
    ],
)
def test_bad_input_is_a_validation_error(tracker, call: Any, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(llmspend.ValidationError, match=message):
        call()


def test_import_llmspend_does_not_import_pandas() -> None:
    import subprocess
    import sys

    code = "import sys, llmspend; assert 'pandas' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_contract_names_take_since_until_and_filters() -> None:
    import inspect

    names = ("spending_trends", "cost_breakdown", "usage_comparison", "realtime_metrics",
             "usage_report", "aggregated_spending", "budget_utilization",
             "budget_recommendations", "alerts_summary", "dashboard_data")  # fmt: skip
    for name in names:
        assert name in analytics.__all__
        params = inspect.signature(getattr(analytics, name)).parameters
        for arg in ("since", "until", "org", "project", "user", "provider", "model"):
            assert arg in params, (name, arg)
        assert getattr(analytics, name).__doc__
