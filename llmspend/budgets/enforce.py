"""Enforcement: reserve the worst case before a call, settle the actual cost after.

Before a request leaves, every budget that applies to the call's (org, project, user) is
found with its current period (one read), and the call's worst-case cost is reserved on
all of them in ONE write transaction: a conditional ``UPDATE ... WHERE spent + reserved +
x <= limit`` on the hard budgets (one statement on SQLite, whose writers are serialized;
row by row in ascending id order on PostgreSQL, a consistent lock order), and one hold
row naming the periods (``llmspend_reservations``, keyed by the call's token, with a
lease). If any budget refuses, the transaction rolls back — nothing is held.

When something must be made first — a default turned into the child's own budget, the
first period of a new day or month (roll-over is lazy: no background job) — or when a
reservation is refused, a preparing transaction re-reads everything under the write
lock, makes what is missing and reclaims the holds of expired leases (a kernel that died
mid-call), then the reservation is tried once more. Still refused: ``BudgetExceeded`` is
raised before any byte is sent — unless the budgets would have room but for other
processes' holds: the call then waits for those (up to ``REFUSAL_WAIT_SECONDS``) first.
After the call, the reservation is settled to the actual cost in the same transaction
that writes the call's row; on SQLite that settlement may keep the hold standing for the
thread's next call (see :mod:`.standing`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import DBAPIError

from ..alerting.events import PeriodState, decide_thresholds, reaches_a_threshold
from ..call import DEFAULT_OUTPUT_CAP
from ..errors import BudgetExceeded, ConfigError, StoreError, StoreUnavailable
from ..money import nanos_to_usd
from ..store.fastsql import SQL, Tx, db_time, db_time_for, py_time, run
from ..store.models import Budget as BudgetRow
from ..store.models import BudgetPeriod
from ..timeutil import utcnow
from .periods import TOTAL_START, current_bounds
from .standing import IDLE_SECONDS, StandingHolds

if TYPE_CHECKING:
    from ..call import Call
    from ..tracker import Tracker

__all__ = ["BudgetGuard", "lease_seconds"]

log = logging.getLogger("llmspend")

_DEFAULT_LEASE = 600.0


def lease_seconds() -> float:
    raw = os.environ.get("LLMSPEND_LEASE_SECONDS")
    if not raw:
        return _DEFAULT_LEASE
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"LLMSPEND_LEASE_SECONDS must be a number of seconds, got {raw!r}"
        ) from None
    if not 0 < value <= 7 * 86400:  # also refuses nan and inf
        raise ConfigError(
            f"LLMSPEND_LEASE_SECONDS must be a number of seconds in (0, 604800], got {raw!r}"
        )
    return value


class Target(NamedTuple):
    """One budget that applies to a call, and the id and start of its current period."""

    period_id: int
    period_start: dt.datetime
    budget: Any  # a row of _BUDGET_COLS


#: A lookup's answer: (targets or None, complete, whether any budget is hard).
Found = tuple[list[Target] | None, bool, bool]


@dataclass
class Held:
    """What one call holds: the token of its hold row and the periods charged."""

    token: str
    periods: list[int] = field(default_factory=list)  # period ids to charge at settle
    amount: int = 0
    # Per period id: its budget and start, for the alert decision at settle.
    targets: dict[int, Target] = field(default_factory=dict)
    # Set when it was made on a thread's SQLite connection (``memo`` is that connection's)
    # with no other commit since the budgets were read (that ``data_version``): it may
    # then stand for the thread's next call (see standing.py) until ``until`` (half its
    # lease, or the period's end).
    version: int | None = None
    until: dt.datetime | None = None
    memo: Any = None
    source: Any = None  # the remembered targets it was made for (``is`` tells them apart)
    # (transaction number, the periods' rows) of the settlement that last kept it standing.
    mirror: tuple[int, list[Any]] | None = None
    keeping: Any = None  # what settling it while it stands sends, made once (see settle)


_BUDGET_COLS = (
    BudgetRow.id,
    BudgetRow.scope,
    BudgetRow.name,
    BudgetRow.default_for,
    BudgetRow.org_name,
    BudgetRow.project_name,
    BudgetRow.user_name,
    BudgetRow.limit_nanos,
    BudgetRow.period,
    BudgetRow.mode,
    BudgetRow.timezone,
    BudgetRow.week_start,
    BudgetRow.unpriced_policy,
    BudgetRow.derived_from,
    BudgetRow.thresholds,
    BudgetRow.webhook_url,
)


# Only these constant column names are formatted into the statements below. The hot
# path's rows also carry created_at: with (id, created_at) a budget deleted and set again
# (SQLite may give it the same id) is never mistaken for the old one.
_COLS = ", ".join([c.key for c in _BUDGET_COLS] + ["created_at"])
_CANDIDATES = SQL(
    f"SELECT {_COLS} FROM llmspend_budgets WHERE org_name = :org "  # noqa: S608
    "AND (project_name IS NULL OR project_name = :project OR project_name = '*') "
    "AND (user_name IS NULL OR user_name = :user OR user_name = '*')"
)
_BY_KEY = SQL(
    f"SELECT {_COLS} FROM llmspend_budgets "  # noqa: S608
    "WHERE scope = :scope AND name = :name AND default_for = ''"
)


def candidate_budgets(conn: Connection | Tx, org: str, project: str, user: str) -> list[Any]:
    """Every budget row that could apply to (org, project, user), defaults included."""
    return list(run(conn, _CANDIDATES, {"org": org, "project": project, "user": user}).all())


# The hot path's one read: the candidates with the period row that contains :now (several
# when a budget's period kind was changed; the one starting where it should is used).
_LOOKUP = SQL(
    "SELECT "
    + ", ".join(f"b.{c}" for c in _COLS.split(", "))
    + ", p.id AS period_id, p.period_start AS period_start "
    "FROM llmspend_budgets b LEFT JOIN llmspend_budget_periods p ON p.budget_id = b.id "
    "AND p.period_start <= :now AND (p.period_end IS NULL OR p.period_end > :now) "
    "WHERE b.org_name = :org "
    "AND (b.project_name IS NULL OR b.project_name = :project OR b.project_name = '*') "
    "AND (b.user_name IS NULL OR b.user_name = :user OR b.user_name = '*')"
)


def resolve(rows: list[Any], project: str, user: str) -> tuple[list[Any], list[tuple[Any, str]]]:
    """Split candidates into budgets that apply and defaults that must be materialized.

    Returns (applicable rows, [(default row, child budget name)]).
    """
    by_key = {(r.scope, r.project_name, r.user_name): r for r in rows if not r.default_for}
    applicable = [r for r in rows if r.scope == "org" and not r.default_for]
    todo: list[tuple[Any, str]] = []
    defaults = {(r.scope, r.project_name, r.user_name): r for r in rows if r.default_for}
    org = rows[0].org_name if rows else ""
    slots = (
        (("project", project, None), ("project", "*", None), f"{org}/{project}"),
        (("user", None, user), ("user", None, "*"), f"{org}/{user}"),
        (("user", project, user), ("user", project, "*"), f"{org}/{project}/{user}"),
    )
    for explicit_key, default_key, child_name in slots:
        row = by_key.get(explicit_key)
        if row is not None:
            applicable.append(row)
        elif default_key in defaults:
            todo.append((defaults[default_key], child_name))
    return applicable, todo


def _known_targets(rows: list[Any], project: str, user: str, now: dt.datetime) -> Any:
    """From the hot-path lookup: ``(targets, complete)``.

    ``targets`` are the budgets that apply with their current periods, in id order;
    ``complete`` is false when something must be made first (a default's child budget,
    a period not started yet), and ``targets`` is then empty if no budget applies at all.
    """
    budgets: dict[int, Any] = {}
    periods: dict[int, tuple[int, dt.datetime]] = {}
    for r in rows:
        budgets.setdefault(r.id, r)
        if r.period_id is not None:
            start = py_time(r.period_start)
            if start == current_bounds(r.period, r.timezone, now, week_start=r.week_start)[0]:
                periods[r.id] = (r.period_id, start)
    applicable, todo = resolve(list(budgets.values()), project, user)
    if not applicable and not todo:
        return [], True
    if todo or any(b.id not in periods for b in applicable):
        return None, False
    targets = [Target(*periods[b.id], b) for b in applicable]
    targets.sort(key=lambda t: t.budget.id)
    return targets, True


_MATERIALIZE = SQL(
    "INSERT INTO llmspend_budgets (scope, name, default_for, org_name, project_name, "
    "user_name, limit_nanos, period, mode, thresholds, timezone, week_start, "
    "unpriced_policy, webhook_url, derived_from, created_at, updated_at, created_by) "
    "VALUES (:scope, :name, '', :org_name, :project_name, :user_name, :limit_nanos, :period, "
    ":mode, :thresholds, :timezone, :week_start, :unpriced_policy, :webhook_url, "
    ":derived_from, :now, :now, 'default') ON CONFLICT DO NOTHING"
)


def materialize(conn: Connection | Tx, default: Any, child_name: str, now: dt.datetime) -> Any:
    """The child's own budget made from a default (created once; concurrent-safe)."""
    tx = Tx.of(conn)
    parts = child_name.split("/")
    if default.scope == "project":
        project, user = parts[1], None
    elif len(parts) == 2:
        project, user = None, parts[1]
    else:
        project, user = parts[1], parts[2]
    tx.run(
        _MATERIALIZE,
        {
            "scope": default.scope,
            "name": child_name,
            "org_name": default.org_name,
            "project_name": project,
            "user_name": user,
            "limit_nanos": default.limit_nanos,
            "period": default.period,
            "mode": default.mode,
            "thresholds": default.thresholds,
            "timezone": default.timezone,
            "week_start": default.week_start,
            "unpriced_policy": default.unpriced_policy,
            "webhook_url": default.webhook_url,
            "derived_from": default.id,
            "now": db_time(tx, now),
        },
    )
    return tx.run(_BY_KEY, {"scope": default.scope, "name": child_name}).one()


_PERIOD = SQL(
    "SELECT id, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos, calls "
    "FROM llmspend_budget_periods WHERE budget_id = :budget_id AND period_start = :start"
)
_NEW_PERIOD = SQL(
    "INSERT INTO llmspend_budget_periods (budget_id, period_start, period_end, limit_nanos, "
    "spent_nanos, reserved_nanos, calls, updated_at) VALUES (:budget_id, :start, :end, "
    ":limit_nanos, :spent, 0, :calls, :now) ON CONFLICT DO NOTHING"
)


class Period(NamedTuple):
    id: int
    period_start: dt.datetime
    period_end: dt.datetime | None
    limit_nanos: int
    spent_nanos: int
    reserved_nanos: int
    calls: int


def _period(row: Any) -> Period:
    return Period(
        row.id,
        py_time(row.period_start) or TOTAL_START,
        py_time(row.period_end),
        row.limit_nanos,
        row.spent_nanos,
        row.reserved_nanos,
        row.calls,
    )


def _spent_sql(budget: Any, bounded: bool) -> SQL:
    """What a budget's usage rows add up to in a window (refused calls cost nothing)."""
    where = ["org_name = :org"]
    if budget.project_name and budget.project_name != "*":
        where.append("project_name = :project")
    if budget.user_name and budget.user_name != "*":
        where.append("user_name = :user")
    where += ["ts >= :start"] + (["ts < :end"] if bounded else []) + ["status != 'refused'"]
    return SQL(
        "SELECT COALESCE(SUM(cost_nanos), 0) AS spent, COUNT(*) AS calls "
        "FROM llmspend_usage WHERE " + " AND ".join(where)  # constant clauses only
    )


def ensure_period(conn: Connection | Tx, budget: Any, now: dt.datetime) -> Period:
    """The budget's current period row, created (with spend already recorded) if new."""
    tx = Tx.of(conn)
    start, end = current_bounds(budget.period, budget.timezone, now, week_start=budget.week_start)
    key = {"budget_id": budget.id, "start": db_time(tx, start)}
    row = tx.run(_PERIOD, key).first()
    if row is not None:
        return _period(row)
    window = {
        "org": budget.org_name,
        "project": budget.project_name,
        "user": budget.user_name,
        "start": db_time(tx, start),
        "end": db_time(tx, end),
    }
    spent, calls = tx.run(_spent_sql(budget, end is not None), window).one()
    tx.run(
        _NEW_PERIOD,
        {
            **key,
            "end": db_time(tx, end),
            "limit_nanos": budget.limit_nanos,
            "spent": int(spent or 0),
            "calls": int(calls),
            "now": db_time(tx, now),
        },
    )
    return _period(tx.run(_PERIOD, key).one())


_EXPIRED = SQL(
    "DELETE FROM llmspend_reservations WHERE lease_expires_at < :now "
    "RETURNING period_ids, amount_nanos"
)
_RELEASE = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = CASE WHEN reserved_nanos > :amount "
    "THEN reserved_nanos - :amount ELSE 0 END WHERE id = :id"
)


def _ids(ids: Any) -> str:
    return ", ".join(str(int(i)) for i in ids)  # integers from the store, never input


def reclaim_expired(conn: Connection | Tx, now: dt.datetime) -> int:
    """Give back what the calls whose lease has expired held. Returns how many calls.

    One ``DELETE ... RETURNING``: each expired hold is given back by exactly one
    transaction, however many reclaim at once.
    """
    tx = Tx.of(conn)
    expired = tx.run(_EXPIRED, {"now": db_time(tx, now)}).all()
    _release(tx, expired)
    return len(expired)


def give_back(tx: Tx, holds: list[Held]) -> None:
    """Delete these holds and give back what each still holds (nothing if its lease ran
    out and it was reclaimed; only on the periods it still names)."""
    _release(tx, [row for h in holds for row in tx.run(_UNHOLD, {"token": h.token}).all()])


def _release(tx: Tx, deleted: list[Any]) -> None:
    """Take deleted holds' ``(period_ids, amount_nanos)`` off the periods' reserved."""
    per_period: dict[int, int] = {}
    for period_ids, amount in deleted:
        for pid in period_ids.split(","):
            per_period[int(pid)] = per_period.get(int(pid), 0) + amount
    for pid, amount in sorted(per_period.items()):  # in id order: the consistent lock order
        tx.run(_RELEASE, {"amount": amount, "id": pid})


_CURRENT = SQL(
    "SELECT budget_id, id, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos, "
    "calls FROM llmspend_budget_periods WHERE budget_id IN ({ids}) AND period_start <= :now "
    "AND (period_end IS NULL OR period_end > :now)"
)


def current_periods(
    conn: Connection | Tx, budgets: list[Any], now: dt.datetime
) -> list[tuple[Any, Period]]:
    """The current period of each budget: one query, creating only the missing ones."""
    if not budgets:
        return []
    tx = Tx.of(conn)
    found: dict[tuple[int, dt.datetime | None], Any] = {}
    sql = SQL(_CURRENT.text.replace("{ids}", _ids(b.id for b in budgets)))
    for r in tx.run(sql, {"now": db_time(tx, now)}).all():
        found[(r.budget_id, py_time(r.period_start))] = r
    out = []
    for b in budgets:
        start, _ = current_bounds(b.period, b.timezone, now, week_start=b.week_start)
        row = found.get((b.id, start))
        out.append((b, _period(row) if row is not None else ensure_period(tx, b, now)))
    return out


class _Statements:
    """Statements made per set of period ids, kept: the same few sets come on every call."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._made: dict[Any, Any] = {}

    def get(self, *key: Any) -> Any:
        stmt = self._made.get(key)
        if stmt is None:
            if len(self._made) > 1024:
                self._made.clear()
            stmt = self._made[key] = self._make(*key)
        return stmt


def _reserve_sqlite(hard: tuple[int, ...], soft: tuple[int, ...]) -> SQL:
    ids = _ids(hard + soft)
    fits = "spent_nanos + reserved_nanos + :amount <= limit_nanos"
    cond = (
        "" if not hard else f" AND {fits}" if not soft else f" AND (id IN ({_ids(soft)}) OR {fits})"
    )
    return SQL(
        "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "  # noqa: S608
        f"updated_at = :now WHERE id IN ({ids}){cond}"
    )


_RESERVE_SQLITE = _Statements(_reserve_sqlite)
_RESERVE_HARD = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "
    "updated_at = :now WHERE id = :id AND spent_nanos + reserved_nanos + :amount <= limit_nanos"
)
_RESERVE_SOFT = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "
    "updated_at = :now WHERE id = :id"
)
_HOLD = SQL(
    "INSERT INTO llmspend_reservations (token, period_ids, amount_nanos, created_at, "
    "lease_expires_at, owner) VALUES (:token, :period_ids, :amount, :now, :lease, :owner)"
)
_UNHOLD = SQL(
    "DELETE FROM llmspend_reservations WHERE token = :token RETURNING period_ids, amount_nanos"
)
_HOLDS = SQL("SELECT token, period_ids FROM llmspend_reservations")
_REHOLD = SQL("UPDATE llmspend_reservations SET period_ids = :period_ids WHERE token = :token")
_DROP_HOLD = SQL("DELETE FROM llmspend_reservations WHERE token = :token")


def forget_periods(conn: Connection | Tx, period_ids: set[int]) -> None:
    """Take periods being deleted out of the holds that name them, in the deleting
    transaction: SQLite may give a later period the same id, which a hold must not charge."""
    if not period_ids:
        return
    tx = Tx.of(conn)
    for token, ids in tx.run(_HOLDS).all():
        named = ids.split(",")
        kept = [i for i in named if int(i) not in period_ids]
        if len(kept) == len(named):
            continue
        if kept:
            tx.run(_REHOLD, {"token": token, "period_ids": ",".join(kept)})
        else:
            tx.run(_DROP_HOLD, {"token": token})


_SETTLE = _Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos - :held, "  # noqa: S608
        "spent_nanos = spent_nanos + :cost, calls = calls + 1, updated_at = :now "
        f"WHERE id IN ({_ids(ids)}) RETURNING id, spent_nanos, limit_nanos"
    )
)
# A standing hold's settlement (SQLite): the cost is added and the hold stays reserved,
# only if the hold row is still there naming the same periods (else nothing changes).
_KEEP = _Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET spent_nanos = spent_nanos + :cost, "  # noqa: S608
        "calls = calls + 1, updated_at = :now "
        f"WHERE id IN ({_ids(ids)}) AND (SELECT period_ids FROM llmspend_reservations "
        "WHERE token = :token) = :period_ids "
        "RETURNING id, spent_nanos, limit_nanos, reserved_nanos"
    )
)
# The same when the periods' rows and the hold row are known to be as the last settlement
# left them (see _settle_keeping), and reading the periods' rows back.
_KEEP_KNOWN = _Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET spent_nanos = spent_nanos + :cost, "  # noqa: S608
        f"calls = calls + 1, updated_at = :now WHERE id IN ({_ids(ids)})"
    )
)
_KEPT = _Statements(
    lambda ids: SQL(
        "SELECT id, spent_nanos, limit_nanos, reserved_nanos "  # noqa: S608
        f"FROM llmspend_budget_periods WHERE id IN ({_ids(ids)}) ORDER BY id"
    )
)
_REFUSAL = SQL(
    "SELECT spent_nanos, reserved_nanos, limit_nanos, period_end FROM llmspend_budget_periods "
    "WHERE id = :id"
)
_OTHERS_HOLDS = SQL(
    "SELECT period_ids FROM llmspend_reservations WHERE owner IS NULL OR owner != :owner"
)

#: How long a call refused only because of other processes' holds waits for them to be
#: settled or given back (a standing hold is given back after IDLE_SECONDS idle).
REFUSAL_WAIT_SECONDS = IDLE_SECONDS + 1.0


class BudgetGuard:
    """The budget stage of the call pipeline, wired into a tracker."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:200]
        # Whether a hard budget applied to (org, project, user) at the last lookup.
        self._hard_seen: dict[tuple[str, str, str], bool] = {}
        # Alerts whose row exists, not tried again: (budget id, created, period start, ppm).
        self.fired: set[tuple[Any, ...]] = set()
        self.standing = StandingHolds(self._give_back)

    def install(self) -> None:
        self.tracker.before_call_hooks.append(self.before_call)
        self.tracker.in_record_hooks.append(self.settle)

    # -- before the call -----------------------------------------------------------------
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
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        refusal = StoreUnavailable(
            f"the llmspend store is unavailable ({reason}), so hard budgets cannot be checked "
            f"for {call.org}/{call.project}/{call.user}; the call was not sent "
            "(LLMSPEND_STORE_DOWN=open lets calls through unchecked)"
        )
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
                if hit is not None and hit[0] == version and (hit[1] is None or now < hit[1]):
                    return hit[2]
            return self._read(tx, key, now, version)

    def _read(self, tx: Tx, key: tuple[str, str, str], now: dt.datetime, version: Any) -> Found:
        """The lookup query on ``tx``, its answer remembered with ``version`` when complete."""
        org, project, user = key
        params = {"org": org, "project": project, "user": user, "now": db_time(tx, now)}
        rows = tx.run(_LOOKUP, params).all()
        targets, complete = _known_targets(rows, project, user, now)
        found = (targets, complete, any(r.mode == "hard" for r in rows))
        memo = tx.memo
        if memo is not None and complete:
            ends = [
                current_bounds(b.period, b.timezone, now, week_start=b.week_start)[1]
                for b in (t.budget for t in targets or ())
            ]
            until = min((e for e in ends if e is not None), default=None)
            if len(memo) > 1024:
                memo.clear()
            memo[key] = (version, until, found)
        return found

    def _before_call(self, call: Call) -> None:
        now = call.ts
        key = (call.org, call.project, call.user)
        estimate: int | None = None
        standing = self.standing.take(key)
        memo = self.tracker.store.thread_memo()
        hit = None if memo is None else memo.get(key)
        if hit is not None and hit[2][0] and (hit[1] is None or now < hit[1]):
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
        targets, complete, hard = self._lookup(call, now)
        self._hard_seen[key] = hard
        if complete and not targets:
            return
        if estimate is None:
            estimate = call.estimate_nanos = self.estimate(call)
        prepared = not complete
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

    def _stands(self, held: Held, hit: Any, estimate: int | None, now: dt.datetime) -> bool:
        """Whether the hold the thread's last call kept serves this call as it is: the
        same budgets and periods, room for this call's worst case, and no commit by any
        other connection since it was made (so it is still there, and still fits)."""
        if estimate is None or estimate > held.amount or held.version != hit[0]:
            return False
        if held.until is None or now >= held.until:
            return False
        if hit[2][0] is not held.source and held.periods != sorted(t.period_id for t in hit[2][0]):
            return False
        return self.tracker.store.thread_data_version() == held.version

    def _reserve_remembered(
        self,
        call: Call,
        key: tuple[str, str, str],
        hit: Any,
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
            targets = hit[2][0]
            quiet = version == hit[0]
            if not quiet:
                targets, complete, hard = self._read(tx, key, now, version)
                self._hard_seen[key] = hard
                if not complete or not targets:
                    tx.rollback()
                    return False
            if standing is not None:
                give_back(tx, [standing])
            held = self._hold(tx, *self._hold_plan(targets, amount, now))
            if held is None:
                tx.rollback()
                return False
        if quiet and tx.memo is not None:  # may stand for the next call (see settle)
            held.version, held.memo, held.source = version, tx.memo, targets
            half_lease = now + dt.timedelta(seconds=lease_seconds() / 2)
            held.until = half_lease if hit[1] is None else min(half_lease, hit[1])
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
        with self.tracker.store.tx(write=True) as tx:
            held = self._hold(tx, *plan)
            if held is None:
                tx.rollback()
        return held

    def _hold_plan(self, targets: list[Target], amount: int, now: dt.datetime) -> Any:
        """What :meth:`_hold` sends, made before the write lock is taken."""
        sqlite = self.tracker.store.is_sqlite
        held = Held(
            token=os.urandom(16).hex(),
            periods=sorted(t.period_id for t in targets),
            amount=amount,
            targets={t.period_id: t for t in targets},
        )
        stamp = db_time_for(sqlite, now)
        hold = {
            "token": held.token,
            "period_ids": ",".join(map(str, held.periods)),
            "amount": amount,
            "now": stamp,
            "lease": db_time_for(sqlite, now + dt.timedelta(seconds=lease_seconds())),
            "owner": self.owner,
        }
        sql = None
        if sqlite:  # one writer at a time: one statement for all of them
            hard = tuple(t.period_id for t in targets if t.budget.mode == "hard")
            soft = tuple(t.period_id for t in targets if t.budget.mode != "hard")
            sql = _RESERVE_SQLITE.get(hard, soft)
        return held, hold, sql, sorted(targets, key=lambda t: t.period_id)

    @staticmethod
    def _hold(tx: Tx, held: Held, hold: dict[str, Any], sql: Any, targets: list[Target]) -> Any:
        """Reserve and write the hold on ``tx``; ``None`` if a hard budget has no room (the
        caller then rolls back)."""
        params = {"amount": held.amount, "now": hold["now"]}
        if sql is not None:
            if tx.run(sql, params).rowcount != len(targets):
                return None
        else:  # row by row in period id order, as settle and reclaim: one lock order
            for t in targets:
                stmt = _RESERVE_HARD if t.budget.mode == "hard" else _RESERVE_SOFT
                if tx.run(stmt, {**params, "id": t.period_id}).rowcount != 1:
                    return None
        tx.run(_HOLD, hold)
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
                p = tx.run(_REFUSAL, {"id": pid}).one()
                if p.spent_nanos + amount > p.limit_nanos:
                    return False  # no room even when every hold is settled
            holds = tx.run(_OTHERS_HOLDS, {"owner": self.owner}).all()
        return any(hard.intersection(map(int, h.period_ids.split(","))) for h in holds)

    def _give_back(self, holds: list[Held]) -> None:
        with self.tracker.store.tx(write=True) as tx:
            give_back(tx, holds)

    def release_standing(self) -> None:
        """Give back the holds this process keeps for its threads' next calls."""
        self.standing.release_all()

    def _refusal_for(self, targets: list[Target], amount: int) -> BudgetExceeded:
        """The refusal of a reservation that did not fit: the budget without room."""
        hard = [t for t in targets if t.budget.mode == "hard"]
        with self.tracker.store.tx() as tx:
            for t in hard:
                p = tx.run(_REFUSAL, {"id": t.period_id}).one()
                if p.spent_nanos + p.reserved_nanos + amount > p.limit_nanos:
                    return self._exceeded(t, p, amount, None)
            p = tx.run(_REFUSAL, {"id": hard[0].period_id}).one()
        return self._exceeded(hard[0], p, amount, "concurrent reservations")

    def _refusal(self, t: Target, amount: int | None, reason: str | None) -> BudgetExceeded:
        with self.tracker.store.tx() as tx:
            p = tx.run(_REFUSAL, {"id": t.period_id}).one()
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

    def estimate(self, call: Call) -> int | None:
        """Worst-case cost in nanodollars (``None`` if the model cannot be priced)."""
        book = self.tracker.pricebook
        out = call.output_cap
        if out is None:
            out = book.output_cap(call.provider, call.model) or DEFAULT_OUTPUT_CAP
        return book.worst_case_nanos(call.provider, call.model, call.input_upper, out, call.epoch)

    # -- ingested history ------------------------------------------------------------------
    def count_ingested(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Add ingested rows to the periods that already exist, so status agrees with
        ``records()`` (periods made later count existing rows when they are made)."""
        periods = conn.execute(
            select(
                BudgetPeriod.id,
                BudgetPeriod.period_start,
                BudgetPeriod.period_end,
                BudgetRow.org_name,
                BudgetRow.project_name,
                BudgetRow.user_name,
            ).join(BudgetRow, BudgetRow.id == BudgetPeriod.budget_id)
        ).all()
        if not periods:
            return
        now = utcnow()
        for p in periods:
            spent = calls = 0
            for r in rows:
                if r["status"] == "refused" or r["org_name"] != p.org_name:
                    continue
                if p.project_name not in (None, "*") and r["project_name"] != p.project_name:
                    continue
                if p.user_name not in (None, "*") and r["user_name"] != p.user_name:
                    continue
                if r["ts"] < p.period_start or (
                    p.period_end is not None and r["ts"] >= p.period_end
                ):
                    continue
                spent += r["cost_nanos"] or 0
                calls += 1
            if calls:
                conn.execute(
                    update(BudgetPeriod)
                    .where(BudgetPeriod.id == p.id)
                    .values(
                        spent_nanos=BudgetPeriod.spent_nanos + spent,
                        calls=BudgetPeriod.calls + calls,
                        updated_at=now,
                    )
                )

    # -- after the call (inside the record's transaction) -----------------------------------
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
        states = [  # the rows settled: (id, spent_nanos, limit_nanos, ...)
            PeriodState(r[0], r[1], r[2], *held.targets[r[0]][1:])
            for r in settled
            if r[0] in held.targets and reaches_a_threshold(r[1], r[2], held.targets[r[0]].budget)
        ]
        if states:
            states.sort(key=lambda st: st.budget.id)
            call.events.extend(decide_thresholds(tx, call, states, cost, self.fired))

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
            held.keeping = (
                _KEEP.get(ids).text,
                _KEEP_KNOWN.get(ids).text,
                _KEPT.get(ids).text,
                ",".join(map(str, held.periods)),
                hard,
            )
        keep_sql, known_sql, read_sql, period_ids, hard = held.keeping
        params = {"cost": cost, "now": db_time_for(True, now), "token": held.token,
                  "period_ids": period_ids}  # fmt: skip
        mirror, held.mirror = held.mirror, None
        version = tx.data_version()
        # SQLite's statements take plain tuples and give them back, in its own style.
        if mirror is not None and tx.follows == mirror[0] and version == held.version:
            # Nothing was written since the settlement that left ``mirror``: not by another
            # connection (data_version), not by this one (its last transaction was that
            # one). So the hold row is still there, and the periods are as it read them
            # back: neither needs reading again.
            changed = tx.execute(known_sql, params).rowcount
            if not changed:
                return None
            if changed == len(held.periods):
                settled = [(p, spent + cost, lim, res) for p, spent, lim, res in mirror[1]]
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
                held.mirror = (tx.serial, settled)
        else:
            give_back(tx, [held])
        return settled

    @staticmethod
    def _settle_releasing(tx: Tx, held: Held, cost: int, now: dt.datetime) -> list[Any]:
        """Delete the hold, give back what it still holds and add the cost: the periods'
        rows after it."""
        still = tx.run(_UNHOLD, {"token": held.token}).first()
        # What is still held, and on which periods: nothing if the lease expired and the
        # hold was given back; not on a period deleted since (its id may be reused).
        named = set() if still is None else {int(i) for i in still.period_ids.split(",")}
        amount = 0 if still is None else still.amount_nanos
        stamp = db_time(tx, now)
        # One UPDATE per amount on SQLite (one writer at a time); on PostgreSQL row by row
        # in ascending id order, the lock order every transaction keeps.
        groups: dict[tuple[int, int], list[int]] = {}
        for pid in held.periods:  # ascending
            key = (amount if pid in named else 0, 0 if tx.sqlite else pid)
            groups.setdefault(key, []).append(pid)
        settled = []
        for (release, _), ids in sorted(groups.items(), key=lambda kv: kv[1][0]):
            params = {"held": release, "cost": cost, "now": stamp}
            settled += tx.run(_SETTLE.get(tuple(ids)), params).all()
        return settled
