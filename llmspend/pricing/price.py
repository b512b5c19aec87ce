"""What pricing returns: :class:`Price`, :class:`PriceRef`, the fast path's ``PriceNanos``.

Also the ``at`` argument every pricing function takes (:func:`to_epoch`) and the warning
for a model without a price.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from ..errors import PricingError

__all__ = [
    "Price",
    "PriceNanos",
    "PriceRef",
    "PriceStatus",
    "to_epoch",
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


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one usage. Money is exact ``Decimal`` USD, ``None`` when unknown.

    ``input_usd`` and ``output_usd`` are exact; ``total_usd`` (== ``total_nanos`` / 1e9) is
    their sum plus any per-request fee, rounded half-even once to the nanodollar.
    """

    model: str
    provider: str | None
    input_usd: Decimal | None
    output_usd: Decimal | None
    total_usd: Decimal | None
    status: PriceStatus
    ref: PriceRef | None
    total_nanos: int | None
    note: str | None = None


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
