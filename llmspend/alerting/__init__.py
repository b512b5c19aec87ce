"""Budget alerts: decided once in the settling transaction, then delivered to listeners.

``events`` decides (exactly once per budget, period and threshold, across kernels),
``listeners`` delivers to the notebook, logging, callbacks and webhooks, ``webhooks``
posts off the hot path with retries, ``query`` lists and acknowledges.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .events import BudgetThresholdReached, decide_refusal, decide_thresholds
from .listeners import WebhookPolicy, dispatch

if TYPE_CHECKING:
    from ..call import Call
    from ..store.fastsql import Tx
    from ..tracker import Tracker

__all__ = ["AlertHub", "BudgetThresholdReached", "WebhookPolicy"]

log = logging.getLogger("llmspend.alerts")


class AlertHub:
    """The alert stages of a tracker's call pipeline.

    :meth:`decide` runs in the record transaction after the budgets' settlement, over the
    periods it left on the call (``call.settled``); :meth:`after_record` delivers what was
    decided once the row is committed; :meth:`on_refusal` records a hard budget's refusal.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        # Alerts whose row exists, not tried again: (budget id, created, period start, ppm).
        self.fired: set[tuple[Any, ...]] = set()
        # Which webhooks this tracker's alerts go to (the gateway sets its own).
        self.webhooks = WebhookPolicy()

    def decide(self, tx: Tx, call: Call, row: dict[str, Any]) -> None:
        states = call.settled
        if states:
            call.settled = None
            cost = row.get("cost_nanos") or 0
            call.events.extend(decide_thresholds(tx, call, states, cost, self.fired))

    def after_record(self, call: Call, row: dict[str, Any]) -> None:
        events = call.events
        if events:
            call.events = []
            dispatch(self.tracker, events)

    def on_refusal(self, call: Call, exc: Exception) -> None:
        budget, scope = getattr(exc, "budget", None), getattr(exc, "scope", None)
        if not budget or not scope:
            return
        with self.tracker.store.begin(write=True) as conn:
            event = decide_refusal(conn, call, scope, budget)
        if event is not None:
            dispatch(self.tracker, [event])
