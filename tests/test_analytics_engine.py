"""The query plan's algebra: days + hour corrections + raw corrections = the true periods."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from llmspend.analytics.plan import HI_INF, LO_INF, plan

BASE = dt.datetime(2026, 3, 1)
SPAN_US = 20 * 86400 * 10**6


def _bucket(t: dt.datetime, unit: dt.timedelta | None) -> dt.datetime:
    if unit is None:
        return t
    if unit == dt.timedelta(days=1):
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(minute=0, second=0, microsecond=0)


def simulate(events: list[dt.datetime], bounds: list[dt.datetime], use_days: bool) -> Counter:
    """What aggregate() computes, with each level's SQL replaced by Python."""
    out: Counter = Counter()
    for level, segs in plan(bounds, raw_only=False, use_days=use_days):
        starts = [s.lo for s in segs]
        for t in events:
            b = _bucket(t, level.unit)
            i = bisect_right(starts, b) - 1
            if i < 0 or not b < segs[i].hi:
                continue
            if segs[i].plus is not None:
                out[segs[i].plus] += 1
            if segs[i].minus is not None:
                out[segs[i].minus] -= 1
    return +out


def truth(events: list[dt.datetime], bounds: list[dt.datetime]) -> Counter:
    out: Counter = Counter()
    for t in events:
        i = bisect_right(bounds, t) - 1
        if 0 <= i < len(bounds) - 1 and t < bounds[i + 1]:
            out[i] += 1
    return out


micros = st.integers(0, SPAN_US)
aligned = st.integers(0, 20 * 24).map(lambda h: h * 3600 * 10**6)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.one_of(micros, aligned), max_size=60),
    cuts=st.lists(st.one_of(micros, aligned), min_size=2, max_size=8),
    open_lo=st.booleans(),
    open_hi=st.booleans(),
    use_days=st.booleans(),
)
def test_plan_counts_every_event_in_its_period_once(
    events: list[int], cuts: list[int], open_lo: bool, open_hi: bool, use_days: bool
) -> None:
    times = [BASE + dt.timedelta(microseconds=e) for e in events]
    bounds = sorted(BASE + dt.timedelta(microseconds=c) for c in cuts)
    if open_lo:
        bounds[0] = LO_INF
    if open_hi:
        bounds[-1] = HI_INF
    assert simulate(times, bounds, use_days) == truth(times, bounds)


def test_levels_used() -> None:
    lo = dt.datetime(2026, 3, 1, 7, 13, 5, 1)
    names = [
        level.name
        for level, _ in plan(
            [lo, lo + dt.timedelta(days=20, minutes=7)], raw_only=False, use_days=True
        )
    ]
    assert names == ["day", "hour", "raw"]
    short = plan([lo, lo + dt.timedelta(minutes=15)], raw_only=False, use_days=True)
    assert [level.name for level, _ in short] == ["raw"]
    open_ended = plan([LO_INF, HI_INF], raw_only=False, use_days=True)
    assert [level.name for level, _ in open_ended] == ["day"]
    # hour-aligned local days (UTC-5): ~5 hourly buckets per boundary, no raw rows
    days = [dt.datetime(2026, 3, d, 5) for d in range(1, 12)]
    steps = dict((level.name, segs) for level, segs in plan(days, raw_only=False, use_days=True))
    assert set(steps) == {"day", "hour"}
    assert all(s.hi - s.lo == dt.timedelta(hours=5) for s in steps["hour"])
