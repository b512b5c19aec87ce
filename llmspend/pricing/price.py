"""What pricing returns: :class:`Price`, :class:`PriceRef`, the fast path's ``PriceNanos``.

Also the ``at`` argument every pricing function takes (:func:`to_epoch`) and the warning
for a model without a price.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import FrozenInstanceError, dataclass
from decimal import Decimal
from typing import Any, Literal

from ..errors import PricingError

__all__ = [
    "Price",
    "PriceNanos",
    "PriceRef",
    "PriceStatus",
    "to_epoch",
    "usd_digits",
]

PriceStatus = Literal["priced", "unknown", "override"]


@dataclass(frozen=True, slots=True)
class PriceRef:
    """Where a price came from; ``str()`` is the compact form stored with each record."""

    source: str
    provider: str
    model: str
    effective: dt.date | None = None
    time_of_day: str | None = None
    discount_percent: Decimal | None = None

    def __str__(self) -> str:
        tail = f"@{self.effective.isoformat()}" if self.effective else ""
        if self.time_of_day:
            tail += f"[{self.time_of_day}]"
        if self.discount_percent is not None:
            tail += f" -{self.discount_percent}%"
        body = f"{self.provider}/{self.model}{tail}"
        source = self.source
        room = 199 - len(body)
        if len(source) > room and source.startswith("override:"):
            keep = max(room - len("override:..."), 0)
            source = "override:..." + (source[-keep:] if keep else "")
        return f"{source}:{body}"[:200]


def usd_digits(units: int, exp: int) -> Decimal:
    """``units * 10**-exp`` USD as an exact Decimal in its shortest form (trailing zeros
    stripped, never an exponent above zero), the form every price takes."""
    if not units:
        return _ZERO
    text = str(units)
    zeros = len(text) - len(text.rstrip("0"))
    if zeros >= exp:
        return Decimal(units // 10**exp)
    if zeros:
        text = text[:-zeros]
    return Decimal(f"{text}e-{exp - zeros}")


_ZERO = Decimal(0)


_FIELDS = ("model", "provider", "input_usd", "output_usd", "total_usd", "status", "ref",
           "total_nanos", "note")  # fmt: skip
_new = object.__new__
_set = object.__setattr__


class Price:
    """The price of one usage. Money is exact ``Decimal`` USD, ``None`` when unknown.

    ``input_usd`` and ``output_usd`` are exact; ``total_usd`` (== ``total_nanos`` / 1e9) is
    their sum plus any per-request fee, rounded half-even once to the nanodollar.
    Immutable, compared and hashed by its fields. The price book makes it from integers
    (:meth:`from_units`) and each Decimal is made when read, so pricing a call costs no
    Decimal work.
    """

    # _v: model, provider, status, ref, total_nanos, note, then either the input and
    # output as integers of 10**-exp USD and exp (from_units: each Decimal is made when
    # read), or input_usd, output_usd, None, total_usd. One slot set per price.
    __slots__ = ("_v",)
    _v: tuple[Any, ...]

    def __init__(
        self,
        model: str,
        provider: str | None,
        input_usd: Decimal | None,
        output_usd: Decimal | None,
        total_usd: Decimal | None,
        status: PriceStatus,
        ref: PriceRef | None,
        total_nanos: int | None,
        note: str | None = None,
    ) -> None:
        _set(self, "_v", (model, provider, status, ref, total_nanos, note, input_usd, output_usd,
                          None, total_usd))  # fmt: skip

    @classmethod
    def from_units(
        cls,
        model: str,
        provider: str | None,
        input_units: int,
        output_units: int,
        exp: int,
        status: PriceStatus,
        ref: PriceRef | None,
        total_nanos: int,
        note: str | None,
    ) -> Price:
        """A known price: input and output as integers of ``10**-exp`` USD."""
        self = _new(cls)
        _set(self, "_v", (model, provider, status, ref, total_nanos, note, input_units,
                          output_units, exp))  # fmt: skip
        return self

    model = property(lambda self: self._v[0], doc="The model as asked for.")
    provider = property(lambda self: self._v[1], doc="The provider (as asked, or found).")
    status = property(lambda self: self._v[2], doc='"priced", "override" or "unknown".')
    ref = property(lambda self: self._v[3], doc="Where the price came from.")
    total_nanos = property(lambda self: self._v[4], doc="The total in nanodollars.")
    note = property(lambda self: self._v[5], doc="How the model was resolved, if notable.")

    @property
    def input_usd(self) -> Decimal | None:
        """The input tokens' cost, exact."""
        v = self._v
        return v[6] if v[8] is None else usd_digits(v[6], v[8])

    @property
    def output_usd(self) -> Decimal | None:
        """The output tokens' cost, exact."""
        v = self._v
        return v[7] if v[8] is None else usd_digits(v[7], v[8])

    @property
    def total_usd(self) -> Decimal | None:
        """The total, rounded half-even to the nanodollar."""
        v = self._v
        return v[9] if v[8] is None else usd_digits(v[4], 9)

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Price)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        pairs = zip(_FIELDS, self._fields(), strict=True)
        return "Price(" + ", ".join(f"{name}={value!r}" for name, value in pairs) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return Price, self._fields()


#: The fast path's answer ``(nanos, status, ref)``: total nanodollars (None: unknown), the
#: price status and ``str(ref)``. A plain tuple that callers unpack: a NamedTuple measured
#: ~0.12 µs more per call (a tuple subclass is allocated and freed the slow way), a quarter
#: of :meth:`~llmspend.pricing.PriceBook.price_nanos`.
PriceNanos = tuple[int | None, PriceStatus, str | None]


def to_epoch(at: object) -> float:
    """``at`` (datetime, naive = UTC; date = midnight UTC; ISO string; None = now) in epoch s."""
    if at is None:
        return time.time()
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PricingError(f"at: cannot parse {at!r} as a date or time (ISO 8601)") from None
    if isinstance(at, dt.datetime):
        return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(at, dt.date):
        return dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC).timestamp()
    raise PricingError(f"at: expected a datetime, date or ISO string, not {type(at).__name__}")
