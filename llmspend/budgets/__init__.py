"""Budgets: org → project → user, calendar periods, atomic reservations, status.

``spec`` validates what users type and ``periods`` computes calendar boundaries;
``ledger`` reads and makes budgets and their periods, ``holds`` the reservations of calls
in flight and their leases (``heartbeat`` renews those while the calls run); ``guard``
reserves before a call, ``settle`` settles after it (``standing`` keeps a thread's hold
for its next call), ``thresholds`` says when a settlement can alert; ``manage`` sets,
lists, deletes and reports. The module-level functions in ``llmspend`` delegate here.
"""

from __future__ import annotations

from .spec import Budget, BudgetStatus

__all__ = ["Budget", "BudgetStatus"]
