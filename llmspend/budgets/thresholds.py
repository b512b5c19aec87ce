"""A budget's alert thresholds, in integer parts per million of its limit.

The guard asks :func:`reaches_a_threshold` whether settling a call on a period can alert at
all (most settlements cannot: nothing else is built for them); a settlement that can
leaves :class:`PeriodState` s on the call, from which the alert stage decides which
thresholds fired (:mod:`llmspend.alerting.events`).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple

__all__ = ["PPM", "PeriodState", "reaches_a_threshold", "thresholds_ppm"]

PPM = 1_000_000


@lru_cache(maxsize=1024)
def thresholds_ppm(thresholds_json: str, mode: str) -> tuple[int, ...]:
    """A budget's thresholds (its JSON list of fractions) in ppm, ascending; a soft budget
    always says when it passes 100 %."""
    values = {int(Decimal(t) * PPM) for t in json.loads(thresholds_json or "[]")}
    if mode == "soft":
        values.add(PPM)
    return tuple(sorted(values))


def reaches_a_threshold(spent_nanos: int, limit_nanos: int, budget: Any) -> bool:
    """Whether a period with this spend is at or past the budget's first threshold (only
    then can settling a call there alert)."""
    ppms = thresholds_ppm(budget.thresholds, budget.mode)
    return bool(ppms) and limit_nanos > 0 and spent_nanos * PPM >= ppms[0] * limit_nanos


class PeriodState(NamedTuple):
    """A budget period just after a call's cost was added to it."""

    period_id: int
    spent_nanos: int
    limit_nanos: int
    period_start: dt.datetime
    budget: Any  # the budget's row: id, name, scope, mode, thresholds, webhook_url
