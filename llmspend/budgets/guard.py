"""The guard: before a call leaves, reserve its worst case on every budget that applies.

Every budget that applies to the call's (org, project, user) is found with its current
period (one read), and the call's worst-case cost is reserved on all of them at once: a
conditional ``UPDATE ... WHERE spent + reserved + x <= limit`` on the hard budgets and one
hold row naming the periods, with a lease (:mod:`.holds`) — on SQLite two statements in one
write transaction (its writers are serialized), on PostgreSQL one statement that locks the
periods in ascending id order (the lock order every transaction keeps), sent right after
the lookup on the same connection. If any budget refuses, nothing is held.

When something must be made first — a default turned into the child's own budget, the
first period of a new day or month (roll-over is lazy: no background job) — or when a
reservation is refused, a preparing transaction re-reads everything under the write
lock, makes what is missing and reclaims the holds of expired leases (a kernel that died
mid-call), then the reservation is tried once more. Still refused: ``BudgetExceeded`` is
raised before any byte is sent — unless the budgets would have room but for other
processes' holds: the call then waits for those (up to ``REFUSAL_WAIT_SECONDS``) first.

With a thread's own SQLite connection, the budgets found are remembered until another
connection commits (``PRAGMA data_version``) or a period ends, and a thread's last hold
may stand for its next call (:mod:`.standing`): a kernel alone on its store then sends
nothing before a request. After the call, :mod:`.settle` settles the reservation in the
transaction that writes the call's row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.exc import DBAPIError

from .. import _process
from ..call import DEFAULT_CONTEXT_WINDOW, DEFAULT_OUTPUT_CAP, output_cap_for
from ..errors import BudgetExceeded, ConfigError, StoreError, StoreUnavailable
from ..money import nanos_to_usd
from ..store.fastsql import Tx, db_time, db_time_for, py_time
from ..store.urls import reason as driver_reason
from ..timeutil import utcnow
from ..usage import recorded_tokens
from .heartbeat import HEARTBEAT, lease_param
from .holds import (
    BUDGET_VERSION,
    HOLD,
    OTHERS_HOLDS,
    REFUSAL,
    RESERVE_PG,
    RESERVE_PG_CHECKED,
    RESERVE_SQLITE,
    Held,
    give_back,
    lease_seconds,
    reclaim_expired,
)
from .ledger import (
    LOOKUP,
    Target,
    candidate_budgets,
    current_periods,
    known_targets,
    materialize,
    resolve,
)
from .periods import current_bounds
from .standing import IDLE_SECONDS, StandingHolds

if TYPE_CHECKING:
    from ..call import Call
    from ..tracker import Tracker

__all__ = ["REFUSAL_WAIT_SECONDS", "REMEMBERED_IDENTITIES", "BudgetGuard", "Found", "Remembered"]

log = logging.getLogger("llmspend")


class Found(NamedTuple):
    """A lookup's answer for an (org, project, user)."""

    targets: list[Target] | None  # the budgets that apply, in id order (None: incomplete)
    complete: bool  # false when a default's child budget or a period must be made first
    hard: bool  # whether any candidate budget is hard


class Remembered(NamedTuple):
    """A complete lookup kept on a thread's SQLite connection (its ``memo``), or on
    PostgreSQL by the guard."""

    version: int | str | None  # SQLite: the connection's ``PRAGMA data_version`` when it
    # was read; PostgreSQL: the budgets' version stamp (``holds.BUDGET_VERSION``) read first
    until: dt.datetime | None  # the earliest end of the periods found
    found: Found


def _until(targets: list[Target], now: dt.datetime) -> dt.datetime | None:
    """The earliest end of the targets' current periods (None: none ends)."""
    ends = [
        current_bounds(b.period, b.timezone, now, week_start=b.week_start)[1]
        for b in (t.budget for t in targets)
    ]
    return min((e for e in ends if e is not None), default=None)


#: PostgreSQL: how many identities' budgets the guard remembers (a gateway serves many).
REMEMBERED_IDENTITIES = 8192

#: How long a call refused only because of other processes' holds waits for them to be
#: settled or given back (a standing hold is given back after IDLE_SECONDS idle).
REFUSAL_WAIT_SECONDS = IDLE_SECONDS + 1.0


class BudgetGuard:
    """The budget stage of the call pipeline, wired into a tracker."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self._host = socket.gethostname()
        self._owner = (-1, "")
        # Whether a hard budget applied to (org, project, user) at the last lookup.
        self._hard_seen: dict[tuple[str, str, str], bool] = {}
        self.standing = StandingHolds(self._give_back)
        # PostgreSQL: complete lookups per (org, project, user), with the budgets' version
        self._remembered: dict[tuple[str, str, str], Remembered] = {}

    # -- before the call -----------------------------------------------------------------
    @property
    def owner(self) -> str:
        """``host:pid`` of this process (a forked child's own), naming its holds."""
        owner = self._owner
        if owner[0] != _process.pid:
            owner = self._owner = (_process.pid, f"{self._host}:{_process.pid}"[:200])
        return owner[1]

    def before_call(self, call: Call) -> None:
        try:
            self._before_call(call)
        except (StoreError, DBAPIError) as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            self._store_down(call, exc)

    def _store_down(self, call: Call, exc: Exception) -> None:
        """The store cannot be reached before a call: fail closed or open, by policy."""
        policy = os.environ.get("LLMSPEND_STORE_DOWN", "auto").lower()
        if policy not in ("auto", "closed", "open"):
            raise ConfigError(
                f"LLMSPEND_STORE_DOWN must be auto, closed or open, got {policy!r}"
            ) from None
        key = (call.org, call.project, call.user)
        hard = self._hard_seen.get(key, True)  # never checked in this process: assume so
        if policy == "open" or (policy == "auto" and not hard):
            log.warning("llmspend: store unavailable, call not checked against budgets: %s", exc)
            return
        reason = driver_reason(exc)[:200]
        refusal = StoreUnavailable(
            f"the llmspend store is unavailable ({reason}), so hard budgets cannot be checked "
            f"for {call.org}/{call.project}/{call.user}; the call was not sent "
            "(LLMSPEND_STORE_DOWN=open lets calls through unchecked)"
        )
        with self.tracker.journal_only(exc):  # not waited for again: straight to the spool
            self.tracker.refused(call, refusal)
        raise refusal from None

    def _lookup(self, call: Call, now: dt.datetime) -> Found:
        """``(targets, complete, any hard budget)`` for the call (see _known_targets).

        With a thread's own SQLite connection, the answer is remembered until another
        connection commits (``PRAGMA data_version``) or a period ends: a kernel alone on
        its store then reads nothing here. Anything this connection writes that could
        change the answer goes through :meth:`_prepare`, which forgets it.
        """
        key = (call.org, call.project, call.user)
        with self.tracker.store.tx() as tx:
            version = None
            if tx.memo is not None:
                version = tx.data_version()
                hit = tx.memo.get(key)
                if (
                    hit is not None
                    and hit.version == version
                    and (hit.until is None or now < hit.until)
                ):
                    return hit.found
            return self._read(tx, key, now, version)

    def _lookup_reserving(self, call: Call, now: dt.datetime) -> tuple[Found, bool]:
        """PostgreSQL: the lookup and, when every budget that applies has its period, the
        reservation, on one connection in autocommit: two statements, each a round trip
        and atomic on its own (as the lookup and the reservation were two transactions).
        Returns the lookup and whether a reservation was tried; ``call.reservation`` is
        set if it was made, ``call.estimate_nanos`` if the budgets called for one.

        A complete lookup is remembered with the budgets' version read before it
        (migration 0016). Until one of its periods ends, the next priced call of the
        identity sends the reservation alone, which goes ahead only while that version is
        still the current one; else the budgets are looked up again, as here."""
        key = (call.org, call.project, call.user)
        with self.tracker.store.tx() as tx:
            hit = self._remembered.get(key)
            if hit is not None and (hit.until is None or now < hit.until):
                answer = self._reserve_checked(tx, call, key, hit, now)
                if answer is not None:
                    return answer
            found = self._read_remembering(tx, key, now)
            if not found.complete or not found.targets:
                return found, False
            estimate = call.estimate_nanos = self.estimate(call)
            if estimate is None:  # unpriced: the policy decides, in the full path
                return found, False
            held = self._hold(tx, *self._hold_plan(found.targets, estimate, now))
        self._held(call, held)
        return found, True

    def _reserve_checked(
        self, tx: Tx, call: Call, key: tuple[str, str, str], hit: Remembered, now: dt.datetime
    ) -> tuple[Found, bool] | None:
        """PostgreSQL: the reservation alone, on remembered budgets, as
        :meth:`_lookup_reserving` answers; ``None``, with nothing changed, if the budgets
        must be looked up: the budgets' version has moved since (or its table is gone: a
        store taken back before migration 0016), or the call is unpriced (the policy
        decides on budgets read now). A refused reservation forgets them too (a period
        row deleted or replaced is found again)."""
        found = hit.found
        estimate = call.estimate_nanos = self.estimate(call)
        if estimate is None:
            return None
        held, hold, _, _ = self._hold_plan(found.targets or [], estimate, now)
        hold["version"] = hit.version
        try:
            row = tx.run(RESERVE_PG_CHECKED.get(tuple(held.periods)), hold).one()
        except self.tracker.store.engine.dialect.loaded_dbapi.ProgrammingError:
            self._remembered.clear()  # autocommit: the failed statement changed nothing
            return None
        if row.version != hit.version:
            self._remembered.pop(key, None)
            return None
        if not row.fits:
            self._remembered.pop(key, None)
        self._held(call, held if row.fits else None)
        return found, True

    def _read_remembering(self, tx: Tx, key: tuple[str, str, str], now: dt.datetime) -> Found:
        """PostgreSQL: the budgets' version, then the lookup; a complete answer with
        budgets is remembered with that version (read first: a change committed between
        the two leaves an older version with newer budgets, looked up again next time)."""
        try:
            version = tx.run(BUDGET_VERSION).first()
        except self.tracker.store.engine.dialect.loaded_dbapi.ProgrammingError:  # before 0016
            version = None
        found = self._read(tx, key, now, None)
        if version is not None and found.complete and found.targets:
            remembered = self._remembered
            if len(remembered) >= REMEMBERED_IDENTITIES:  # the oldest entry goes
                with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                    del remembered[next(iter(remembered))]  # (another thread may be at it)
            remembered[key] = Remembered(version[0], _until(found.targets, now), found)
        return found

    def _held(self, call: Call, held: Held | None) -> None:
        if held is not None:
            HEARTBEAT.track(self.tracker.store, held, held.lease)  # renewed while it lives
            call.reservation = held

    def _read(self, tx: Tx, key: tuple[str, str, str], now: dt.datetime, version: Any) -> Found:
        """The lookup query on ``tx``, its answer remembered with ``version`` when complete."""
        org, project, user = key
        params = {"org": org, "project": project, "user": user, "now": db_time(tx, now)}
        rows = tx.run(LOOKUP, params).all()
        targets, complete = known_targets(rows, project, user, now)
        found = Found(targets, complete, any(r.mode == "hard" for r in rows))
        memo = tx.memo
        if memo is not None and complete:
            if len(memo) > 1024:
                memo.clear()
            memo[key] = Remembered(version, _until(targets or [], now), found)
        return found

    def _before_call(self, call: Call) -> None:
        now = call.ts
        key = (call.org, call.project, call.user)
        estimate: int | None = None
        standing = self.standing.take(key)
        memo = self.tracker.store.thread_memo()
        hit = None if memo is None else memo.get(key)
        if hit is not None and hit.found.targets and (hit.until is None or now < hit.until):
            # Budgets applied at the last look: use the hold the thread's last call kept,
            # or check and reserve in one transaction.
            estimate = call.estimate_nanos = self.estimate(call)
            if standing is not None and self._stands(standing, hit, estimate, now):
                call.reservation = standing
                return
            if estimate is not None and self._reserve_remembered(
                call, key, hit, estimate, now, standing
            ):
                return
        if standing is not None:
            self._give_back([standing])
        tried = False
        if self.tracker.store.is_sqlite:
            targets, complete, hard = self._lookup(call, now)
        else:
            (targets, complete, hard), tried = self._lookup_reserving(call, now)
            estimate = call.estimate_nanos
        self._hard_seen[key] = hard
        if call.reservation is not None or (complete and not targets):
            return
        if estimate is None and not tried:
            estimate = call.estimate_nanos = self.estimate(call)
        prepared = not complete or tried  # refused at the first try: prepare, try again
        if prepared:
            targets = self._prepare(call, now)
        waited_until = None
        while targets:
            refusal = self._unpriced(targets) if estimate is None else None
            if refusal is None:
                call.reservation = self._reserve(targets, estimate or 0, now)
                if call.reservation is not None:
                    return
                if not prepared:  # budgets changed, or expired leases may be in the way
                    prepared = True
                    targets = self._prepare(call, now)
                    continue
                if waited_until is None:
                    waited_until = time.monotonic() + REFUSAL_WAIT_SECONDS
                if time.monotonic() < waited_until and self._others_in_the_way(
                    targets, estimate or 0
                ):
                    time.sleep(0.05)  # until they settle, or give back a standing hold
                    now = utcnow()
                    continue
                refusal = self._refusal_for(targets, estimate or 0)
            self.tracker.refused(call, refusal)
            raise refusal

    def _stands(self, held: Held, hit: Remembered, estimate: int | None, now: dt.datetime) -> bool:
        """Whether the hold the thread's last call kept serves this call as it is: the
        same budgets and periods, room for this call's worst case, and no commit by any
        other connection since it was made (so it is still there, and still fits)."""
        if estimate is None or estimate > held.amount or held.version != hit.version:
            return False
        if held.until is None or now >= held.until:
            return False
        targets = hit.found.targets or []
        if targets is not held.source and held.periods != sorted(t.period_id for t in targets):
            return False
        return self.tracker.store.thread_data_version() == held.version

    def _reserve_remembered(
        self,
        call: Call,
        key: tuple[str, str, str],
        hit: Remembered,
        amount: int,
        now: dt.datetime,
        standing: Held | None,
    ) -> bool:
        """Reserve on the remembered targets in one write transaction, which first checks
        that no other connection has committed since (else reads the budgets again, under
        the write lock) and gives back ``standing``, a hold that does not serve. False,
        with nothing changed, when anything else is needed — budgets to make or to re-read
        outside, a refusal to explain: the full path then runs."""
        with self.tracker.store.tx(write=True) as tx:
            version = tx.data_version()
            targets = hit.found.targets or []  # not empty: the caller checked
            quiet = version == hit.version
            if not quiet:
                found = self._read(tx, key, now, version)
                self._hard_seen[key] = found.hard
                if not found.complete or not found.targets:
                    tx.rollback()
                    return False
                targets = found.targets
            if standing is not None:
                give_back(tx, [standing])
            held = self._hold(tx, *self._hold_plan(targets, amount, now))
            if held is None:
                tx.rollback()
                return False
        HEARTBEAT.track(self.tracker.store, held, held.lease)  # renewed while it lives
        if quiet and tx.memo is not None:  # may stand for the next call (see settle)
            held.version, held.memo, held.source = version, tx.memo, targets
            half_lease = now + dt.timedelta(seconds=held.lease / 2)
            held.until = half_lease if hit.until is None else min(half_lease, hit.until)
        call.reservation = held
        return True

    def _prepare(self, call: Call, now: dt.datetime) -> list[Target]:
        """Under the write lock: the budgets that apply now, with every missing default
        child and current period made, and the holds of expired leases and this process's
        standing holds given back."""
        with self.tracker.store.tx(write=True) as tx:
            if tx.memo is not None:
                tx.memo.clear()  # what this connection writes does not change data_version
            give_back(tx, self.standing.take_all())
            rows = candidate_budgets(tx, call.org, call.project, call.user)
            applicable, todo = resolve(rows, call.project, call.user)
            applicable += [materialize(tx, d, name, now) for d, name in todo]
            applicable.sort(key=lambda b: b.id)
            periods = current_periods(tx, applicable, now)
            reclaim_expired(tx, now)
        return [Target(p.id, p.period_start, b) for b, p in periods]

    def _reserve(self, targets: list[Target], amount: int, now: dt.datetime) -> Held | None:
        """One write transaction: reserve ``amount`` on every target and write the hold;
        ``None`` (and nothing held) if a hard budget has no room. Everything is prepared
        before the write lock is taken (on SQLite then held for two statements)."""
        plan = self._hold_plan(targets, amount, now)
        store = self.tracker.store
        with store.tx(write=store.is_sqlite) as tx:  # PostgreSQL: one statement, autocommit
            held = self._hold(tx, *plan)
            if held is None and tx.sqlite:
                tx.rollback()
        if held is not None:
            HEARTBEAT.track(self.tracker.store, held, held.lease)  # renewed while it lives
        return held

    def _hold_plan(self, targets: list[Target], amount: int, now: dt.datetime) -> Any:
        """What :meth:`_hold` sends, made before the write lock is taken."""
        sqlite = self.tracker.store.is_sqlite
        lease = lease_seconds()
        held = Held(
            token=os.urandom(16).hex(),
            periods=sorted(t.period_id for t in targets),
            amount=amount,
            targets={t.period_id: t for t in targets},
            lease=lease,
        )
        stamp = db_time_for(sqlite, now)
        hold = {
            "token": held.token,
            "period_ids": ",".join(map(str, held.periods)),
            "amount": amount,
            "now": stamp,
            # SQLite: a time on this clock; PostgreSQL: seconds after the database's clock
            "lease": (
                db_time_for(True, now + dt.timedelta(seconds=lease))
                if sqlite
                else lease_param(False, lease)
            ),
            "owner": self.owner,
        }
        soft = tuple(t.period_id for t in targets if t.budget.mode != "hard")
        if sqlite:  # one writer at a time: one statement for all of them
            hard = tuple(t.period_id for t in targets if t.budget.mode == "hard")
            sql = RESERVE_SQLITE.get(hard, soft)
        else:  # reservation and hold in one statement
            sql = RESERVE_PG.get(tuple(held.periods))
            hold["n"], hold["soft"] = len(held.periods), list(soft)
        return held, hold, sql, targets

    @staticmethod
    def _hold(tx: Tx, held: Held, hold: dict[str, Any], sql: Any, targets: list[Target]) -> Any:
        """Reserve and write the hold on ``tx``; ``None`` if a hard budget has no room (the
        caller then rolls back)."""
        if not tx.sqlite:  # atomic on its own: nothing changed unless it all fits
            return held if tx.run(sql, hold).one().fits else None
        params = {"amount": held.amount, "now": hold["now"]}
        if tx.run(sql, params).rowcount != len(targets):
            return None
        tx.run(HOLD, hold)
        return held

    def _unpriced(self, targets: list[Target]) -> BudgetExceeded | None:
        """A call whose model has no price, under a hard budget that refuses those."""
        for t in targets:
            if t.budget.mode == "hard" and (t.budget.unpriced_policy or "refuse") == "refuse":
                return self._refusal(t, None, "unpriced model")
        return None

    def _others_in_the_way(self, targets: list[Target], amount: int) -> bool:
        """Whether a refused reservation would fit but for other processes' holds (calls
        in flight, or holds standing for their next call): worth waiting for. Holds of
        this process's threads are not waited for (an asyncio task waiting here would keep
        its siblings from settling)."""
        hard = {t.period_id for t in targets if t.budget.mode == "hard"}
        with self.tracker.store.tx() as tx:
            for pid in hard:
                p = tx.run(REFUSAL, {"id": pid}).one()
                if p.spent_nanos + amount > p.limit_nanos:
                    return False  # no room even when every hold is settled
            holds = tx.run(OTHERS_HOLDS, {"owner": self.owner}).all()
        return any(hard.intersection(map(int, h.period_ids.split(","))) for h in holds)

    def _give_back(self, holds: list[Held]) -> None:
        with self.tracker.store.tx(write=True) as tx:
            give_back(tx, holds)

    def give_back(self, holds: list[Held]) -> None:
        """Give back ``holds`` in one transaction of their own (raises if the store cannot
        take it)."""
        self._give_back(holds)

    def release_standing(self) -> None:
        """Give back the holds this process keeps for its threads' next calls."""
        self.standing.release_all()

    def _refusal_for(self, targets: list[Target], amount: int) -> BudgetExceeded:
        """The refusal of a reservation that did not fit: the budget without room."""
        hard = [t for t in targets if t.budget.mode == "hard"]
        with self.tracker.store.tx() as tx:
            for t in hard:
                p = tx.run(REFUSAL, {"id": t.period_id}).one()
                if p.spent_nanos + p.reserved_nanos + amount > p.limit_nanos:
                    return self._exceeded(t, p, amount, None)
            p = tx.run(REFUSAL, {"id": hard[0].period_id}).one()
        return self._exceeded(hard[0], p, amount, "concurrent reservations")

    def _refusal(self, t: Target, amount: int | None, reason: str | None) -> BudgetExceeded:
        with self.tracker.store.tx() as tx:
            p = tx.run(REFUSAL, {"id": t.period_id}).one()
        return self._exceeded(t, p, amount, reason)

    @staticmethod
    def _exceeded(t: Target, p: Any, amount: int | None, reason: str | None) -> BudgetExceeded:
        end = py_time(p.period_end)
        return BudgetExceeded(
            budget=t.budget.name,
            scope=t.budget.scope,
            period=t.budget.period,
            limit=nanos_to_usd(p.limit_nanos),
            spent=nanos_to_usd(p.spent_nanos),
            reserved=nanos_to_usd(p.reserved_nanos),
            estimate=None if amount is None else nanos_to_usd(amount),
            resets_at=None if end is None else end.replace(tzinfo=dt.UTC),
            reason=reason,
        )

    def _prior_tokens(self, ids: Any) -> dict[str, int]:
        """Recorded input + output tokens of the prior responses ``ids`` names: from this
        process's recent calls first (a conversation usually goes on where it began), then
        from the store."""
        wanted = set(ids)
        found: dict[str, int] = {}
        for row in self.tracker.recent:
            rid = row.get("request_id")
            if isinstance(rid, str) and rid in wanted:
                tokens = (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)
                found[rid] = max(found.get(rid, 0), tokens)
        missing = wanted - found.keys()
        if missing:
            with self.tracker.store.tx() as tx:
                found.update(recorded_tokens(tx, missing))
        return found

    def estimate(self, call: Call) -> int | None:
        """Worst-case cost in nanodollars (``None`` if the model cannot be priced).

        Input: the call's offline bound (:attr:`Call.input_upper`), plus what it refers to
        (:attr:`Call.refs`): each prior response's recorded input + output tokens, and the
        model's context window for anything unknown (a response not recorded, content of
        unknown size). Output: the request's cap, else the override's, the family's
        published cap (``OUTPUT_CAPS``), the context window, ``DEFAULT_OUTPUT_CAP``.
        """
        book = self.tracker.pricebook
        window = None
        out = call.output_cap
        if out is None:
            out = book.output_cap(call.provider, call.model) or output_cap_for(call.model)
            if out is None:
                window = book.context_window(call.provider, call.model)
                out = window or DEFAULT_OUTPUT_CAP
        inp = call.input_upper
        refs = call.refs
        if refs is not None:
            found = self._prior_tokens(refs.prior_ids) if refs.prior_ids else {}
            inp += sum(found.values())
            if refs.open_ended or len(found) < len(set(refs.prior_ids)):
                if window is None:
                    window = book.context_window(call.provider, call.model)
                inp += window or DEFAULT_CONTEXT_WINDOW
        return book.worst_case_nanos(call.provider, call.model, inp, out, call.epoch,
                                     tier=call.service_tier, api=call.api)  # fmt: skip
