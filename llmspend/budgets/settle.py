"""Settlement: after a call, its reservation becomes its actual cost.

In the transaction that writes the call's row, the hold is deleted, what it still holds
is given back and the cost is added to every period it charged (``SETTLE``; on PostgreSQL
all of it one statement, ``SETTLE_PG``). On SQLite a
thread's hold may instead stay standing for its next call (:mod:`.standing`): the cost is
added and the hold kept, if every hard budget still has room for it (``KEEP``). The
periods that reach a threshold are left on the call (``call.settled``) for the alert stage
that runs next in the same transaction; settlement itself decides no alert.

The periods charged are those the hold row names when it settles: a budget whose period
changed while the call was out has added its new period to it (``holds.carry_holds``).
If one of its periods was deleted meanwhile (its budget deleted, perhaps set again), the
cost also goes to every budget's existing period that contains the call and was not
charged, so that a period's spent stays the cost of the calls recorded in it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..store.fastsql import Tx, db_time, db_time_for
from ..timeutil import utcnow
from .heartbeat import HEARTBEAT
from .holds import (
    KEEP,
    KEEP_KNOWN,
    KEPT,
    SETTLE,
    SETTLE_PG,
    UNHOLD,
    Held,
    Keeping,
    Mirror,
    give_back,
)
from .ledger import candidate_budgets, current_periods, resolve, targets_of
from .standing import StandingHolds
from .thresholds import PeriodState, reaches_a_threshold

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["Settlement"]


class Settlement:
    """The settlement stage of the record transaction."""

    def __init__(self, standing: StandingHolds) -> None:
        self.standing = standing

    def settle(self, tx: Tx, call: Call, row: dict[str, Any]) -> None:
        held: Held | None = call.reservation
        if held is None or not held.periods:
            return
        call.reservation = None
        refused = row.get("status") == "refused"
        cost = 0 if refused else row.get("cost_nanos") or 0
        now = utcnow()
        settled = None
        if held.version is not None and not refused:
            settled = self._settle_keeping(tx, call, held, cost, now)
        if settled is None:
            settled = self._settle_releasing(tx, held, cost, now)
            # a period it held is gone (deleted): charge the budgets that apply now. Not by
            # count: one gone and one carried in (a budget changed) would hide it
            if not refused and not {row[0] for row in settled}.issuperset(held.periods):
                settled += self._charge_budgets_set_since(tx, call, held, cost, settled)
        if refused:
            return
        states: list[PeriodState] = []
        for pid, spent, limit, *_ in settled:
            t = held.targets.get(pid)
            if t is None:  # a period it was not made on: a budget changed since it began
                states = self._states_now(tx, call, settled)
                break
            if reaches_a_threshold(spent, limit, t.budget):
                states.append(PeriodState(pid, spent, limit, t.period_start, t.budget))
        if states:  # for the alert stage, later in this transaction
            states.sort(key=lambda st: st.budget.id)
            call.settled = states

    @staticmethod
    def _states_now(tx: Tx, call: Call, settled: list[Any]) -> list[PeriodState]:
        """The settled periods that reach a threshold, among those that are their
        budget's period of the call as the budget is defined now (a period of its old
        definition alerts no more)."""
        targets = targets_of(tx, [row[0] for row in settled], call.ts)
        return [
            PeriodState(pid, spent, limit, t.period_start, t.budget)
            for pid, spent, limit, *_ in settled
            if (t := targets.get(pid)) is not None and reaches_a_threshold(spent, limit, t.budget)
        ]

    def _settle_keeping(
        self, tx: Tx, call: Call, held: Held, cost: int, now: dt.datetime
    ) -> list[Any] | None:
        """Settle and keep the hold standing for the thread's next call, if it may stand
        and every hard budget has room for it after this call's cost. ``None`` (nothing
        changed) when the hold is gone or was changed since: the usual settlement runs."""
        key = (call.org, call.project, call.user)
        if held.amount <= 0 or held.until is None or now >= held.until:
            return None
        if tx.memo is not held.memo:  # settled on another connection than it was made on
            return None
        if not self.standing.vacant(key):  # another task of this thread keeps one
            return None
        if held.keeping is None:
            ids = tuple(held.periods)
            hard = frozenset(p for p, t in held.targets.items() if t.budget.mode == "hard")
            held.keeping = Keeping(
                KEEP.get(ids).text,
                KEEP_KNOWN.get(ids).text,
                KEPT.get(ids).text,
                ",".join(map(str, held.periods)),
                hard,
            )
        keep_sql, known_sql, read_sql, period_ids, hard = held.keeping
        params = {"cost": cost, "now": db_time_for(True, now), "token": held.token,
                  "period_ids": period_ids}  # fmt: skip
        mirror, held.mirror = held.mirror, None
        version = tx.data_version()
        # SQLite's statements take plain tuples and give them back, in its own style.
        if mirror is not None and tx.follows == mirror.serial and version == held.version:
            # Nothing was written since the settlement that left ``mirror``: not by another
            # connection (data_version), not by this one (its last transaction was that
            # one). So the hold row is still there, and the periods are as it read them
            # back: neither needs reading again.
            changed = tx.execute(known_sql, params).rowcount
            if not changed:
                return None
            if changed == len(held.periods):
                settled = [(p, spent + cost, lim, res) for p, spent, lim, res in mirror.rows]
            else:
                settled = tx.execute(read_sql).fetchall()
        else:
            settled = tx.execute(keep_sql, params).fetchall()
            if not settled:
                return None
        room = len(settled) == len(held.periods) and all(
            spent + reserved <= limit for pid, spent, limit, reserved in settled if pid in hard
        )
        if room:
            self.standing.keep(key, held)
            if version == held.version and tx.serial is not None:
                held.mirror = Mirror(tx.serial, settled)
        else:
            give_back(tx, [held])
        return settled

    @staticmethod
    def _charge_budgets_set_since(
        tx: Tx, call: Call, held: Held, cost: int, settled: list[Any]
    ) -> list[Any]:
        """A period the call was reserved on was deleted while it was out (its budget
        deleted, perhaps set again): charge its cost to the current period of every budget
        that applies now, began before the call and was not charged, so a budget set again
        counts the call as it counts those recorded before it was set. ``[]`` otherwise."""
        charged = {row[0] for row in settled}
        if charged.issuperset(held.periods):
            return []
        rows = candidate_budgets(tx, call.org, call.project, call.user)
        applicable, _ = resolve(rows, call.project, call.user)  # (defaults: made later)
        applicable.sort(key=lambda b: b.id)
        extra = []
        params = {"held": 0, "cost": cost, "now": db_time(tx, utcnow())}
        for _, period in current_periods(tx, applicable, call.ts, create=False):
            if period.id not in charged:  # (a period made later counts the call's row)
                extra += tx.run(SETTLE.get((period.id,)), params).all()
        return extra

    @staticmethod
    def _settle_releasing(tx: Tx, held: Held, cost: int, now: dt.datetime) -> list[Any]:
        """Delete the hold, give back what it still holds and add the cost: the periods'
        rows after it."""
        HEARTBEAT.forget([held])
        stamp = db_time(tx, now)
        if not tx.sqlite:  # one statement (see SETTLE_PG)
            params = {"token": held.token, "cost": cost, "now": stamp}
            return tx.run(SETTLE_PG.get(tuple(held.periods)), params).all()
        still = tx.run(UNHOLD, {"token": held.token}).first()
        params = {"held": 0, "cost": cost, "now": stamp}
        if still is None:  # the lease expired and the hold was given back: charge the cost
            return tx.run(SETTLE.get(tuple(held.periods)), params).all()
        # The periods the hold row names now: not one deleted since (its id may be reused);
        # also the new period of a budget changed since (``carry_holds``).
        named = sorted({int(i) for i in still.period_ids.split(",")})
        params["held"] = still.amount_nanos
        return tx.run(SETTLE.get(tuple(named)), params).all()
