"""Parsing times the way every public function accepts them.

``since``/``until`` take datetimes (naive means UTC), dates (midnight UTC), ISO strings and
relative spans such as ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` (counted back from now).
Everything is returned as a naive UTC datetime, the form the store keeps.
"""

from __future__ import annotations

import datetime as dt
import re
from time import time_ns
from typing import Any

from .errors import ValidationError

__all__ = ["EPOCH", "clock_shift", "parse_span", "parse_when", "to_naive_utc", "utcnow"]

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days|w|wk|weeks?)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_SPAN_SECONDS = 100 * 366 * 86400
#: The Unix epoch as a naive UTC datetime: ``ts - EPOCH`` is ``ts.replace(tzinfo=UTC)
#: .timestamp()`` for a naive UTC time, at a tenth of the cost.
EPOCH = dt.datetime(1970, 1, 1)
#: The times llmspend stores and queries: anything outside is a typo, not history.
MIN_TIME = EPOCH
MAX_TIME = dt.datetime(9999, 1, 1)


_offset = dt.timedelta(0)
_delta = dt.timedelta


def utcnow() -> dt.datetime:
    """Now, as a naive UTC datetime (shifted by :func:`shift_clock`, for tests)."""
    # What ``datetime.now(UTC).replace(tzinfo=None)`` gives (the same clock, microseconds
    # rounded down), in less than half its time: it is read on every call.
    return EPOCH + _delta(0, 0, time_ns() // 1000) + _offset


def shift_clock(delta: dt.timedelta) -> None:
    """Move llmspend's clock by ``delta`` (time travel for tests of periods and leases)."""
    global _offset
    _offset = delta


def clock_shift() -> dt.timedelta:
    """What :func:`shift_clock` moved llmspend's clock by (leases kept on the database's
    clock are moved by it too)."""
    return _offset


def to_naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_span(text: str) -> dt.timedelta:
    """``"15m"`` → 15 minutes. Raises ``ValidationError`` for anything else."""
    m = _SPAN.match(text) if isinstance(text, str) else None
    if not m:
        raise ValidationError(f"not a time span: {text!r} (use e.g. '30m', '24h', '7d', '2w')")
    unit = m.group(2).lower()[0]
    seconds = float(m.group(1)) * _UNIT_SECONDS[unit]
    if seconds > _MAX_SPAN_SECONDS:
        raise ValidationError(f"time span {text!r} is longer than 100 years")
    return dt.timedelta(seconds=seconds)


def parse_when(
    value: Any, *, name: str = "time", now: dt.datetime | None = None
) -> dt.datetime | None:
    """Parse a since/until value into a naive UTC datetime (``None`` stays ``None``)."""
    parsed = _parse_when(value, name, now)
    if parsed is not None and not MIN_TIME <= parsed < MAX_TIME:
        raise ValidationError(f"{name}: {value!r} is outside 1970-01-01 .. 9998-12-31")
    return parsed


def _from_datetime64(value: Any, name: str) -> dt.datetime:
    """A numpy ``datetime64`` as a naive datetime, rounded down to the microsecond."""
    if value != value:  # NaT
        raise ValidationError(f"{name}: got NaT (not a time)")
    got = value.astype("datetime64[us]").item()  # an int when outside datetime's range
    if not isinstance(got, dt.datetime):
        raise ValidationError(f"{name}: {value!r} is outside 1970-01-01 .. 9998-12-31")
    return got


def _parse_when(value: Any, name: str, now: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    if type(value).__name__ == "NaTType":
        raise ValidationError(f"{name}: got NaT (not a time)")
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
        # with nanoseconds, to_pydatetime() warns: numpy's value (UTC if aware) has them
        value = value.to_datetime64() if value.nanosecond else value.to_pydatetime()
    if type(value).__name__ == "datetime64":  # numpy: naive, so UTC
        value = _from_datetime64(value, name)
    if isinstance(value, dt.datetime):
        try:
            return to_naive_utc(value)
        except OverflowError:
            raise ValidationError(f"{name}: {value!r} is out of range") from None
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        text = value.strip()
        if _SPAN.match(text):
            return (now or utcnow()) - parse_span(text)
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"{name}: cannot parse {value!r} as a time (use a datetime, a date, an ISO "
                "string such as '2026-01-31T12:00', or a span such as '7d')"
            ) from None
        try:
            return to_naive_utc(parsed)
        except OverflowError:
            raise ValidationError(f"{name}: {value!r} is out of range") from None
    raise ValidationError(
        f"{name}: expected a datetime, date, ISO string or span, not {type(value).__name__}"
    )
