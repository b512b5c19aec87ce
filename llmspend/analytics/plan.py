"""Which rows a query reads: the levels (weeks, days, hours, raw rows) and their segments.

For periods ``[b[i], b[i+1])`` (naive UTC; :data:`LO_INF` / :data:`HI_INF` for open ends),
each level snaps every boundary to its own grid (nearest Monday 00:00 UTC, nearest UTC
midnight, nearest hour, nearest quarter hour (team and model families), or the exact time
for raw rows). The rollup levels read the tables of one family
(:data:`~llmspend.store.rollups.FAMILIES`): the narrowest that keeps every dimension the
query groups or filters by. A level's *segments* are the time ranges where its assignment
of a row to a period differs from the assignment of the level above: there, the level adds
its rows to the period it assigns and subtracts them from the one the level above
assigned. Summed over all levels, every row counts once, in its true period
(``tests/test_analytics_engine.py`` checks this property on random inputs)."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from sqlalchemy import Table

from ..store.rollups import FAMILIES, ROLLUPS

__all__ = [
    "DAYS",
    "HI_INF",
    "HOURS",
    "LO_INF",
    "RAW",
    "WEEKS",
    "Level",
    "Segment",
    "family_for",
    "levels_of",
    "plan",
    "segments",
]

LO_INF = dt.datetime.min
HI_INF = dt.datetime.max
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
WEEK = dt.timedelta(days=7)
QUARTER = dt.timedelta(minutes=15)
_MONDAY = dt.datetime(1970, 1, 5)


@dataclass(frozen=True, slots=True)
class Level:
    name: str
    table: Table | None  # None: the raw usage table
    unit: dt.timedelta | None


_UNITS = {"quarter": QUARTER, "hour": HOUR, "day": DAY, "week": WEEK}
#: family → grain → level
_LEVELS: dict[str, dict[str, Level]] = {}
for _r in ROLLUPS:
    _LEVELS.setdefault(_r.family, {})[_r.grain] = Level(_r.grain, _r.table, _UNITS[_r.grain])
WEEKS, DAYS, HOURS = (_LEVELS["full"][g] for g in ("week", "day", "hour"))
RAW = Level("raw", None, None)


def levels_of(family: str) -> tuple[Level, Level, Level]:
    """(weeks, days, hours) of one rollup family."""
    lv = _LEVELS[family]
    return lv["week"], lv["day"], lv["hour"]


def family_for(dims: set[str]) -> str | None:
    """The narrowest rollup family keeping every store column in ``dims`` (None: none
    keeps them all, as ``user`` with ``api``: read raw rows). Families are listed widest
    first, so the last that keeps them is the narrowest."""
    for name in reversed(FAMILIES):
        if dims <= set(FAMILIES[name]):
            return name
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """Rows with lo <= t < hi add to period ``plus`` and subtract from ``minus``."""

    lo: dt.datetime
    hi: dt.datetime
    plus: int | None
    minus: int | None


def _floor(t: dt.datetime, unit: dt.timedelta) -> dt.datetime:
    if unit == QUARTER:
        return t.replace(minute=t.minute // 15 * 15, second=0, microsecond=0)
    if unit == WEEK:
        return _MONDAY + (t - _MONDAY) // WEEK * WEEK
    if unit == DAY:
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return t.replace(minute=0, second=0, microsecond=0)


def _snap(t: dt.datetime, unit: dt.timedelta | None) -> dt.datetime:
    if unit is None or t in (LO_INF, HI_INF):
        return t
    low = _floor(t, unit)
    return low + unit if t - low >= unit / 2 else low


def _assign(bounds: Sequence[dt.datetime], t: dt.datetime) -> int | None:
    i = bisect_right(bounds, t) - 1
    if i < 0 or i >= len(bounds) - 1 or not t < bounds[i + 1]:
        return None
    return i


def segments(lower: Sequence[dt.datetime], upper: Sequence[dt.datetime] | None) -> list[Segment]:
    """Where assignment under ``lower`` boundaries differs from ``upper`` (None: nothing)."""
    points = sorted(set(lower) | set(upper or ()))
    out: list[Segment] = []
    for a, b in pairwise(points):
        plus = _assign(lower, a)
        minus = _assign(upper, a) if upper is not None else None
        if plus == minus:
            continue
        if out and out[-1].hi == a and (out[-1].plus, out[-1].minus) == (plus, minus):
            out[-1] = Segment(out[-1].lo, b, plus, minus)
        else:
            out.append(Segment(a, b, plus, minus))
    return out


def plan(
    bounds: Sequence[dt.datetime],
    *,
    raw_only: bool,
    use_days: bool,
    family: str = "full",
    use_weeks: bool = False,
) -> list[tuple[Level, list[Segment]]]:
    """The levels to read and the segments each one covers.

    With ``use_weeks``, weeks are read when every bounded period is at least a week long
    (shorter periods would make the days level correct nearly every weekly row)."""
    span = bounds[-1] - bounds[0] if bounds[0] > LO_INF and bounds[-1] < HI_INF else None
    gaps = [b - a for a, b in pairwise(bounds) if a > LO_INF and b < HI_INF]
    weeks, days, hours = levels_of(family)
    levels: list[Level] = []
    if not raw_only:
        long = span is None or span >= 2 * WEEK
        if use_weeks and use_days and long and min(gaps, default=WEEK) >= WEEK:
            levels.append(weeks)
        if use_days and (span is None or span >= 2 * DAY):
            levels.append(days)
        if span is None or span >= 2 * HOUR:
            levels.append(hours)
        quarters = _LEVELS[family].get("quarter")
        if quarters is not None and (span is None or span >= 2 * QUARTER):
            levels.append(quarters)
    levels.append(RAW)
    out = []
    upper: list[dt.datetime] | None = None
    for level in levels:
        snapped = [_snap(b, level.unit) for b in bounds]
        segs = segments(snapped, upper)
        if segs:
            out.append((level, segs))
        upper = snapped
    return out
