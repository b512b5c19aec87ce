"""Settlement: after a call, its reservation becomes its actual cost.

In the transaction that writes the call's row, the hold is deleted, what it still holds
is given back and the cost is added to every period it charged (``SETTLE``; on PostgreSQL
all of it one statement, ``SETTLE_PG``). On SQLite a
thread's hold may instead stay standing for its next call (:mod:`.standing`): the cost is
added and the hold kept, if every hard budget still has room for it (``KEEP``). The
periods that reach a threshold are left on the call (``call.settled``) for the alert stage
that runs next in the same transaction; settlement itself decides no alert.
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
        if refused:
            return
        states = []
        for pid, spent, limit, *_ in settled:
            t = held.targets.get(pid)
            if t is not None and reaches_a_threshold(spent, limit, t.budget):
                states.append(PeriodState(pid, spent, limit, t.period_start, t.budget))
        if states:  # for the alert stage, later in this transaction
            states.sort(key=lambda st: st.budget.id)
            call.settled = states

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
    def _settle_releasing(tx: Tx, held: Held, cost: int, now: dt.datetime) -> list[Any]:
        """Delete the hold, give back what it still holds and add the cost: the periods'
        rows after it."""
        HEARTBEAT.forget([held])
        stamp = db_time(tx, now)
        if not tx.sqlite:  # one statement (see SETTLE_PG)
            params = {"token": held.token, "cost": cost, "now": stamp}
            return tx.run(SETTLE_PG.get(tuple(held.periods)), params).all()
        still = tx.run(UNHOLD, {"token": held.token}).first()
        # What is still held, and on which periods: nothing if the lease expired and the
        # hold was given back; not on a period deleted since (its id may be reused).
        named = set() if still is None else {int(i) for i in still.period_ids.split(",")}
        amount = 0 if still is None else still.amount_nanos
        # One UPDATE per amount released (SQLite: one writer at a time, no lock order).
        groups: dict[int, list[int]] = {}
        for pid in held.periods:  # ascending
            groups.setdefault(amount if pid in named else 0, []).append(pid)
        settled = []
        for release, ids in sorted(groups.items(), key=lambda kv: kv[1][0]):
            params = {"held": release, "cost": cost, "now": stamp}
            settled += tx.run(SETTLE.get(tuple(ids)), params).all()
        return settled
