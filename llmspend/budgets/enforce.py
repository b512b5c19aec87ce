"""Enforcement: reserve the worst case before a call, settle the actual cost after.

Before a request leaves, every budget that applies to the call's (org, project, user) is
found (defaults are materialized into a budget of the child's own), its current period
row is made (lazily: the first call of a period rolls it over, no background job), leases
that expired are reclaimed, and the call's worst-case cost is reserved on all of them in
ONE transaction: a conditional ``UPDATE ... WHERE spent + reserved + x <= limit`` per hard
budget, in ascending id order (a consistent lock order). If any refuses, the transaction
rolls back — nothing is held — and ``BudgetExceeded`` is raised before any byte is sent.
After the call, the reservation is settled to the actual cost in the same transaction
that writes the call's row. A kernel that dies leaves reservations whose lease expires.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, delete, func, select, update

from ..errors import BudgetExceeded, ConfigError, StoreUnavailable
from ..money import nanos_to_usd
from ..store.fastsql import SQL, db_time, py_time, run
from ..store.models import Budget as BudgetRow
from ..store.models import BudgetPeriod, Reservation, UsageRecord
from ..timeutil import utcnow
from .periods import TOTAL_START, period_bounds

if TYPE_CHECKING:
    from ..pipeline import Call
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


@dataclass
class Held:
    """What one call holds: the token of its reservation rows and the periods charged."""

    token: str
    periods: list[int] = field(default_factory=list)  # period ids to charge at settle
    amount: int = 0


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


# Only these constant column names are formatted into the statements below.
_COLS = ", ".join(c.key for c in _BUDGET_COLS)
_CANDIDATES = SQL(
    f"SELECT {_COLS} FROM llmspend_budgets WHERE org_name = :org "  # noqa: S608
    "AND (project_name IS NULL OR project_name = :project OR project_name = '*') "
    "AND (user_name IS NULL OR user_name = :user OR user_name = '*')"
)
_BY_KEY = SQL(
    f"SELECT {_COLS} FROM llmspend_budgets "  # noqa: S608
    "WHERE scope = :scope AND name = :name AND default_for = ''"
)


def candidate_budgets(conn: Connection, org: str, project: str, user: str) -> list[Any]:
    """Every budget row that could apply to (org, project, user), defaults included."""
    return list(run(conn, _CANDIDATES, {"org": org, "project": project, "user": user}).all())


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


def materialize(conn: Connection, default: Any, child_name: str, now: dt.datetime) -> Any:
    """The child's own budget made from a default (created once; concurrent-safe)."""
    parts = child_name.split("/")
    if default.scope == "project":
        project, user = parts[1], None
    elif len(parts) == 2:
        project, user = None, parts[1]
    else:
        project, user = parts[1], parts[2]
    values = {
        "scope": default.scope,
        "name": child_name,
        "default_for": "",
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
        "created_at": now,
        "updated_at": now,
        "created_by": "default",
    }
    conn.execute(_insert_ignore(conn, BudgetRow.__table__).values(**values))
    return run(conn, _BY_KEY, {"scope": default.scope, "name": child_name}).one()


def _insert_ignore(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def scope_filter(budget: Any) -> list[Any]:
    """WHERE clauses selecting the usage rows a budget counts."""
    clauses = [UsageRecord.org_name == budget.org_name]
    if budget.project_name and budget.project_name != "*":
        clauses.append(UsageRecord.project_name == budget.project_name)
    if budget.user_name and budget.user_name != "*":
        clauses.append(UsageRecord.user_name == budget.user_name)
    return clauses


_PERIOD = SQL(
    "SELECT id, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos, calls "
    "FROM llmspend_budget_periods WHERE budget_id = :budget_id AND period_start = :start"
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


def ensure_period(conn: Connection, budget: Any, now: dt.datetime) -> Period:
    """The budget's current period row, created (with spend already recorded) if new."""
    start, end = period_bounds(budget.period, budget.timezone, now, week_start=budget.week_start)
    key = {"budget_id": budget.id, "start": db_time(conn, start)}
    row = run(conn, _PERIOD, key).first()
    if row is not None:
        return _period(row)
    window = [UsageRecord.ts >= start] + ([UsageRecord.ts < end] if end is not None else [])
    spent, calls = conn.execute(
        select(func.coalesce(func.sum(UsageRecord.cost_nanos), 0), func.count()).where(
            *scope_filter(budget), *window, UsageRecord.status != "refused"
        )
    ).one()
    conn.execute(
        _insert_ignore(conn, BudgetPeriod.__table__).values(
            budget_id=budget.id,
            period_start=start,
            period_end=end,
            limit_nanos=budget.limit_nanos,
            spent_nanos=int(spent or 0),
            reserved_nanos=0,
            calls=int(calls),
            updated_at=now,
        )
    )
    return _period(run(conn, _PERIOD, key).one())


_EXPIRED = SQL(
    "SELECT id, period_id, amount_nanos FROM llmspend_reservations "
    "WHERE lease_expires_at < :now AND period_id IN ({ids})"
)
_RELEASE = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = CASE WHEN reserved_nanos > :amount "
    "THEN reserved_nanos - :amount ELSE 0 END WHERE id = :id"
)


def reclaim_expired(conn: Connection, period_ids: list[int], now: dt.datetime) -> int:
    """Give back what expired leases held on these periods. Returns the number reclaimed."""
    if not period_ids:
        return 0
    ids = ", ".join(str(int(i)) for i in period_ids)  # integers from the store, not input
    expired = run(conn, SQL(_EXPIRED.text.replace("{ids}", ids)), {"now": db_time(conn, now)}).all()
    if not expired:
        return 0
    per_period: dict[int, int] = {}
    for _, pid, amount in expired:
        per_period[pid] = per_period.get(pid, 0) + amount
    conn.execute(delete(Reservation).where(Reservation.id.in_([r[0] for r in expired])))
    for pid, amount in sorted(per_period.items()):
        run(conn, _RELEASE, {"amount": amount, "id": pid})
    return len(expired)


# {ids}: integer period ids read from the store, in ascending order (the lock order).
_RESERVE_HARD = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "
    "updated_at = :now WHERE id IN ({ids}) "
    "AND spent_nanos + reserved_nanos + :amount <= limit_nanos"
)
_RESERVE_SOFT = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "
    "updated_at = :now WHERE id IN ({ids})"
)
_CURRENT = SQL(
    "SELECT budget_id, id, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos, "
    "calls FROM llmspend_budget_periods WHERE budget_id IN ({ids}) AND period_start <= :now "
    "AND (period_end IS NULL OR period_end > :now)"
)


def current_periods(
    conn: Connection, budgets: list[Any], now: dt.datetime
) -> list[tuple[Any, Period]]:
    """The current period of each budget: one query, creating only the missing ones."""
    if not budgets:
        return []
    ids = ", ".join(str(int(b.id)) for b in budgets)
    found: dict[tuple[int, dt.datetime | None], Any] = {}
    for r in run(conn, SQL(_CURRENT.text.replace("{ids}", ids)), {"now": db_time(conn, now)}).all():
        found[(r.budget_id, py_time(r.period_start))] = r
    out = []
    for b in budgets:
        start, _ = period_bounds(b.period, b.timezone, now, week_start=b.week_start)
        row = found.get((b.id, start))
        out.append((b, _period(row) if row is not None else ensure_period(conn, b, now)))
    return out


_HOLD = SQL(
    "INSERT INTO llmspend_reservations (token, period_id, amount_nanos, created_at, "
    "lease_expires_at, owner) VALUES (:token, :period_id, :amount, :now, :lease, :owner)"
)
_UNHOLD = SQL(
    "DELETE FROM llmspend_reservations WHERE token = :token RETURNING period_id, amount_nanos"
)
_SETTLE = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos - :held, "
    "spent_nanos = spent_nanos + :cost, calls = calls + 1, updated_at = :now WHERE id IN ({ids})"
)
_REFUSAL = SQL(
    "SELECT spent_nanos, reserved_nanos, limit_nanos, period_end FROM llmspend_budget_periods "
    "WHERE id = :id"
)


class BudgetGuard:
    """The budget stage of the call pipeline, wired into a tracker."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:200]
        # Whether a hard budget applied to (org, project, user) at the last lookup.
        self._hard_seen: dict[tuple[str, str, str], bool] = {}

    def install(self) -> None:
        self.tracker.before_call_hooks.append(self.before_call)
        self.tracker.in_record_hooks.append(self.settle)

    # -- before the call -----------------------------------------------------------------
    def before_call(self, call: Call) -> None:
        from sqlalchemy.exc import DBAPIError

        from ..errors import StoreError

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

    def _before_call(self, call: Call) -> None:
        store = self.tracker.store
        rows = store.fetch(
            _CANDIDATES, {"org": call.org, "project": call.project, "user": call.user}
        )
        self._hard_seen[(call.org, call.project, call.user)] = any(r.mode == "hard" for r in rows)
        if not rows:
            return
        applicable, todo = resolve(rows, call.project, call.user)
        if not applicable and not todo:
            return
        estimate = self.estimate(call)
        call.estimate_nanos = estimate
        refusal: BudgetExceeded | None = None
        now = utcnow()
        with store.begin(write=True) as conn:
            # Re-read inside the write transaction: another kernel may have changed budgets.
            rows = candidate_budgets(conn, call.org, call.project, call.user)
            applicable, todo = resolve(rows, call.project, call.user)
            applicable += [materialize(conn, d, name, now) for d, name in todo]
            applicable.sort(key=lambda b: b.id)
            periods = current_periods(conn, applicable, now)
            reclaim_expired(conn, [p.id for _, p in periods], now)
            held = Held(token=str(uuid.uuid4()))
            amount = estimate
            if amount is None:
                refusing = [
                    (b, p)
                    for b, p in periods
                    if b.mode == "hard" and (b.unpriced_policy or "refuse") == "refuse"
                ]
                if refusing:
                    b, p = refusing[0]
                    refusal = self._refusal(conn, b, p.id, None, "unpriced model")
                amount = 0
            if refusal is None:
                refusal = self._reserve(conn, periods, amount, now)
            if refusal is not None:
                conn.rollback()
            else:
                held.periods = sorted(p.id for _, p in periods)
                held.amount = amount
                lease = db_time(conn, now + dt.timedelta(seconds=lease_seconds()))
                stamp = db_time(conn, now)
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                cursor.executemany(
                    _HOLD.render(conn.dialect.name),
                    [
                        {
                            "token": held.token,
                            "period_id": pid,
                            "amount": amount,
                            "now": stamp,
                            "lease": lease,
                            "owner": self.owner,
                        }
                        for pid in held.periods
                    ],
                )
                call.reservation = held
        if refusal is not None:
            self.tracker.refused(call, refusal)
            raise refusal

    def _reserve(
        self, conn: Connection, periods: list[tuple[Any, Period]], amount: int, now: dt.datetime
    ) -> BudgetExceeded | None:
        """A conditional UPDATE per hard budget (one per kind on SQLite, whose writers are
        serialized anyway; row by row in id order on PostgreSQL, the consistent lock order)."""
        stamp = db_time(conn, now)
        hard = sorted(p.id for b, p in periods if b.mode == "hard")
        soft = sorted(p.id for b, p in periods if b.mode != "hard")
        groups = [hard] if conn.dialect.name == "sqlite" else [[i] for i in hard]
        for group in groups if hard else []:
            ids = ", ".join(str(int(i)) for i in group)  # integers from the store
            sql = SQL(_RESERVE_HARD.text.replace("{ids}", ids))
            if run(conn, sql, {"amount": amount, "now": stamp}).rowcount != len(group):
                conn.rollback()  # nothing is held; find which budget refused, for the message
                for budget, period in periods:
                    p = run(conn, _REFUSAL, {"id": period.id}).one()
                    if (
                        budget.mode == "hard"
                        and p.spent_nanos + p.reserved_nanos + amount > p.limit_nanos
                    ):
                        return self._refusal(conn, budget, period.id, amount, None)
                budget, period = next((b, p) for b, p in periods if b.mode == "hard")
                return self._refusal(conn, budget, period.id, amount, "concurrent reservations")
        if soft:
            ids = ", ".join(str(int(i)) for i in soft)
            run(
                conn,
                SQL(_RESERVE_SOFT.text.replace("{ids}", ids)),
                {"amount": amount, "now": stamp},
            )
        return None

    def estimate(self, call: Call) -> int | None:
        """Worst-case cost in nanodollars (``None`` if the model cannot be priced)."""
        from ..pipeline import DEFAULT_OUTPUT_CAP

        book = self.tracker.pricebook
        out = call.output_cap
        if out is None:
            out = book.output_cap(call.provider, call.model) or DEFAULT_OUTPUT_CAP
        epoch = call.ts.replace(tzinfo=dt.UTC).timestamp()
        return book.worst_case_nanos(call.provider, call.model, call.input_upper, out, epoch)

    def _refusal(
        self, conn: Connection, budget: Any, period_id: int, amount: int | None, reason: str | None
    ) -> BudgetExceeded:
        p = run(conn, _REFUSAL, {"id": period_id}).one()
        end = py_time(p.period_end)
        return BudgetExceeded(
            budget=budget.name,
            scope=budget.scope,
            period=budget.period,
            limit=nanos_to_usd(p.limit_nanos),
            spent=nanos_to_usd(p.spent_nanos),
            reserved=nanos_to_usd(p.reserved_nanos),
            estimate=None if amount is None else nanos_to_usd(amount),
            resets_at=None if end is None else end.replace(tzinfo=dt.UTC),
            reason=reason,
        )

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
    def settle(self, conn: Connection, call: Call, row: dict[str, Any]) -> None:
        held: Held | None = call.reservation
        if held is None or not held.periods:
            return
        cost = row.get("cost_nanos") or 0
        if row.get("status") == "refused":
            cost = 0
        released = run(conn, _UNHOLD, {"token": held.token}).all()
        still_held = {pid: amount for pid, amount in released}
        now = db_time(conn, utcnow())
        groups: dict[tuple[int, int], list[int]] = {}
        for pid in sorted(held.periods):
            # one UPDATE per amount on SQLite; row by row, in id order, on PostgreSQL
            key = (still_held.get(pid, 0), 0 if conn.dialect.name == "sqlite" else pid)
            groups.setdefault(key, []).append(pid)
        for (amount, _), pids in sorted(groups.items(), key=lambda kv: kv[1][0]):
            ids = ", ".join(str(int(i)) for i in pids)  # integers from the store
            sql = SQL(_SETTLE.text.replace("{ids}", ids))
            run(conn, sql, {"held": amount, "cost": cost, "now": now})
        call.reservation = None
        if row.get("status") != "refused":
            from ..alerting.events import decide_thresholds

            call.events.extend(decide_thresholds(conn, call, sorted(held.periods), cost))
