"""Spend split by groups: breakdowns, the usage report, and the org/project/user levels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..budgets.manage import budget_status
from ..errors import ValidationError
from ..store.rollups import MEASURES
from .frames import (
    CALLS,
    COST,
    MEASURE_COLUMNS,
    Filter,
    acc_rows,
    filters_of,
    measures_frame,
    resolve_store,
    served,
    share,
    sort_key,
    usd,
    window,
)
from .query import HI_INF, LO_INF, aggregate, parse_keys, total

if TYPE_CHECKING:
    import pandas as pd

    from ..budgets.spec import BudgetStatus
    from ..store.engine import Store

__all__ = [
    "LEVELS",
    "aggregated_spending",
    "breakdown_frame",
    "cost_breakdown",
    "grouped",
    "usage_report",
]


def grouped(
    store: Store,
    keys: tuple[str, ...],
    since: Any,
    until: Any,
    flt: dict[str, Any],
) -> list[tuple[tuple[Any, ...], list[int]]]:
    """(group key, sums) over ``[since, until)``, unordered."""
    lo, hi = window(since, until)
    lo = LO_INF if lo is None else lo
    hi = HI_INF if hi is None else hi
    if lo >= hi:
        return []
    return acc_rows(aggregate(store, [lo, hi], keys, flt))


def _with_share(frame: pd.DataFrame, rows: list[tuple[tuple[Any, ...], list[int]]]) -> None:
    whole = sum(r[1][COST] for r in rows)
    frame["cost_share"] = pd_float([share(r[1][COST], whole) for r in rows])


def pd_float(values: list[float]) -> Any:
    import pandas as pd

    return pd.Series(values, dtype="float64")


def breakdown_frame(
    rows: list[tuple[tuple[Any, ...], list[int]]], keys: tuple[str, ...]
) -> pd.DataFrame:
    """(key, sums) rows as a :func:`cost_breakdown` frame: most expensive first."""
    rows = sorted(rows, key=lambda r: (-r[1][COST], -r[1][CALLS], [sort_key(v) for v in r[0]]))
    frame = measures_frame(rows, keys)
    _with_share(frame, rows)
    return frame


@served
def cost_breakdown(
    by: Any = "model",
    since: Any = None,
    until: Any = None,
    *,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Spend per group over ``[since, until)``, the most expensive first.

    ``by``: a column or a list of columns: ``org``, ``project``, ``user``, ``provider``,
    ``model`` (read from the rollups), or ``api``, ``status``, ``price_status``,
    ``requested_model``, ``error_type``, ``session_id``, ``notebook_path``, ``streamed``,
    ``usage_estimated`` and ``tag:NAME`` (the value of tag NAME; ``None`` for calls
    without it), which are read from the raw rows in range (slower on big ranges).

    Columns: the ``by`` columns, the measure columns (``cost_usd``, ``calls``,
    ``input_tokens``, ``output_tokens``, ``cached_input_tokens``, ``cache_write_tokens``,
    ``reasoning_tokens``, ``error_calls``, ``refused_calls``, ``unpriced_calls``) and
    ``cost_share`` (the group's fraction of the total known cost, a float).
    """
    keys = parse_keys(by)
    flt = filters_of(org, project, user, provider, model, filters)
    return breakdown_frame(grouped(resolve_store(store), keys, since, until, flt), keys)


@served
def usage_report(
    group_by: Any = ("org", "project", "user", "model"),
    since: Any = None,
    until: Any = None,
    *,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Every measure per ``group_by`` group, sorted by the group columns.

    Columns: the ``group_by`` columns (any column :func:`cost_breakdown` accepts), the
    measure columns and ``cost_share``. ``frame.attrs["totals"]`` holds the column sums
    (``cost_usd`` as Decimal, the others as int).
    """
    keys = parse_keys(group_by, what="group_by")
    flt = filters_of(org, project, user, provider, model, filters)
    rows = grouped(resolve_store(store), keys, since, until, flt)
    rows.sort(key=lambda r: [sort_key(v) for v in r[0]])
    frame = measures_frame(rows, keys)
    _with_share(frame, rows)
    sums = total({(0, r[0]): r[1] for r in rows})
    frame.attrs["totals"] = {
        name: usd(sums[COST]) if name == "cost_usd" else sums[MEASURES.index(name)]
        for name in MEASURE_COLUMNS
    }
    return frame


#: Hierarchy level → the group columns that name an entity of that level.
LEVELS: dict[str, tuple[str, ...]] = {
    "org": ("org",),
    "project": ("org", "project"),
    "user": ("org", "user"),
}
BUDGET_COLUMNS: tuple[str, ...] = (
    "budget", "budget_period", "budget_limit_usd", "budget_spent_usd", "budget_remaining_usd",
    "budget_percent_used", "budget_state",
)  # fmt: skip


def _budget_entity(level: str, status: BudgetStatus) -> tuple[str, ...] | None:
    if status.scope != level:
        return None
    parts = tuple(status.budget.split("/"))
    return parts if len(parts) == len(LEVELS[level]) else None


def _matches(entity: tuple[str, ...], level: str, flt: dict[str, Any]) -> bool:
    """Whether a budget-only entity passes the filters (only its own columns may be set)."""
    if not set(flt) <= set(LEVELS[level]):
        return False
    for name, value in zip(LEVELS[level], entity, strict=True):
        wanted = flt.get(name)
        if wanted is not None and value not in ([wanted] if isinstance(wanted, str) else wanted):
            return False
    return True


@served
def aggregated_spending(
    level: str = "project",
    since: Any = None,
    until: Any = None,
    *,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Spending and budget utilization per org, project or user (``level``).

    Spending is summed over ``[since, until)``; utilization is the entity's own budget
    in its *current* period (``org`` budget ``acme``, ``project`` budget ``acme/churn``,
    ``user`` budget ``acme/ana``, i.e. the user across the org). Entities with a budget
    but no spending in range are listed with zeros (unless provider/model or other usage
    filters are set, which budgets do not have).

    Columns: ``org`` and ``project`` (level project) or ``user`` (level user), the measure
    columns, ``cost_share``, then ``budget`` (name or None), ``budget_period``,
    ``budget_limit_usd``, ``budget_spent_usd``, ``budget_remaining_usd`` (Decimal),
    ``budget_percent_used`` (0–100 float) and ``budget_state`` (ok/warning/exceeded).
    Sorted by cost, descending.
    """
    import pandas as pd

    if level not in LEVELS:
        raise ValidationError(f"unknown level {level!r}; use one of: {', '.join(LEVELS)}")
    keys = LEVELS[level]
    flt = filters_of(org, project, user, provider, model, filters)
    st = resolve_store(store)
    rows = grouped(st, keys, since, until, flt)
    statuses = {}
    for s in budget_status(st, scope=level):
        entity = _budget_entity(level, s)
        if entity is not None:
            statuses[entity] = s
    seen = {r[0] for r in rows}
    zero = [0] * len(MEASURES)
    rows += [(e, list(zero)) for e in statuses if e not in seen and _matches(e, level, flt)]
    rows.sort(key=lambda r: (-r[1][COST], -r[1][CALLS], [sort_key(v) for v in r[0]]))
    frame = measures_frame(rows, keys)
    _with_share(frame, rows)
    found = [statuses.get(r[0]) for r in rows]
    frame["budget"] = pd.Series([s.budget if s else None for s in found], dtype=object)
    frame["budget_period"] = pd.Series([s.period if s else None for s in found], dtype=object)
    for col, attr in (
        ("budget_limit_usd", "limit_usd"),
        ("budget_spent_usd", "spent_usd"),
        ("budget_remaining_usd", "remaining_usd"),
    ):
        frame[col] = pd.Series([getattr(s, attr) if s else None for s in found], dtype=object)
    frame["budget_percent_used"] = pd.Series(
        [s.percent_used if s else float("nan") for s in found], dtype="float64"
    )
    frame["budget_state"] = pd.Series([s.state if s else None for s in found], dtype=object)
    return frame
