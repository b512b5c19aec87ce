"""Budget periods: calendar boundaries in the budget's own time zone.

A period starts at local midnight of its first day (day, week, month, quarter, year) in
the budget's IANA time zone, DST included, and ends where the next one starts; weeks
start on Monday unless configured. ``total`` has one period that never ends. Boundaries
are returned as naive UTC datetimes, the form the store keeps.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import BudgetError

__all__ = ["PERIODS", "TOTAL_START", "current_bounds", "period_bounds", "zone"]

PERIODS = ("day", "week", "month", "quarter", "year", "total")
TOTAL_START = dt.datetime(1970, 1, 1)
UTC = dt.UTC


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise BudgetError(f"timezone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # e.g. "America" is a directory
        raise BudgetError(
            f"unknown time zone {name!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


def _local_midnight(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first instant of ``day`` in ``tz``, as naive UTC (handles DST gaps at midnight)."""
    local = dt.datetime(day.year, day.month, day.day, tzinfo=tz)
    utc = local.astimezone(UTC)
    # If midnight does not exist (a DST gap at 00:00), the day starts at the gap's end.
    if utc.astimezone(tz).date() != day:
        utc = dt.datetime(day.year, day.month, day.day, 1, tzinfo=tz).astimezone(UTC)
    return utc.replace(tzinfo=None)


def _add_months(day: dt.date, months: int) -> dt.date:
    m = day.month - 1 + months
    return dt.date(day.year + m // 12, m % 12 + 1, 1)


def period_bounds(
    period: str, tz_name: str, at: dt.datetime, *, week_start: int = 0
) -> tuple[dt.datetime, dt.datetime | None]:
    """(start, end) of the period containing ``at`` (naive UTC), as naive UTC datetimes."""
    if period == "total":
        return TOTAL_START, None
    tz = zone(tz_name)
    local = at.replace(tzinfo=UTC).astimezone(tz)
    today = local.date()
    if period == "day":
        first, nxt = today, today + dt.timedelta(days=1)
    elif period == "week":
        first = today - dt.timedelta(days=(today.weekday() - week_start) % 7)
        nxt = first + dt.timedelta(days=7)
    elif period == "month":
        first = today.replace(day=1)
        nxt = _add_months(first, 1)
    elif period == "quarter":
        first = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        nxt = _add_months(first, 3)
    elif period == "year":
        first, nxt = dt.date(today.year, 1, 1), dt.date(today.year + 1, 1, 1)
    else:
        raise BudgetError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    start, end = _local_midnight(first, tz), _local_midnight(nxt, tz)
    if not start <= at < end:  # at fell in a DST gap right at a boundary: re-anchor
        if at < start:
            return period_bounds(
                period, tz_name, start - dt.timedelta(microseconds=1), week_start=week_start
            )
        return period_bounds(period, tz_name, end, week_start=week_start)
    return start, end


_bounds: dict[tuple[str, str, int], tuple[dt.datetime, dt.datetime | None]] = {}


def current_bounds(
    period: str, tz_name: str, at: dt.datetime, *, week_start: int = 0
) -> tuple[dt.datetime, dt.datetime | None]:
    """:func:`period_bounds`, remembered until ``at`` leaves the period (the hot path asks
    for the same few periods on every call)."""
    key = (period, tz_name, week_start)
    hit = _bounds.get(key)
    if hit is not None and hit[0] <= at and (hit[1] is None or at < hit[1]):
        return hit
    bounds = period_bounds(period, tz_name, at, week_start=week_start)
    if len(_bounds) > 4096:  # as many as there are distinct (period, zone, week start)
        _bounds.clear()
    _bounds[key] = bounds
    return bounds
