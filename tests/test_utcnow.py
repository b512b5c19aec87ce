"""``utcnow()``: the system clock's UTC now, naive, as ``datetime.now(UTC)`` reads it, moved
by ``shift_clock``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from llmspend import timeutil
from llmspend.timeutil import shift_clock, utcnow


@pytest.fixture(autouse=True)
def _clock_restored() -> Iterator[None]:
    before = timeutil.clock_shift()
    yield
    shift_clock(before)


def _aware_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def test_it_reads_the_clock_datetime_now_reads() -> None:
    for _ in range(1000):
        before = _aware_now()
        now = utcnow()
        after = _aware_now()
        assert now.tzinfo is None
        assert before <= now <= after


def test_it_rounds_microseconds_down_as_datetime_now_does(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = 1_767_225_599_999_999_999  # 2025-12-31T23:59:59.999999999Z
    monkeypatch.setattr(timeutil, "time_ns", lambda: ns)
    assert utcnow() == dt.datetime(2025, 12, 31, 23, 59, 59, 999999)
    assert utcnow() == dt.datetime.fromtimestamp(ns // 1000 / 1e6, dt.UTC).replace(tzinfo=None)


def test_a_shifted_clock_is_moved_by_the_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeutil, "time_ns", lambda: 1_774_746_000_000_000_000)
    assert utcnow() == dt.datetime(2026, 3, 29, 1, 0)  # a DST change in Europe: UTC has none
    shift_clock(dt.timedelta(days=-400, hours=5))
    assert utcnow() == dt.datetime(2025, 2, 22, 6, 0)


def test_a_clock_shifted_out_of_range_fails_as_before() -> None:
    shift_clock(dt.timedelta(days=3_000_000))
    with pytest.raises(OverflowError):
        utcnow()
