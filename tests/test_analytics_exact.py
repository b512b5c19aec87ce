"""Exactness of the rollup families and weekly levels: random windows, filters, time zones.

Seeded random data over 100 days (so weekly rollups are read) is ingested once per
backend; random since/until (partial days and hours, open ends, aware in other zones),
random groupings and filters on the rollup dimensions (each family: full, team, model)
and time zones (a non-whole-hour offset, DST changes) are compared with pandas over
``records()``, to the nanodollar. Also: a store whose rollups were rebuilt from raw rows
(the bulk path) answers identically to one maintained row by row.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

import llmspend
from llmspend import analytics
from llmspend.timeutil import utcnow
from tests.test_analytics import (
    MEASURE_COLUMNS,
    expect,
    got,
    local_start,
    make_rows,
    select,
    utc,
)

UTC = dt.UTC
ZONES = ["UTC", "Asia/Kolkata", "America/New_York", "Europe/Berlin", "Australia/Adelaide"]
DIMS = ["org", "project", "user", "provider", "model"]
VALUES = {
    "org": ["acme", "beta"],
    "project": ["churn", "web", "ops"],
    "user": ["ana", "dee", "cy"],
    "provider": ["openai", "google"],
    "model": ["gpt-4o", "gpt-4o-mini", "gemini-2.5-flash"],
    "api": ["chat.completions", "responses", "generate_content"],
}
TIERS = [None, "default", "flex", "priority"]
#: The model family's keys (``service_tier`` is a group key, not a filter).
MODEL_KEYS = ["provider", "model", "api", "service_tier"]
CASES = 25


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def dataset(request, tmp_path_factory) -> Iterator[tuple[Any, pd.DataFrame, dt.datetime]]:  # type: ignore[no-untyped-def]
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('exact') / 'a.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    now = utcnow().replace(microsecond=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unpriced model warns once
        rows = make_rows(3000, now, days=100, seed=23)
        tiers = random.Random(23)
        for row in rows:  # the model family keeps the tier too (NULL stored as "")
            row["service_tier"] = tiers.choice(TIERS)
        half = len(rows) // 2
        tracker.ingest(rows[:half])  # two batches: the second adds to existing buckets
        tracker.ingest(rows[half:])
    set_tracker(tracker)
    df = llmspend.records()
    set_tracker(None)
    yield tracker, df, now
    forget_store(url)


@pytest.fixture
def data(dataset):  # type: ignore[no-untyped-def]
    from llmspend.tracker import set_tracker

    tracker, df, now = dataset
    set_tracker(tracker)
    yield df, now
    set_tracker(None)


def random_time(rnd: random.Random, now: dt.datetime) -> Any:
    """A time in the data's range: unaligned, on an hour, or on a midnight; sometimes
    aware in another zone."""
    t = now - dt.timedelta(seconds=rnd.randrange(0, 105 * 86400), microseconds=rnd.randrange(10**6))
    r = rnd.random()
    if r < 0.2:
        t = t.replace(minute=0, second=0, microsecond=0)
    elif r < 0.35:
        t = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if rnd.random() < 0.4:
        return t.replace(tzinfo=UTC).astimezone(ZoneInfo(rnd.choice(ZONES)))
    return t


def random_window(rnd: random.Random, now: dt.datetime) -> tuple[Any, Any]:
    a, b = random_time(rnd, now), random_time(rnd, now)
    since, until = (a, b) if utc(a) <= utc(b) else (b, a)
    r = rnd.random()
    if r < 0.15:
        since = None
    elif r < 0.3:
        until = None
    elif r < 0.35:
        since = until = None
    return since, until


def random_query(rnd: random.Random) -> tuple[list[str], dict[str, Any]]:
    """Keys and filters that land on each family: model only (with api and service
    tier), team, or full; or on raw rows (api with the user: no family keeps both)."""
    family = rnd.choice(
        [["provider", "model"], MODEL_KEYS, ["org", "project", "provider", "model"], DIMS,
         ["user", "api"]]
    )  # fmt: skip
    keys = rnd.sample(family, rnd.randint(0, min(2, len(family))))
    flt: dict[str, Any] = {}
    filterable = [name for name in family if name != "service_tier"]
    for name in rnd.sample(filterable, rnd.randint(0, 2)):
        vals = rnd.sample(VALUES[name], rnd.randint(1, 2))
        flt[name] = vals[0] if len(vals) == 1 else vals
    return keys, flt


def test_cost_breakdown_random(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    rnd = random.Random(1)
    for _ in range(CASES):
        since, until = random_window(rnd, now)
        keys, flt = random_query(rnd)
        frame = analytics.cost_breakdown(by=keys or None, since=since, until=until, **flt)
        want = expect(select(df, since, until, **flt), keys)
        assert got(frame, keys) == want, (since, until, keys, flt)


def test_api_and_service_tier_breakdowns_read_the_model_rollups(data) -> None:  # type: ignore[no-untyped-def]
    """Every grouping of the model family's keys, over random windows and filters."""
    df, now = data
    rnd = random.Random(5)
    for keys in (["api"], ["service_tier"], ["api", "service_tier"], MODEL_KEYS):
        for _ in range(6):
            since, until = random_window(rnd, now)
            flt: dict[str, Any] = {"api": rnd.choice(VALUES["api"])} if rnd.random() < 0.3 else {}
            frame = analytics.cost_breakdown(by=keys, since=since, until=until, **flt)
            want = expect(select(df, since, until, **flt), keys)
            assert got(frame, keys) == want, (since, until, keys, flt)


def test_spending_trends_random(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    rnd = random.Random(2)
    for _ in range(CASES):
        since, until = random_window(rnd, now)
        keys, flt = random_query(rnd)
        gran = rnd.choice(["day", "week", "month"])
        tz = rnd.choice(ZONES)
        frame = analytics.spending_trends(
            gran, since=since, until=until, by=keys or None, tz=tz, **flt
        )
        part = select(df, since, until, **flt).copy()
        part["period"] = [local_start(t, gran, tz) for t in part["ts"]]
        want = expect(part, ["period", *keys])
        assert got(frame, ["period", *keys]) == want, (gran, tz, since, until, keys, flt)


def test_usage_report_and_comparison_random(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    rnd = random.Random(3)
    group = ["org", "project", "user", "model"]
    for _ in range(CASES // 2):
        since, until = random_window(rnd, now)
        _, flt = random_query(rnd)
        frame = analytics.usage_report(since=since, until=until, **flt)
        assert got(frame, group) == expect(select(df, since, until, **flt), group)
    for days in (7, 15, 30):
        frame = analytics.usage_comparison(f"{days}d", by="user")
        a = frame.attrs
        for which in ("current", "previous"):
            part = select(df, a[f"{which}_start"], a[f"{which}_end"])
            calls = dict(zip(frame["user"], frame[f"calls_{which}"], strict=True))
            assert {u: c for u, c in calls.items() if c} == part.groupby("user").size().to_dict()


def test_aggregated_spending_random(data) -> None:  # type: ignore[no-untyped-def]
    df, now = data
    rnd = random.Random(4)
    for _ in range(CASES // 2):
        since, until = random_window(rnd, now)
        level = rnd.choice(["org", "project", "user"])
        keys = ["org"] if level == "org" else ["org", level]
        frame = analytics.aggregated_spending(level, since=since, until=until)
        assert list(frame.columns[: len(keys)]) == keys
        out = {
            tuple(r[k] for k in keys): tuple(r[c] for c in MEASURE_COLUMNS)
            for r in frame.to_dict("records")
            if r["calls"]
        }
        assert out == expect(select(df, since, until), keys), (level, since, until)


def test_bulk_rebuilt_rollups_answer_like_row_by_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Rollups rebuilt from raw rows (the bulk path) equal those kept row by row: every
    rollup table, and the answers."""
    import warnings

    from llmspend.store.rollups import ROLLUPS, rebuild_rollups
    from llmspend.tracker import Tracker, set_tracker

    now = utcnow().replace(microsecond=0)
    rows = make_rows(800, now, days=30, seed=5)
    trackers = []
    for name in ("rows", "bulk"):
        t = Tracker(f"sqlite:///{tmp_path / name}.sqlite", org="acme", project="churn", user="ana")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(0, len(rows), 100):
                t.ingest(rows[i : i + 100])
        trackers.append(t)
    rebuild_rollups(trackers[1].store)

    def tables(t: Any) -> list[list[tuple[Any, ...]]]:
        with t.store.begin() as conn:
            return [sorted(tuple(r) for r in conn.execute(r.table.select()).all()) for r in ROLLUPS]

    assert tables(trackers[0]) == tables(trackers[1])
    answers = []
    for t in trackers:
        set_tracker(t)
        try:
            answers.append(
                (
                    analytics.cost_breakdown(["org", "user"]).to_dict("records"),
                    analytics.spending_trends("week", tz="Asia/Kolkata").to_dict("records"),
                )
            )
        finally:
            set_tracker(None)
    assert answers[0] == answers[1]
