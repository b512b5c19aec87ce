"""The quiet line under each cell that made LLM calls.

::

    llmspend · this cell: 3 calls, $0.0042 · project acme/churn: 62 % of $100/month

Calls are counted through the tracker's ``after_record_hooks`` (every recorded call,
refusals included, from any thread) between IPython's ``pre_run_cell`` and
``post_run_cell`` events. The budget shown is the most used (highest % of its limit) of
the budgets that apply to the cell's calls.

In team mode (:mod:`llmspend.teammode`) a call bound for the gateway is counted from the
gateway's answer: its cost header (a stream's cost is not in its headers: counted as
``at the gateway``), a refusal, and the budgets it brought past a threshold.

Switches: ``%spend quiet on`` / ``%spend quiet off``, ``%spend quiet --min 0.01`` (hide
lines for cells that cost less), or the environment: ``LLMSPEND_CELL_COST=off`` (default
on) and ``LLMSPEND_CELL_COST_MIN=0.01``.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ..budgets.manage import budget_status
from ..errors import LLMSpendWarning
from ..money import nanos_to_usd, usd_to_nanos
from ..teamclient import client
from ..teammode import GatewayAnswer, add_observer, remove_observer
from ..tracker import get_tracker
from .render import NO_MATH, fmt_pct, fmt_usd, status_percent

if TYPE_CHECKING:
    from ..budgets.spec import BudgetStatus
    from ..call import Call
    from ..tracker import Tracker

__all__ = ["CellCost", "CellSummary", "CostLine", "cell_cost"]

log = logging.getLogger("llmspend")
_OFF = ("0", "off", "false", "no", "quiet")


@dataclass
class CellSummary:
    """What one cell's calls cost."""

    execution_count: int | None = None
    calls: int = 0
    refused: int = 0
    errors: int = 0
    cost_nanos: int = 0
    unpriced: int = 0
    models: Counter[str] = field(default_factory=Counter)
    who: set[tuple[str, str, str]] = field(default_factory=set)
    at_gateway: int = 0  # gateway calls whose cost the headers did not say (streams)
    gateway_warnings: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    def add(self, row: dict[str, Any]) -> None:
        self.calls += 1
        status = row.get("status")
        if status == "refused":
            self.refused += 1
        elif status == "error":
            self.errors += 1
        cost = row.get("cost_nanos")
        if cost is None:
            if row.get("price_status") == "unknown":
                self.unpriced += 1
        else:
            self.cost_nanos += int(cost)
        self.models[str(row.get("model"))] += 1
        self.who.add((row["org_name"], row["project_name"], row["user_name"]))

    def add_gateway(self, answer: GatewayAnswer) -> None:
        """One call the gateway recorded, from its answer's headers (team mode)."""
        self.calls += 1
        if answer.refused:
            self.refused += 1
        elif answer.status >= 400:
            self.errors += 1
        elif answer.cost_usd is not None:
            self.cost_nanos += usd_to_nanos(answer.cost_usd)
        else:
            self.at_gateway += 1
        if answer.price_status == "unknown":
            self.unpriced += 1
        self.models[f"{answer.api or 'a call'} via the gateway"] += 1
        for budget in answer.thresholds:
            if budget not in self.gateway_warnings:
                self.gateway_warnings.append(budget)

    def text(self) -> str:
        """``3 calls, $0.0042`` (with refusals, errors and unpriced calls when any)."""
        out = f"{self.calls} call{'s' if self.calls != 1 else ''}"
        extra = [
            f"{n} {what}"
            for n, what in (
                (self.refused, "refused"),
                (self.errors, "failed"),
                (self.unpriced, "unpriced"),
                (self.at_gateway, "costed at the gateway"),
            )
            if n
        ]
        if extra:
            out += f" ({', '.join(extra)})"
        return f"{out}, {_money(self.cost_usd)}"


def _money(value: Decimal) -> str:
    """Cell-sized money: 4 significant decimals below a dollar (``$0.0042``)."""
    if value == 0:
        return "$0"
    if abs(value) < 1:
        return fmt_usd(Decimal(f"{value:.2g}") if abs(value) < Decimal("0.0001") else value)
    return fmt_usd(value)


def _limit_text(status: BudgetStatus) -> str:
    limit = status.limit_usd
    text = f"${limit:,.0f}" if limit == limit.to_integral_value() else fmt_usd(limit)
    return text if status.period == "total" else f"{text}/{status.period}"


def applies(status: BudgetStatus, who: set[tuple[str, str, str]]) -> bool:
    """Does the budget ``status`` charge any of the (org, project, user) in ``who``?"""
    parts = status.budget.split("/")
    for org, project, user in who:
        if status.scope == "org" and parts == [org]:
            return True
        if status.scope == "project" and parts == [org, project]:
            return True
        if status.scope == "user" and parts in ([org, user], [org, project, user]):
            return True
    return False


@dataclass
class CostLine:
    """The per-cell line, as muted text/HTML."""

    cell: CellSummary
    budget: BudgetStatus | None = None

    def text(self) -> str:
        line = f"llmspend · this cell: {self.cell.text()}"
        if self.budget is not None:
            b = self.budget
            line += f" · {b.budget}: {fmt_pct(status_percent(b))} of {_limit_text(b)}"
            if b.state != "ok":
                line += f" ({b.state})"
        if self.cell.gateway_warnings:
            line += f" · threshold reached at the gateway: {', '.join(self.cell.gateway_warnings)}"
        return line

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        colour = "var(--jp-ui-font-color2, #757575)"
        if self.budget is not None and self.budget.state == "exceeded":
            colour = "#b00020"
        elif self.cell.gateway_warnings or (
            self.budget is not None and self.budget.state == "warning"
        ):
            colour = "#b26a00"
        return (
            f'<div class="llmspend-cell-cost {NO_MATH}" style="font-size:11px;color:{colour};'
            f'font-family:var(--jp-ui-font-family, sans-serif)">{html.escape(self.text())}</div>'
        )


def _env_enabled() -> bool:
    return os.environ.get("LLMSPEND_CELL_COST", "on").strip().lower() not in _OFF


def _env_min() -> Decimal:
    """``LLMSPEND_CELL_COST_MIN``: 0 to $1,000,000,000; anything else is ignored, with a
    warning naming it."""
    text = os.environ.get("LLMSPEND_CELL_COST_MIN", "").strip()
    if not text:
        return Decimal(0)
    try:
        value: Decimal | None = Decimal(text.removeprefix("$"))
    except InvalidOperation:
        value = None
    # adjusted() first: arithmetic on a huge exponent (1e999999999) overflows
    if value is None or not value.is_finite() or value.adjusted() > 9 or not 0 <= value <= 10**9:
        warnings.warn(
            "llmspend: LLMSPEND_CELL_COST_MIN must be an amount of USD from 0 to "
            f"$1,000,000,000, got {text!r}; ignored",
            LLMSpendWarning,
            stacklevel=2,
        )
        return Decimal(0)
    return value


class CellCost:
    """Counts the calls each cell makes and shows the line after it."""

    def __init__(self) -> None:
        self.enabled = _env_enabled()
        self.min_usd = _env_min()
        self.show_budget = True
        self.current = CellSummary()
        self.previous: CellSummary | None = None
        self._lock = threading.Lock()
        self._trackers: list[Any] = []

    # -- wiring ---------------------------------------------------------------------------
    def attach(self, tracker: Tracker) -> None:
        """Count ``tracker``'s calls (idempotent)."""
        if self.on_record not in tracker.after_record_hooks:
            tracker.after_record_hooks.append(self.on_record)
        add_observer(self.on_gateway)

    def detach(self, tracker: Tracker) -> None:
        while self.on_record in tracker.after_record_hooks:
            tracker.after_record_hooks.remove(self.on_record)
        remove_observer(self.on_gateway)

    def on_record(self, call: Call, row: dict[str, Any]) -> None:
        with self._lock:
            self.current.add(row)

    def on_gateway(self, answer: GatewayAnswer) -> None:
        with self._lock:
            self.current.add_gateway(answer)

    # -- IPython events ---------------------------------------------------------------------
    def pre_run_cell(self, info: Any = None) -> None:
        with self._lock:
            self.current = CellSummary()

    def post_run_cell(self, result: Any = None) -> None:
        """Close the cell's tally and show the line when calls were made. Never raises."""
        try:
            with self._lock:
                cell, self.current = self.current, CellSummary()
            cell.execution_count = getattr(result, "execution_count", None)
            silent = bool(getattr(getattr(result, "info", None), "silent", False))
            if silent:
                with self._lock:  # a silent run (a frontend's own code) is not a cell
                    self.current = cell
                return
            self.previous = cell
            line = self.line(cell)
            if line is not None:
                from IPython.display import display

                display(line)
        except Exception:
            log.exception("llmspend could not show the cell's cost")

    # -- what to show -------------------------------------------------------------------------
    def line(self, cell: CellSummary) -> CostLine | None:
        """The line for ``cell``, or ``None`` when there is nothing (or nothing wanted)."""
        if not self.enabled or cell.calls == 0:
            return None
        if self.min_usd and cell.cost_usd < self.min_usd and not cell.refused:
            return None
        return CostLine(cell, self.top_budget(cell) if self.show_budget else None)

    def top_budget(self, cell: CellSummary) -> BudgetStatus | None:
        """The most used budget (highest % of its limit) that applies to the cell's calls;
        ``None`` when there is none or the store cannot say within its lock wait."""
        if not cell.who:
            return None
        try:
            statuses = [s for s in _statuses() if applies(s, cell.who)]
        except Exception:
            log.debug("llmspend: budget status unavailable", exc_info=True)
            return None
        if not statuses:
            return None
        return max(statuses, key=status_percent)

    def describe(self) -> str:
        """``In [7]: 3 calls, $0.0042 (gpt-4o-mini × 3)``, for ``%spend cell``."""
        with self._lock:
            current = self.current
        cell, label = (current, "this cell") if current.calls else (self.previous, None)
        if cell is None:
            return "llmspend: no cell has run since the extension was loaded"
        if label is None:
            label = (
                f"In [{cell.execution_count}]"
                if cell.execution_count is not None
                else "the previous cell"
            )
        if not cell.calls:
            return f"llmspend · {label}: no LLM calls"
        models = ", ".join(f"{m} × {n}" for m, n in cell.models.most_common())
        return f"llmspend · {label}: {cell.text()} ({models})"


def _statuses() -> list[BudgetStatus]:
    """``llmspend.budget_status()``, waiting at most the store's lock wait
    (``LLMSPEND_LOCK_WAIT``) for SQLite's lock: a busy store raises at once, and the
    cell's line goes without its budget part rather than freezing the notebook."""
    team = client()
    if team is not None:
        return team.budget_status()
    tracker = get_tracker()
    tracker.guard.release_standing()  # (as llmspend.budget_status(): not spending)
    return budget_status(tracker.store, wait=tracker.store.lock_wait)


#: The one instance the extension wires into IPython.
cell_cost = CellCost()
