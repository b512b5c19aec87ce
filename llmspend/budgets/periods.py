"""Budget periods: the calendar periods of :mod:`llmspend.periods`, named by the budget.

A budget names its period (``day`` ... ``year``, or ``total``: one period that never
ends), its IANA time zone and its first day of the week; this module checks those names
(raising :class:`~llmspend.errors.BudgetError`) and remembers the current period's bounds
for the hot path. Boundaries are naive UTC datetimes, the form the store keeps.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from ..errors import BudgetError
from ..periods import UNITS, find_zone
from ..periods import period_bounds as calendar_bounds

__all__ = ["PERIODS", "TOTAL_START", "current_bounds", "period_bounds", "zone"]

PERIODS = (*UNITS, "total")
TOTAL_START = dt.datetime(1970, 1, 1)


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise BudgetError(f"timezone must be an IANA name such as 'Europe/Berlin', got {name!r}")
    found = find_zone(name)
    if found is None:
        raise BudgetError(
            f"unknown time zone {name!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
        )
    return found


def period_bounds(
    period: str, tz_name: str, at: dt.datetime, *, week_start: int = 0
) -> tuple[dt.datetime, dt.datetime | None]:
    """(start, end) of the period containing ``at`` (naive UTC), as naive UTC datetimes."""
    if period == "total":
        return TOTAL_START, None
    tz = zone(tz_name)
    if period not in UNITS:
        raise BudgetError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")
    return calendar_bounds(period, tz, at, week_start=week_start)


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
