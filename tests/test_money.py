from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmspend.errors import ValidationError
from llmspend.money import format_usd, nanos_to_usd, parse_usd, usd_to_nanos


def test_round_trip_exact() -> None:
    assert usd_to_nanos(Decimal("0.000000123")) == 123
    assert nanos_to_usd(123) == Decimal("0.000000123")
    assert usd_to_nanos("1.5") == 1_500_000_000
    assert usd_to_nanos(2) == 2_000_000_000
    assert nanos_to_usd(None) is None


def test_sub_nanodollar_rounds_half_even() -> None:
    assert usd_to_nanos(Decimal("0.0000000005")) == 0
    assert usd_to_nanos(Decimal("0.0000000015")) == 2


@pytest.mark.parametrize("bad", [0.1, float("nan"), True, "abc", "NaN", "inf", None, [1]])
def test_floats_and_junk_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        usd_to_nanos(bad)  # type: ignore[arg-type]


def test_parse_and_format() -> None:
    assert parse_usd("$1,234.56") == Decimal("1234.56")
    assert format_usd(Decimal("1234.5")) == "$1,234.50"
    assert format_usd(Decimal("0.000123")) == "$0.000123"
    assert format_usd(None) == "n/a"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.00000002", "$0.00000002"),  # one embedding call: was "$0."
        ("0.0000004", "$0.0000004"),
        ("-0.00000002", "$-0.00000002"),
        ("0.000019", "$0.000019"),
        ("0", "$0.00"),
        ("1e999999999", "$1.000e+999999999"),  # a typo, not a billion digits or an Overflow
    ],
)
def test_tiny_and_huge_amounts_are_shown_with_their_digits(value: str, shown: str) -> None:
    assert format_usd(Decimal(value)) == shown


@given(st.integers(min_value=0, max_value=2**62))
def test_nanos_round_trip_property(n: int) -> None:
    assert usd_to_nanos(nanos_to_usd(n)) == n  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["5,5", "1,23", ",5", "5,", "1,2345", "$12,34.5"])
def test_a_comma_that_separates_no_thousands_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match=r"use '\.' for decimals"):
        parse_usd(text)  # "5,5" was $55


@pytest.mark.parametrize(
    ("text", "value"), [("1,234", "1234"), ("$1,234,567.5", "1234567.5"), ("-1,000", "-1000")]
)
def test_commas_between_thousands_are_read(text: str, value: str) -> None:
    assert parse_usd(text) == Decimal(value)


@pytest.mark.parametrize("text", ["$ 1,000", "$1,000 ", " 1,000"])
def test_spaces_around_an_amount_with_thousands_are_read_as_before(text: str) -> None:
    """``"$ 1,000"`` was $1000 (as ``"$ 1000"`` still is) until commas were checked."""
    from llmspend.budgets.spec import parse_limit

    assert parse_usd(text) == Decimal(1000)
    assert parse_limit(text) == 1000 * 10**9
