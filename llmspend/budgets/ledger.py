"""The budget ledger: budgets and their periods, as the call path reads and makes them.

Which budgets apply to an (org, project, user) — explicit ones, and defaults turned into
the child's own budget on first use (:func:`materialize`) — and the period row of each
that contains a moment (made lazily, counting spend already recorded: no background job
rolls periods over). Reservations and their holds are in :mod:`.holds`; the statements
here are constant text with bound values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, select, update

from ..store.fastsql import SQL, Tx, db_time, py_time, run
from ..store.models import Budget as BudgetRow
from ..store.models import BudgetPeriod
from ..timeutil import utcnow
from .periods import TOTAL_START, current_bounds

__all__ = [
    "BUDGET_COLS",
    "LOOKUP",
    "Period",
    "Statements",
    "Target",
    "candidate_budgets",
    "count_ingested",
    "current_periods",
    "ensure_period",
    "id_list",
    "known_targets",
    "materialize",
    "recorded_spend",
    "recount_current",
    "resolve",
    "targets_of",
]


class Target(NamedTuple):
    """One budget that applies to a call, and the id and start of its current period."""

    period_id: int
    period_start: dt.datetime
    budget: Any  # a row of BUDGET_COLS


BUDGET_COLS = (
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
_COLS = ", ".join([c.key for c in BUDGET_COLS] + ["created_at"])
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
LOOKUP = SQL(
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


def known_targets(rows: list[Any], project: str, user: str, now: dt.datetime) -> Any:
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


def targets_of(
    conn: Connection | Tx, period_ids: Sequence[int], at: dt.datetime
) -> dict[int, Target]:
    """Those of the periods ``period_ids`` that are their budget's period containing
    ``at`` (as the budget is defined now), as targets."""
    if not period_ids:
        return {}
    sql = SQL(
        "SELECT p.id AS period_id, p.period_start AS period_start, "  # noqa: S608
        + ", ".join(f"b.{c}" for c in _COLS.split(", "))
        + " FROM llmspend_budget_periods p JOIN llmspend_budgets b ON b.id = p.budget_id "
        f"WHERE p.id IN ({id_list(period_ids)})"
    )
    found = {}
    for r in run(conn, sql).all():
        start = py_time(r.period_start) or TOTAL_START
        if start == current_bounds(r.period, r.timezone, at, week_start=r.week_start)[0]:
            found[r.period_id] = Target(r.period_id, start, r)
    return found


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
    spent, calls = recorded_spend(tx, budget, start, end)
    tx.run(
        _NEW_PERIOD,
        {
            **key,
            "end": db_time(tx, end),
            "limit_nanos": budget.limit_nanos,
            "spent": spent,
            "calls": calls,
            "now": db_time(tx, now),
        },
    )
    return _period(tx.run(_PERIOD, key).one())


def budget_and_children(conn: Connection, budget_id: int) -> list[Any]:
    """The budget's row and those of the budgets derived from it (a default's per-user
    children), without the default itself: the budgets that have period rows."""
    return list(
        conn.execute(
            select(*BUDGET_COLS).where(
                (BudgetRow.id == budget_id) | (BudgetRow.derived_from == budget_id),
                BudgetRow.default_for == "",
            )
        ).all()
    )


def recount_current(conn: Connection, budget_id: int, now: dt.datetime) -> None:
    """After a budget's period kind, time zone or week start changed: the current period row
    of the budget (and of its derived children) under the new definition, if one is left
    from an earlier time under that definition (month, then day, then month again), counted
    again from the calls recorded in it. It missed those recorded under the other
    definition; calls still in flight are charged to it when they settle."""
    tx = Tx.of(conn)
    for budget in budget_and_children(conn, budget_id):
        start, end = current_bounds(
            budget.period, budget.timezone, now, week_start=budget.week_start
        )
        row = tx.run(_PERIOD, {"budget_id": budget.id, "start": db_time(tx, start)}).first()
        if row is not None:
            spent, calls = recorded_spend(tx, budget, start, end)
            conn.execute(
                update(BudgetPeriod)
                .where(BudgetPeriod.id == row.id)
                .values(spent_nanos=spent, calls=calls, updated_at=now)
            )


def recorded_spend(
    tx: Tx, budget: Any, start: dt.datetime, end: dt.datetime | None
) -> tuple[int, int]:
    """(nanodollars, calls) of the usage rows recorded in a budget's period ``[start, end)``:
    what a new period row starts from."""
    window = {
        "org": budget.org_name,
        "project": budget.project_name,
        "user": budget.user_name,
        "start": db_time(tx, start),
        "end": db_time(tx, end),
    }
    spent, calls = tx.run(_spent_sql(budget, end is not None), window).one()
    return int(spent or 0), int(calls)


def id_list(ids: Any) -> str:
    return ", ".join(str(int(i)) for i in ids)  # integers from the store, never input


_CURRENT = SQL(
    "SELECT budget_id, id, period_start, period_end, limit_nanos, spent_nanos, reserved_nanos, "
    "calls FROM llmspend_budget_periods WHERE budget_id IN ({ids}) AND period_start <= :now "
    "AND (period_end IS NULL OR period_end > :now)"
)


def current_periods(
    conn: Connection | Tx, budgets: list[Any], now: dt.datetime, *, create: bool = True
) -> list[tuple[Any, Period]]:
    """The current period of each budget: one query, creating only the missing ones
    (``create=False``: leaving out the budgets without one)."""
    if not budgets:
        return []
    tx = Tx.of(conn)
    found: dict[tuple[int, dt.datetime | None], Any] = {}
    sql = SQL(_CURRENT.text.replace("{ids}", id_list(b.id for b in budgets)))
    for r in tx.run(sql, {"now": db_time(tx, now)}).all():
        found[(r.budget_id, py_time(r.period_start))] = r
    out = []
    for b in budgets:
        start, _ = current_bounds(b.period, b.timezone, now, week_start=b.week_start)
        row = found.get((b.id, start))
        if row is not None:
            out.append((b, _period(row)))
        elif create:
            out.append((b, ensure_period(tx, b, now)))
    return out


class Statements:
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


def count_ingested(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add ingested rows to the periods that already exist, so status agrees with
    ``records()`` (periods made later count existing rows when they are made).

    Set-based: the batch is grouped once by org × project × user with its times sorted
    and costs summed cumulatively; a period's calls and spend are then two binary searches
    per group it covers, whatever the batch size. ``rows`` may carry ``columns`` (store
    column → array, as :mod:`llmspend.bulkload` gives), read instead of the dicts.
    """
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
    if not periods or not len(rows):
        return
    batch = _IngestedBatch(rows)
    now = utcnow()
    for p in periods:
        calls, spent = batch.sums(p.org_name, p.project_name, p.user_name,
                                  p.period_start, p.period_end)  # fmt: skip
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


class _IngestedBatch:
    """Ingested rows (refused ones left out) per org, project and user: times sorted, and
    cumulative cost split in 32-bit halves (int64 sums of each half cannot overflow, and
    the halves recombine exactly as Python ints)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        import numpy as np
        import pandas as pd

        cols = getattr(rows, "columns", None)
        names = ("org_name", "project_name", "user_name", "ts", "cost_nanos", "status")
        if cols is None:
            cols = {k: [r[k] for r in rows] for k in names}
        frame = pd.DataFrame({k: cols[k] for k in names})
        frame = frame[frame["status"] != "refused"]
        ts = frame["ts"].to_numpy(dtype="datetime64[us]").view(np.int64)
        cost = frame["cost_nanos"].fillna(0).to_numpy(dtype=np.int64)
        self.by_org: dict[str, list[tuple[str, str, Any, Any, Any]]] = {}
        groups = frame.groupby(["org_name", "project_name", "user_name"], sort=False).indices
        for key, where in groups.items():
            org, project, user = cast(tuple[str, str, str], key)
            order = where[np.argsort(ts[where], kind="stable")]
            c = cost[order]
            hi = np.concatenate(([0], np.cumsum(c >> 32)))
            lo = np.concatenate(([0], np.cumsum(c & 0xFFFFFFFF)))
            self.by_org.setdefault(org, []).append((project, user, ts[order], hi, lo))

    def sums(
        self, org: str, project: str | None, user: str | None,
        start: dt.datetime, end: dt.datetime | None,
    ) -> tuple[int, int]:  # fmt: skip
        """(calls, nanodollars) of the rows of ``org`` (and ``project``/``user`` unless
        None or "*") with ``start <= ts < end`` (``end`` None: unbounded)."""
        import numpy as np

        lo_t = np.datetime64(start, "us").astype(np.int64)
        hi_t = None if end is None else np.datetime64(end, "us").astype(np.int64)
        calls = spent = 0
        for g_project, g_user, ts, hi, lo in self.by_org.get(org, ()):
            if project not in (None, "*") and g_project != project:
                continue
            if user not in (None, "*") and g_user != user:
                continue
            a = int(np.searchsorted(ts, lo_t, "left"))
            b = len(ts) if hi_t is None else int(np.searchsorted(ts, hi_t, "left"))
            if b > a:
                calls += b - a
                spent += (int(hi[b] - hi[a]) << 32) + int(lo[b] - lo[a])
        return calls, spent
