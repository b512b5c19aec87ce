"""Everything a dashboard shows, in one call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .breakdown import breakdown_frame, grouped
from .frames import Filter, filters_of, measures_frame, resolve_store, served, window
from .query import total
from .status import alerts_summary, budget_utilization
from .trends import realtime_metrics, spending_trends

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = ["DASHBOARD_KEYS", "dashboard_data"]

DASHBOARD_KEYS = ("totals", "trend", "by_model", "by_project", "by_user", "budgets", "alerts",
                  "realtime")  # fmt: skip


def _regroup(
    rows: list[tuple[tuple[Any, ...], list[int]]], positions: tuple[int, ...]
) -> list[tuple[tuple[Any, ...], list[int]]]:
    out: dict[tuple[Any, ...], list[int]] = {}
    for key, sums in rows:
        k = tuple(key[i] for i in positions)
        acc = out.get(k)
        if acc is None:
            out[k] = list(sums)
        else:
            for i, v in enumerate(sums):
                acc[i] += v
    return list(out.items())


@served
def dashboard_data(
    since: Any = "30d",
    until: Any = None,
    *,
    granularity: str = "day",
    tz: Any = "UTC",
    realtime_window: Any = "15m",
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
) -> dict[str, pd.DataFrame]:
    """The data of a spend dashboard over ``[since, until)`` (default: the last 30 days).

    Returns a dict of DataFrames:

    ``totals``      one row: the measure columns over the range
    ``trend``       :func:`spending_trends` (``granularity``, ``tz``, gaps filled)
    ``by_model``    :func:`cost_breakdown` by ``provider``, ``model``
    ``by_project``  :func:`cost_breakdown` by ``org``, ``project``
    ``by_user``     :func:`cost_breakdown` by ``org``, ``user``
    ``budgets``     :func:`budget_utilization` (current periods; org/project/user filters)
    ``alerts``      :func:`alerts_summary` over the range
    ``realtime``    :func:`realtime_metrics` over the last ``realtime_window``

    The three breakdowns and the totals come from one query grouped by every dimension.
    """
    flt = filters_of(org, project, user, provider, model, {})
    lo, hi = window(since, until)  # validated once, up front
    st = resolve_store(store)
    dims = ("org", "project", "user", "provider", "model")  # what the full rollups keep
    base = grouped(st, dims, lo, hi, flt)
    pos = {name: i for i, name in enumerate(dims)}
    totals = measures_frame([((), total({(0, k): v for k, v in base}))], ())
    return {
        "totals": totals,
        "trend": spending_trends(granularity, lo, hi, tz=tz, fill_gaps=True, store=st, **flt),
        "by_model": breakdown_frame(
            _regroup(base, (pos["provider"], pos["model"])), ("provider", "model")
        ),
        "by_project": breakdown_frame(
            _regroup(base, (pos["org"], pos["project"])), ("org", "project")
        ),
        "by_user": breakdown_frame(_regroup(base, (pos["org"], pos["user"])), ("org", "user")),
        "budgets": budget_utilization(
            store=st, **{k: v for k, v in flt.items() if k in ("org", "project", "user")}
        ),
        "alerts": alerts_summary(lo, hi, store=st, **flt),
        "realtime": realtime_metrics(realtime_window, store=st, **flt),
    }
