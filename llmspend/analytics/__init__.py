"""Spend analytics: pandas frames over the usage store, fast at millions of rows.

Every function takes ``since`` (inclusive) and ``until`` (exclusive) — datetimes (naive
means UTC), dates, ISO strings or spans such as ``"7d"``, ``"24h"``, ``"30m"`` — and the
filters ``org``, ``project``, ``user``, ``provider``, ``model`` (a name or a list of
names; usage functions also take the other ``records()`` filters ``api``, ``status``,
``price_status``, ``session_id``, ``request_id``). They read the current tracker's store
(``store=`` to pass another). Unknown filters or columns, unparseable times and bad
choices raise :class:`llmspend.ValidationError`; nothing matching gives an empty frame
with the documented columns.

Conventions: money is exact ``Decimal`` USD in ``*_usd`` columns (object dtype); counts
and tokens are int64; time buckets are in ``period`` (the bucket start, tz-aware, in
``tz=`` where buckets are computed, UTC by default); group columns are named as in
``records()``. The **measure columns**, in this order, are:

==========================  ==================================================================
``cost_usd``                sum of known costs (calls of unknown price add nothing)
``calls``                   number of calls (records), every status
``input_tokens``            input tokens, cached and cache-write included
``output_tokens``           output tokens, reasoning included
``cached_input_tokens``     the cached subset of input
``cache_write_tokens``      the cache-write subset of input
``reasoning_tokens``        the reasoning subset of output
``error_calls``             calls with status ``error``
``refused_calls``           calls a budget refused (``refused``; nothing was sent)
``unpriced_calls``          calls whose cost is unknown (``price_status`` ``unknown``)
==========================  ==================================================================

The functions and their columns (``<m>`` stands for each measure column):

``spending_trends(granularity="day", by=None, tz="UTC", fill_gaps=False)``
    ``period``, the ``by`` columns, the measures
``cost_breakdown(by="model")``
    the ``by`` columns, the measures, ``cost_share``
``usage_comparison(current="7d", previous=None, by="model")``
    the ``by`` columns; ``<m>_current``, ``<m>_previous``, ``<m>_change``,
    ``<m>_change_pct`` for ``cost_usd``, ``calls``, ``input_tokens``, ``output_tokens``
``realtime_metrics(window="15m")``
    one row: ``window_start``, ``window_end``, the measures,
    ``burn_rate_usd_per_hour``, ``calls_per_minute``, ``tokens_per_minute``, ``error_rate``
``usage_report(group_by=("org", "project", "user", "model"))``
    the ``group_by`` columns, the measures, ``cost_share``
``aggregated_spending(level="project")``
    ``org`` (and ``project`` or ``user``), the measures, ``cost_share``, ``budget``,
    ``budget_period``, ``budget_limit_usd``, ``budget_spent_usd``,
    ``budget_remaining_usd``, ``budget_percent_used``, ``budget_state``
``budget_utilization()``
    ``budget``, ``scope``, ``org``, ``project``, ``user``, ``mode``, ``period``,
    ``period_start``, ``period_end``, ``limit_usd``, ``spent_usd``, ``reserved_usd``,
    ``remaining_usd``, ``percent_used``, ``state``, ``projected_usd``, ``calls``,
    ``inherited``, ``current``
``budget_recommendations()``
    ``kind`` (``forecast`` / ``cheaper_model``), ``budget``, ``scope``, ``period``,
    ``period_start``, ``period_end``, ``limit_usd``, ``spent_usd``, ``daily_rate_usd``,
    ``forecast_usd``, ``forecast_low_usd``, ``forecast_high_usd``, ``will_exceed``,
    ``suggested_limit_usd``, ``provider``, ``model``, ``alternative_provider``,
    ``alternative_model``, ``calls``, ``cost_usd``, ``alternative_cost_usd``,
    ``saving_usd``, ``saving_pct``, ``note`` (methods: :mod:`llmspend.analytics.recommend`)
``alerts_summary()``
    ``budget``, ``scope``, ``org``, ``project``, ``user``, ``alerts``,
    ``threshold_alerts``, ``refusals``, ``unacknowledged``, ``max_threshold``,
    ``max_percent_used``, ``first_ts``, ``last_ts``, ``last_spent_usd``, ``limit_usd``
``dashboard_data()``
    a dict of frames: ``totals``, ``trend``, ``by_model``, ``by_project``, ``by_user``,
    ``budgets``, ``alerts``, ``realtime``
``rebuild_rollups()``
    recomputes the rollups from the raw rows (also ``llmspend db rebuild-rollups``)

Groupings (``by``/``group_by``): ``org``, ``project``, ``user``, ``provider``, ``model``
come from the rollups; ``api``, ``status``, ``price_status``, ``requested_model``,
``error_type``, ``session_id``, ``notebook_path``, ``streamed``, ``usage_estimated`` and
``tag:NAME`` (the value of tag ``NAME``, None for calls without it) are read from the raw
rows in range, as are the filters other than the five above.

How it is fast: usage is summed into rollup tables per hour, day and week (and quarter
hour for the two narrower families), in three families — full (org × project × user ×
provider × model), team (without the user) and model (provider × model) — in the same
transaction that writes each record (PostgreSQL) or just before the next read (SQLite;
:mod:`llmspend.store.rollups`). A query reads the narrowest family that keeps the
dimensions it groups or filters by, whole weeks and days from the coarse tables, and only
the hours, quarter hours and partial ones at the edges of a range (or of a time-zone
bucket) from the finer tables and raw rows, so its cost follows the answer's size and the
number of edges, not the number of distinct org × project × user × model × hour
combinations; the result equals a computation over ``records()`` exactly
(:mod:`llmspend.analytics.query`). Grouping by a column the rollups do not keep (``api``,
``status``, ``tag:NAME``, ...) or filtering on one reads raw rows.
"""

from __future__ import annotations

from .breakdown import aggregated_spending, cost_breakdown, usage_report
from .dashboard import dashboard_data
from .frames import MEASURE_COLUMNS, rebuild_rollups
from .recommend import budget_recommendations
from .status import alerts_summary, budget_utilization
from .trends import realtime_metrics, spending_trends, usage_comparison

__all__ = [
    "MEASURE_COLUMNS",
    "aggregated_spending",
    "alerts_summary",
    "budget_recommendations",
    "budget_utilization",
    "cost_breakdown",
    "dashboard_data",
    "realtime_metrics",
    "rebuild_rollups",
    "spending_trends",
    "usage_comparison",
    "usage_report",
]
