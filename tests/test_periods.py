"""Calendar periods in the budget's own time zone, DST included."""

from __future__ import annotations

import datetime as dt

import pytest

from llmspend import periods as calendar
from llmspend.budgets.periods import TOTAL_START, current_bounds, period_bounds
from llmspend.errors import BudgetError, ValidationError


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args)  # naive UTC, as the store keeps it


def test_day_in_utc() -> None:
    assert period_bounds("day", "UTC", utc(2026, 3, 5, 13)) == (utc(2026, 3, 5), utc(2026, 3, 6))


def test_day_in_a_non_utc_zone() -> None:
    # 2026-03-05 02:00 UTC is still March 4th in New York (UTC-5 in winter).
    start, end = period_bounds("day", "America/New_York", utc(2026, 3, 5, 2))
    assert (start, end) == (utc(2026, 3, 4, 5), utc(2026, 3, 5, 5))


def test_day_across_spring_forward_is_23_hours() -> None:
    # Europe/Berlin springs forward on 2026-03-29: that day has 23 hours.
    start, end = period_bounds("day", "Europe/Berlin", utc(2026, 3, 29, 12))
    assert start == utc(2026, 3, 28, 23)  # 00:00 CET = 23:00 UTC the day before
    assert end == utc(2026, 3, 29, 22)  # 00:00 CEST = 22:00 UTC
    assert end - start == dt.timedelta(hours=23)


def test_day_across_fall_back_is_25_hours() -> None:
    start, end = period_bounds("day", "Europe/Berlin", utc(2026, 10, 25, 12))
    assert end - start == dt.timedelta(hours=25)


def test_month_with_dst_change_inside() -> None:
    start, end = period_bounds("month", "America/New_York", utc(2026, 3, 20))
    assert start == utc(2026, 3, 1, 5)  # EST
    assert end == utc(2026, 4, 1, 4)  # EDT


def test_month_roll_over() -> None:
    assert period_bounds("month", "UTC", utc(2026, 1, 31, 23, 59, 59)) == (
        utc(2026, 1, 1),
        utc(2026, 2, 1),
    )
    assert period_bounds("month", "UTC", utc(2026, 2, 1)) == (utc(2026, 2, 1), utc(2026, 3, 1))
    assert period_bounds("month", "UTC", utc(2026, 12, 15)) == (utc(2026, 12, 1), utc(2027, 1, 1))


def test_week_starts_monday_unless_configured() -> None:
    # 2026-11-26 is a Thursday.
    assert period_bounds("week", "UTC", utc(2026, 11, 26)) == (utc(2026, 11, 23), utc(2026, 11, 30))
    sunday = period_bounds("week", "UTC", utc(2026, 11, 26), week_start=6)
    assert sunday == (utc(2026, 11, 22), utc(2026, 11, 29))


def test_quarter_and_year() -> None:
    assert period_bounds("quarter", "UTC", utc(2026, 5, 9)) == (utc(2026, 4, 1), utc(2026, 7, 1))
    assert period_bounds("year", "Asia/Tokyo", utc(2026, 6, 1)) == (
        utc(2025, 12, 31, 15),
        utc(2026, 12, 31, 15),
    )


def test_total_never_resets() -> None:
    assert period_bounds("total", "UTC", utc(2030, 1, 1)) == (TOTAL_START, None)


def test_every_instant_is_inside_its_period() -> None:
    at = utc(2026, 1, 1)
    for hours in range(0, 24 * 400, 7):
        t = at + dt.timedelta(hours=hours)
        for period in ("day", "week", "month", "quarter", "year"):
            for tz in ("UTC", "Europe/Berlin", "America/Santiago", "Australia/Lord_Howe"):
                start, end = period_bounds(period, tz, t)
                assert end is not None and start <= t < end


def test_remembered_bounds_follow_the_clock_across_dst_and_roll_overs() -> None:
    # The hot path's cache must give period_bounds' answer at every instant, forwards and
    # back (a test clock may move either way), across DST changes and period ends.
    at = utc(2026, 3, 27)
    steps = [dt.timedelta(minutes=m) for m in range(0, 60 * 24 * 40, 97)]
    for t in [at + s for s in steps] + [at + s for s in reversed(steps)]:
        for period in ("day", "week", "month"):
            for tz in ("Europe/Berlin", "America/New_York", "UTC"):
                assert current_bounds(period, tz, t) == period_bounds(period, tz, t)
        assert current_bounds("week", "UTC", t, week_start=6) == period_bounds(
            "week", "UTC", t, week_start=6
        )


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "utc+1"])
def test_unknown_timezone(bad: str) -> None:
    with pytest.raises(BudgetError, match=r"time zone|timezone"):
        period_bounds("day", bad, utc(2026, 1, 1))


def test_unknown_period() -> None:
    with pytest.raises(BudgetError, match="unknown period"):
        period_bounds("fortnight", "UTC", utc(2026, 1, 1))


# -- the calendar arithmetic under budgets, analytics buckets and report windows ---------------


def test_calendar_first_days_and_shifts() -> None:
    thursday = dt.date(2026, 11, 26)
    assert calendar.first_day("week", thursday) == dt.date(2026, 11, 23)
    assert calendar.first_day("week", thursday, week_start=6) == dt.date(2026, 11, 22)
    assert calendar.first_day("quarter", thursday) == dt.date(2026, 10, 1)
    assert calendar.next_first_day("quarter", dt.date(2026, 10, 1)) == dt.date(2027, 1, 1)
    assert calendar.next_first_day("month", dt.date(2026, 3, 1), -3) == dt.date(2025, 12, 1)
    assert calendar.add_months(dt.date(2026, 1, 31), 13) == dt.date(2027, 2, 1)
    with pytest.raises(ValidationError, match="unknown calendar unit"):
        calendar.first_day("fortnight", thursday)


def test_calendar_midnight_in_a_dst_gap() -> None:
    # America/Santiago springs forward at midnight: 2026-09-06 starts at 01:00 local (-03).
    tz = calendar.find_zone("America/Santiago")
    assert tz is not None
    assert calendar.local_midnight(dt.date(2026, 9, 6), tz) == utc(2026, 9, 6, 4)
    assert calendar.find_zone("Mars/Olympus") is None and calendar.find_zone("America") is None


def test_a_day_the_clocks_skipped_is_empty_and_days_still_tile() -> None:
    # Samoa skipped 2011-12-30 (UTC-10 -> UTC+14 at midnight): the 29th ends, and the 31st
    # starts, at the same instant; the 30th is empty. (Its start was read an hour late, so
    # the 29th and the 31st overlapped by an hour.)
    tz = calendar.find_zone("Pacific/Apia")
    assert tz is not None
    skip = utc(2011, 12, 30, 10)
    assert calendar.local_midnight(dt.date(2011, 12, 30), tz) == skip
    assert calendar.period_bounds("day", tz, utc(2011, 12, 30, 9))[1] == skip
    assert calendar.period_bounds("day", tz, skip)[0] == skip
    assert calendar.period_bounds("day", tz, skip)[1] == utc(2011, 12, 31, 10)
    # and a spring-forward gap not at midnight leaves midnight alone
    berlin = calendar.find_zone("Europe/Berlin")
    assert berlin is not None
    assert calendar.local_midnight(dt.date(2026, 3, 29), berlin) == utc(2026, 3, 28, 23)


def test_calendar_unit_of_a_window() -> None:
    assert calendar.unit_of(utc(2026, 3, 1), utc(2026, 4, 1)) == "month"
    assert calendar.unit_of(utc(2026, 3, 2), utc(2026, 3, 9)) == "week"  # a Monday
    assert calendar.unit_of(utc(2026, 1, 1), utc(2027, 1, 1)) == "year"
    assert calendar.unit_of(utc(2026, 3, 1), utc(2026, 3, 15)) is None
    berlin = calendar.find_zone("Europe/Berlin")
    assert berlin is not None
    assert calendar.unit_of(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22), berlin) == "month"


def test_budget_and_bucket_periods_are_the_calendar_periods() -> None:
    from llmspend.analytics import buckets

    berlin = buckets.check_tz("Europe/Berlin")
    at = utc(2026, 3, 20, 10)
    for unit in ("day", "week", "month"):
        expected = calendar.period_bounds(unit, berlin, at)
        assert period_bounds(unit, "Europe/Berlin", at) == expected
        assert buckets.period_bounds(unit, berlin, at, at)[0] == expected[0]
