"""The per-call path's shortcuts give what the general code gives (STYLE 15): a usage
already consistent is copied as it is, SQLite's time text made with ``str()``, a call's
epoch by subtraction."""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from llmspend.call import MAX_TOKENS, Usage
from llmspend.store.fastsql import db_time_for
from llmspend.timeutil import EPOCH


def _clamped(u: Usage) -> tuple[int, ...]:
    """The general rule of Usage.clamp, spelled out."""
    inp = min(max(0, int(u.input_tokens or 0)), MAX_TOKENS)
    out = min(max(0, int(u.output_tokens or 0)), MAX_TOKENS)
    cached = min(max(0, int(u.cached_input_tokens or 0)), inp)
    cw = min(max(0, int(u.cache_write_tokens or 0)), inp - cached)
    reasoning = min(max(0, int(u.reasoning_tokens or 0)), out)
    return inp, cached, cw, out, reasoning


_TOKENS = st.one_of(
    st.integers(-3, 40),
    st.integers(MAX_TOKENS - 2, MAX_TOKENS + 2),
    st.none(),
    st.booleans(),
    st.floats(-2.0, 50.0, allow_nan=False),
)


@given(st.tuples(_TOKENS, _TOKENS, _TOKENS, _TOKENS, _TOKENS))
def test_clamp_gives_the_general_rules_answer_as_a_new_usage_of_ints(values) -> None:
    u = Usage(*values)
    got = u.clamp()
    assert got is not u
    no_parts = (0,) * (len(dataclasses.fields(Usage)) - 5)  # none given: none kept
    assert dataclasses.astuple(got) == (*_clamped(u), *no_parts)
    assert all(type(v) is int for v in dataclasses.astuple(got))


_TIMES = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9998, 12, 31))


@given(_TIMES, st.booleans())
def test_sqlite_time_text_is_isoformat_with_microseconds(value, whole_second) -> None:
    if whole_second:
        value = value.replace(microsecond=0)
    assert db_time_for(True, value) == value.isoformat(sep=" ", timespec="microseconds")
    aware = value.replace(tzinfo=dt.UTC)
    assert db_time_for(True, aware) == aware.isoformat(sep=" ", timespec="microseconds")
    assert db_time_for(False, value) is value


@given(_TIMES)
def test_a_calls_epoch_is_its_utc_timestamp(value) -> None:
    assert (value - EPOCH).total_seconds() == value.replace(tzinfo=dt.UTC).timestamp()
