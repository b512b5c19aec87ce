"""Report periods: the window ``[since, until)`` a report covers, and how it is named.

Periods are UTC calendar periods (:mod:`llmspend.periods`; weeks start Monday) or spans
up to now. A window is ``[since, until)``: ``since`` inclusive, ``until`` exclusive, as
everywhere in llmspend. The default is the current calendar month.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError
from ..periods import UNITS, period_bounds, unit_of
from ..timeutil import parse_span, parse_when, utcnow

__all__ = ["CALENDAR_PERIODS", "Window", "calendar_unit", "resolve_window"]

#: Named periods for ``--period`` (all UTC, on calendar boundaries; weeks start Monday).
CALENDAR_PERIODS: tuple[str, ...] = (
    "day", "week", "month", "quarter", "year",
    "yesterday", "last-week", "last-month", "last-quarter", "last-year",
)  # fmt: skip
_ALIASES = {"today": "day", "this-day": "day", "this-week": "week", "this-month": "month",
            "this-quarter": "quarter", "this-year": "year", "last-day": "yesterday"}  # fmt: skip
_MONTHS = tuple(calendar.month_name)
_UTC = dt.UTC
_INSTANT = dt.timedelta(microseconds=1)


def _midnight(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _bounds(unit: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC calendar ``unit`` (weeks from Monday) that contains ``at``."""
    return period_bounds(unit, _UTC, at)


def calendar_unit(since: dt.datetime, until: dt.datetime) -> str | None:
    """``"day"``, ``"week"``, ``"month"``, ``"quarter"`` or ``"year"`` if ``[since, until)``
    is exactly one such calendar period (UTC, weeks from Monday), else ``None``."""
    if since != _midnight(since):
        return None
    return unit_of(since, until, _UTC)


def _day(t: dt.datetime) -> str:
    return f"{t.day} {_MONTHS[t.month]} {t.year}"


@dataclass(frozen=True)
class Window:
    """A report period ``[since, until)`` in naive UTC."""

    since: dt.datetime
    until: dt.datetime
    period: str | None = None  # how it was asked for: "month", "7d", ... (None: since/until)

    @property
    def unit(self) -> str | None:
        """The calendar unit the window is exactly one of, if any."""
        return calendar_unit(self.since, self.until)

    @property
    def label(self) -> str:
        """For people: ``March 2026``, ``week of 2 March 2026``, ``Q1 2026``, or a range."""
        s, u = self.since, self.until
        unit = self.unit
        if unit == "day":
            return _day(s)
        if unit == "week":
            return f"week of {_day(s)}"
        if unit == "month":
            return f"{_MONTHS[s.month]} {s.year}"
        if unit == "quarter":
            return f"Q{(s.month - 1) // 3 + 1} {s.year}"
        if unit == "year":
            return str(s.year)
        if s == _midnight(s) and u == _midnight(u):
            return f"{_day(s)} – {_day(u - dt.timedelta(days=1))}"
        return f"{s:%Y-%m-%d %H:%M} – {u:%Y-%m-%d %H:%M} UTC"

    @property
    def slug(self) -> str:
        """For file names: ``2026-03``, ``2026-W10``, ``2026-Q1``, ``2026-03-01_2026-03-14``."""
        s, u = self.since, self.until
        unit = self.unit
        if unit == "day":
            return f"{s:%Y-%m-%d}"
        if unit == "week":
            year, week, _ = s.isocalendar()
            return f"{year}-W{week:02d}"
        if unit == "month":
            return f"{s:%Y-%m}"
        if unit == "quarter":
            return f"{s.year}-Q{(s.month - 1) // 3 + 1}"
        if unit == "year":
            return f"{s.year}"
        if s == _midnight(s) and u == _midnight(u):
            return f"{s:%Y-%m-%d}_{u - dt.timedelta(days=1):%Y-%m-%d}"
        return f"{s:%Y-%m-%dT%H%M}_{u:%Y-%m-%dT%H%M}"

    def in_progress(self, now: dt.datetime | None = None) -> bool:
        """Whether ``now`` falls inside the window (the period is not over yet)."""
        now = now or utcnow()
        return self.since <= now < self.until

    def to_date(self, now: dt.datetime | None = None) -> dt.datetime:
        """The end of what has happened so far: ``min(until, now)`` (never before since)."""
        now = now or utcnow()
        return max(self.since, min(self.until, now))

    def previous(self, now: dt.datetime | None = None) -> Window:
        """The window to compare with, like for like.

        A calendar month, quarter or year is compared with the one before it; any other
        window with the same length right before it. While the window is in progress,
        only as much of the previous one as has elapsed of this one (month to date
        against the same days of last month).
        """
        unit = self.unit
        if unit in ("month", "quarter", "year"):
            start = _bounds(unit, self.since - _INSTANT)[0]
        else:
            start = self.since - (self.until - self.since)
        elapsed = self.to_date(now) - self.since
        end = min(start + elapsed, self.since) if self.in_progress(now) else self.since
        return Window(start, end)

    def iso(self) -> tuple[str, str]:
        """``(since, until)`` as ISO strings (what the notebook receives)."""
        return self.since.isoformat(), self.until.isoformat()


def _normalize_period(period: str) -> str:
    name = period.strip().lower().replace("_", "-").replace(" ", "-")
    name = name.replace("previous-", "last-").replace("prev-", "last-")
    return _ALIASES.get(name, name)


def resolve_window(
    period: str | None = None,
    since: Any = None,
    until: Any = None,
    *,
    now: dt.datetime | None = None,
) -> Window:
    """The report window from ``period`` or ``since``/``until`` (default: this month).

    ``period``: one of :data:`CALENDAR_PERIODS` (``month`` is the current calendar month,
    ``last-month`` the one before, ...) or a span such as ``"7d"`` (the last 7 days up to
    now). ``since``/``until`` accept what ``records()`` accepts (datetimes, dates, ISO
    strings, spans); ``since`` alone runs to now, ``until`` alone starts at the first of
    its month. Empty strings count as not given. Raises :class:`ValidationError` with a
    one-line message for anything else (both a period and since/until, an unknown
    period, an unparseable time, since not before until).
    """
    now = now or utcnow()
    period = (period or "").strip() or None
    since = since.strip() if isinstance(since, str) else since
    until = until.strip() if isinstance(until, str) else until
    since = since if since not in ("", None) else None
    until = until if until not in ("", None) else None
    if period is not None and (since is not None or until is not None):
        raise ValidationError(f"give either a period ({period!r}) or since/until, not both")
    if period is None and since is None and until is None:
        period = "month"
    if period is not None:
        name = _normalize_period(period)
        last = name.startswith("last-")
        unit = "day" if name == "yesterday" else name.removeprefix("last-")
        if unit in UNITS:
            start, end = _bounds(unit, now)
            if last or name == "yesterday":
                start, end = _bounds(unit, start - _INSTANT)
            return Window(start, end, name)
        try:
            span = parse_span(period)
        except ValidationError:
            raise ValidationError(
                f"unknown period {period!r}; use one of {', '.join(CALENDAR_PERIODS)} or a "
                "span such as '7d', '24h'"
            ) from None
        if span <= dt.timedelta(0):
            raise ValidationError(f"the period must be longer than zero, got {period!r}")
        return Window(now - span, now, period.strip())
    lo = parse_when(since, name="since", now=now)
    hi = parse_when(until, name="until", now=now)
    if hi is None:
        hi = now
    if lo is None:
        lo = _bounds("month", hi - _INSTANT)[0]
    if lo >= hi:
        raise ValidationError(
            f"since ({lo:%Y-%m-%d %H:%M}) must be before until ({hi:%Y-%m-%d %H:%M}) "
            "(until is exclusive)"
        )
    return Window(lo, hi)
