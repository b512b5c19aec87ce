"""Time buckets for trends: hours, days, weeks (Monday) and months in any time zone.

Boundaries are local calendar boundaries (DST included, from :mod:`llmspend.periods`)
returned as naive UTC datetimes, the form the store and the query engine use; labels are
tz-aware bucket starts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import ValidationError
from ..periods import find_zone, first_day, local_midnight, next_first_day

__all__ = ["GRANULARITIES", "MAX_PERIODS", "check_granularity", "check_tz", "period_bounds"]

GRANULARITIES = ("hour", "day", "week", "month")
MAX_PERIODS = 100_000
UTC = dt.UTC
_HOUR = dt.timedelta(hours=1)
_QUARTER = dt.timedelta(minutes=15)


def check_granularity(granularity: Any) -> str:
    if granularity not in GRANULARITIES:
        raise ValidationError(
            f"unknown granularity {granularity!r}; use one of: {', '.join(GRANULARITIES)}"
        )
    return str(granularity)


def check_tz(tz: Any) -> dt.tzinfo:
    """An IANA name (``"Europe/Berlin"``), a tzinfo, or None (UTC)."""
    if tz is None:
        return UTC
    if isinstance(tz, dt.tzinfo):
        return tz
    if isinstance(tz, str) and tz:
        if tz.upper() == "UTC":
            return UTC
        found = find_zone(tz)
        if found is not None:
            return found
    raise ValidationError(
        f"tz: unknown time zone {tz!r} (use an IANA name such as 'UTC' or 'Europe/Berlin')"
    )


def period_bounds(
    granularity: str, tz: dt.tzinfo, lo: dt.datetime, hi: dt.datetime
) -> list[dt.datetime]:
    """Bucket starts covering ``[lo, hi)`` (naive UTC): ``b[0] <= lo``, ``b[-1] >= hi``."""
    local = lo.replace(tzinfo=UTC).astimezone(tz)
    out: list[dt.datetime] = []
    if granularity == "hour":
        b = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC).replace(tzinfo=None)
        if b > lo:  # pragma: no cover - only for zones whose offset is not whole minutes
            b -= dt.timedelta(hours=1)
        step = dt.timedelta(hours=1)
        count = int((hi - b) / step) + 2
        if count > MAX_PERIODS:
            raise ValidationError(_too_many(granularity, count))
        out.append(b)
        fixed = tz is UTC or isinstance(tz, dt.timezone)  # no offset changes
        while b < hi:
            b = b + step if fixed else _next_hour(b, tz)
            out.append(b)
        return out
    day = first_day(granularity, local.date())
    b = local_midnight(day, tz)
    while b > lo:  # lo fell in a DST gap right after a boundary
        day = first_day(granularity, day - dt.timedelta(days=1))
        b = local_midnight(day, tz)
    out.append(b)
    while b < hi:
        day = next_first_day(granularity, day)
        b = local_midnight(day, tz)
        out.append(b)
        if len(out) > MAX_PERIODS:
            raise ValidationError(_too_many(granularity, len(out)))
    return out


def _next_hour(b: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The next local whole hour after ``b`` (naive UTC), for zones whose offset changes.

    ``b + 1 h`` unless an offset change of a half hour (Australia/Lord_Howe) lies between:
    then the first quarter of a UTC hour after ``b`` where the local clock shows a whole
    hour, so the bucket is 30 minutes longer or shorter and the next one starts on the
    hour again (``b + 1 h`` if none is found, e.g. offsets not in whole quarter hours).
    """
    n = b + _HOUR
    if n.replace(tzinfo=UTC).astimezone(tz).minute:
        t = b + _QUARTER
        while t <= b + 2 * _HOUR:
            local = t.replace(tzinfo=UTC).astimezone(tz)
            if local.minute == 0 and local.second == 0:
                return t
            t += _QUARTER
    return n


def _too_many(granularity: str, count: int) -> str:
    return (
        f"{count:,} {granularity} buckets is too many (at most {MAX_PERIODS:,}); use a "
        "coarser granularity or a shorter since/until range"
    )


def labels(bounds: list[dt.datetime], tz: dt.tzinfo) -> Any:
    """tz-aware bucket starts (all but the last boundary), as a pandas DatetimeIndex."""
    import pandas as pd

    return pd.DatetimeIndex(bounds[:-1]).as_unit("us").tz_localize("UTC").tz_convert(tz)
