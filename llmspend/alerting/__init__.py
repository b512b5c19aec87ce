"""Budget alerts: decided once in the settling transaction, then delivered to listeners.

``events`` decides (exactly once per budget, period and threshold, across kernels),
``listeners`` delivers to the notebook, logging, callbacks and webhooks, ``webhooks``
posts off the hot path with retries, ``query`` lists and acknowledges.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .events import BudgetThresholdReached

if TYPE_CHECKING:
    from ..call import Call
    from ..tracker import Tracker

__all__ = ["AlertHub", "BudgetThresholdReached"]

log = logging.getLogger("llmspend.alerts")


class AlertHub:
    """Wires alert decisions and delivery into a tracker's call pipeline."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def install(self) -> None:
        self.tracker.after_record_hooks.append(self.after_record)
        self.tracker.refusal_hooks.append(self.on_refusal)

    def after_record(self, call: Call, row: dict[str, Any]) -> None:
        events = call.events
        if events:
            call.events = []
            from .listeners import dispatch

            dispatch(self.tracker, events)

    def on_refusal(self, call: Call, exc: Exception) -> None:
        from .events import decide_refusal
        from .listeners import dispatch

        budget, scope = getattr(exc, "budget", None), getattr(exc, "scope", None)
        if not budget or not scope:
            return
        with self.tracker.store.begin(write=True) as conn:
            event = decide_refusal(conn, call, scope, budget)
        if event is not None:
            dispatch(self.tracker, [event])
