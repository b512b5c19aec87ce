"""Calendar periods: day, week, month, quarter and year in any time zone.

The one implementation of calendar arithmetic in llmspend: budget periods
(:mod:`llmspend.budgets.periods`), analytics time buckets (:mod:`llmspend.analytics.buckets`)
and report windows (:mod:`llmspend.report`) are all made from these functions.

Dates are local calendar days; instants are naive UTC datetimes, the form the store keeps.
A period starts at local midnight of its first day (DST included: where midnight does not
exist, the day starts when the gap ends) and ends where the next one starts. Weeks start
on Monday unless ``week_start`` (0 = Monday ... 6 = Sunday) says otherwise.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationError

__all__ = [
    "UNITS",
    "add_months",
    "find_zone",
    "first_day",
    "local_midnight",
    "next_first_day",
    "period_bounds",
    "unit_of",
]

#: The calendar units, shortest first.
UNITS: tuple[str, ...] = ("day", "week", "month", "quarter", "year")
_UNIT_MONTHS = {"month": 1, "quarter": 3, "year": 12}
UTC = dt.UTC


def find_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone ``name`` (``"Europe/Berlin"``), or ``None`` if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # e.g. "America" is a directory
        return None


def add_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after ``day``'s month."""
    m = day.month - 1 + months
    return dt.date(day.year + m // 12, m % 12 + 1, 1)


def first_day(unit: str, day: dt.date, *, week_start: int = 0) -> dt.date:
    """The first day of the ``unit`` that ``day`` is in."""
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=(day.weekday() - week_start) % 7)
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    if unit == "year":
        return dt.date(day.year, 1, 1)
    raise ValidationError(f"unknown calendar unit {unit!r}; use one of {', '.join(UNITS)}")


def next_first_day(unit: str, first: dt.date, n: int = 1) -> dt.date:
    """The first day of the ``unit`` ``n`` units after the one starting on ``first``."""
    if unit == "day":
        return first + dt.timedelta(days=n)
    if unit == "week":
        return first + dt.timedelta(weeks=n)
    if unit in _UNIT_MONTHS:
        return add_months(first, n * _UNIT_MONTHS[unit])
    raise ValidationError(f"unknown calendar unit {unit!r}; use one of {', '.join(UNITS)}")


def local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    """The first instant of ``day`` in ``tz``, as naive UTC (handles DST gaps at midnight)."""
    midnight = dt.datetime(day.year, day.month, day.day)
    utc = midnight.replace(tzinfo=tz).astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == midnight:
        return utc.replace(tzinfo=None)
    # Midnight does not exist (a gap: clocks jumped over it, or over the whole day, as in
    # Samoa on 2011-12-30): the day starts when the gap ends, the instant the offset
    # changes. Read at the offset after the gap (fold=1) midnight falls before that
    # instant, at the offset before it (fold=0) after: find it between the two.
    lo = midnight.replace(tzinfo=tz, fold=1).astimezone(UTC)  # local time before midnight
    hi = utc  # local time past midnight
    while hi - lo > dt.timedelta(microseconds=1):
        mid = lo + (hi - lo) // 2
        if mid.astimezone(tz).replace(tzinfo=None) >= midnight:
            hi = mid
        else:
            lo = mid
    return hi.replace(tzinfo=None)


def period_bounds(
    unit: str, tz: dt.tzinfo, at: dt.datetime, *, week_start: int = 0
) -> tuple[dt.datetime, dt.datetime]:
    """``(start, end)`` of the ``unit`` in ``tz`` that contains ``at``, all naive UTC."""
    first = first_day(unit, at.replace(tzinfo=UTC).astimezone(tz).date(), week_start=week_start)
    start = local_midnight(first, tz)
    end = local_midnight(next_first_day(unit, first), tz)
    if not start <= at < end:  # at fell in a DST gap right at a boundary: re-anchor
        if at < start:
            before = start - dt.timedelta(microseconds=1)
            return period_bounds(unit, tz, before, week_start=week_start)
        return period_bounds(unit, tz, end, week_start=week_start)
    return start, end


def unit_of(since: dt.datetime, until: dt.datetime, tz: dt.tzinfo = UTC) -> str | None:
    """The unit (``"day"`` ... ``"year"``) if ``[since, until)`` is exactly one calendar
    period in ``tz`` (weeks from Monday), else ``None``."""
    for unit in UNITS:
        if period_bounds(unit, tz, since) == (since, until):
            return unit
    return None
