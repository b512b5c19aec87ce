"""Exact money: integers of nanodollars in the store, ``Decimal`` USD at the API.

Every conversion between the two happens here. Floats are refused: a binary float cannot
say $0.10 exactly, and sums of them drift.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import overload

from .errors import ValidationError

__all__ = [
    "NANOS_PER_USD",
    "format_usd",
    "nanos_to_usd",
    "parse_usd",
    "usd_to_nanos",
    "without_thousands",
]

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(value: Decimal | int | str) -> int:
    """Convert USD to integer nanodollars, rounding half-even below a nanodollar."""
    if isinstance(value, (bool, float)):
        raise ValidationError(f"money must be a Decimal, int or str, not {type(value).__name__}")
    if isinstance(value, int):
        return value * NANOS_PER_USD
    dec = value if isinstance(value, Decimal) else parse_usd(value)
    if not dec.is_finite():
        raise ValidationError(f"money must be finite, got {value!r}")
    return int((dec * NANOS_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


@overload
def nanos_to_usd(nanos: int) -> Decimal: ...
@overload
def nanos_to_usd(nanos: None) -> None: ...
def nanos_to_usd(nanos: int | None) -> Decimal | None:
    """Convert integer nanodollars to an exact ``Decimal`` USD (``None`` stays ``None``)."""
    if nanos is None:
        return None
    if not nanos:
        return Decimal(0)
    value = Decimal(int(nanos)).scaleb(-9).normalize()
    # normalize() writes 100 as 1E+2; keep plain notation for whole amounts
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?")


def without_thousands(text: str, given: object = None) -> str:
    """``text`` without the commas between its thousands (``"1,234.5"`` → ``"1234.5"``);
    any other comma is a ValidationError: ``"5,5"`` is not $55. ``given``: what the user
    typed, for the message."""
    if "," not in text:
        return text
    text = text.strip()  # "$ 1,000" once its "$" is taken off, as Decimal reads " 1000"
    if not _THOUSANDS.fullmatch(text):
        raise ValidationError(
            f"not an amount of money: {text if given is None else given!r} (use '.' for "
            "decimals; ',' only between thousands, as in 1,234.56)"
        )
    return text.replace(",", "")


def parse_usd(text: str | Decimal | int) -> Decimal:
    """Parse a USD amount such as ``"12.5"``, ``"$1,234.56"`` or ``Decimal("3")``."""
    if isinstance(text, (bool, float)):
        raise ValidationError(f"money must be a Decimal, int or str, not {type(text).__name__}")
    if isinstance(text, Decimal):
        dec = text
    elif isinstance(text, int):
        dec = Decimal(text)
    elif isinstance(text, str):
        cleaned = text.strip().replace("_", "")
        if cleaned.startswith("$"):
            cleaned = cleaned[1:]
        cleaned = without_thousands(cleaned, text)
        try:
            dec = Decimal(cleaned)
        except InvalidOperation:
            raise ValidationError(f"not an amount of money: {text!r}") from None
    else:
        raise ValidationError(f"money must be a Decimal, int or str, not {type(text).__name__}")
    if not dec.is_finite():
        raise ValidationError(f"money must be finite, got {text!r}")
    return dec


_CENT = Decimal("0.01")
_MICRO = Decimal("0.000001")
_HUGE = Decimal("1e15")  # past any spend: an amount typed by mistake, not digits to print


def format_usd(value: Decimal | None, places: int = 2) -> str:
    """Format money for people: ``$1,234.56``; small non-zero amounts keep their digits
    (``$0.000019``, under a millionth two significant ones: ``$0.00000002``)."""
    if value is None:
        return "n/a"
    size = value.copy_abs()  # not abs(): the context would overflow on a huge exponent
    if size >= _HUGE:
        return f"${value:.3e}"
    if value and size < _CENT and places == 2:
        if size < _MICRO:
            return f"${Decimal(format(value, '.2g')):f}"
        return f"${value:,.6f}".rstrip("0")
    return f"${value:,.{places}f}"
