"""Budgets: org → project → user, calendar periods, atomic reservations, status.

``spec`` validates what users type, ``periods`` computes calendar boundaries,
``enforce`` reserves and settles around every call, ``manage`` sets, lists, deletes and
reports. The module-level functions in ``llmspend`` delegate here.
"""

from __future__ import annotations

from .spec import Budget, BudgetStatus

__all__ = ["Budget", "BudgetStatus"]
