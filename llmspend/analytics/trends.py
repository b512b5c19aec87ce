"""Spend over time: trends per bucket, one window against another, the last minutes."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..store.rollups import MEASURES
from ..timeutil import parse_span, parse_when, utcnow
from . import buckets
from .frames import (
    CALLS,
    COST,
    MEASURE_COLUMNS,
    Filter,
    empty_frame,
    filters_of,
    measures_frame,
    period_dtype,
    resolve_store,
    served,
    share,
    sort_key,
    usd,
    window,
)
from .query import aggregate, data_bounds, parse_keys, total

if TYPE_CHECKING:
    import pandas as pd

    from ..store.engine import Store

__all__ = ["COMPARED", "realtime_metrics", "spending_trends", "usage_comparison"]

_US = dt.timedelta(microseconds=1)


def _measure_types() -> dict[str, Any]:
    return {m: (object if m == "cost_usd" else "int64") for m in MEASURE_COLUMNS}


@served
def spending_trends(
    granularity: str = "day",
    since: Any = None,
    until: Any = None,
    *,
    by: Any = None,
    tz: Any = "UTC",
    fill_gaps: bool = False,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Spend per time bucket: one row per ``period`` (and ``by`` group) with usage.

    ``granularity``: ``"hour"``, ``"day"``, ``"week"`` (starting Monday) or ``"month"``,
    on calendar boundaries in ``tz`` (default UTC). ``period`` is the bucket start as a
    tz-aware timestamp; the first and last buckets are clipped to ``since``/``until`` but
    keep their full start as label. ``by``: optional group column(s), as in
    :func:`cost_breakdown`. ``fill_gaps=True`` (without ``by``) adds zero rows for buckets
    without calls between the first and last bucket (or ``since``/``until`` when given),
    as long as some bucket has calls (nothing matching stays an empty frame).

    Columns: ``period``, the ``by`` columns, then the measure columns (``cost_usd``,
    ``calls``, ``input_tokens``, ``output_tokens``, ``cached_input_tokens``,
    ``cache_write_tokens``, ``reasoning_tokens``, ``error_calls``, ``refused_calls``,
    ``unpriced_calls``). Sorted by ``period`` then the group columns.
    """
    import pandas as pd

    gran = buckets.check_granularity(granularity)
    zone = buckets.check_tz(tz)
    keys = parse_keys(by)
    flt = filters_of(org, project, user, provider, model, filters)
    lo, hi = window(since, until)
    st = resolve_store(store)
    columns = {"period": period_dtype(zone), **dict.fromkeys(keys, object), **_measure_types()}
    with st.begin() as conn:
        extent = data_bounds(conn)
    if extent is None:
        if not (fill_gaps and not keys and lo is not None and hi is not None):
            return empty_frame(columns)
        eff_lo, eff_hi = lo, hi
    else:
        first, last = extent
        eff_lo = max(lo, first) if lo is not None else first
        eff_hi = min(hi, last + _US) if hi is not None else last + _US
        if fill_gaps and not keys:
            eff_lo = lo if lo is not None else eff_lo
            eff_hi = hi if hi is not None else eff_hi
    if eff_lo >= eff_hi:
        return empty_frame(columns)
    starts = buckets.period_bounds(gran, zone, eff_lo, eff_hi)
    bounds = list(starts)
    if lo is not None:
        bounds[0] = max(bounds[0], lo)
    if hi is not None:
        bounds[-1] = min(bounds[-1], hi)
    acc = aggregate(st, bounds, keys, flt, use_days=gran != "hour")
    if fill_gaps and not keys and acc:
        for i in range(len(bounds) - 1):
            acc.setdefault((i, ()), [0] * len(MEASURES))
    labels = buckets.labels(starts, zone)
    entries = sorted(acc.items(), key=lambda e: (e[0][0], [sort_key(v) for v in e[0][1]]))
    frame = measures_frame([(key, sums) for (_, key), sums in entries], keys)
    frame.insert(0, "period", pd.Series(labels.take([p for (p, _), _ in entries])))
    return frame


# -- comparing two windows -------------------------------------------------------------------

#: The measures :func:`usage_comparison` compares.
COMPARED: tuple[str, ...] = ("cost_usd", "calls", "input_tokens", "output_tokens")


def _span(value: Any, what: str) -> dt.timedelta | None:
    if isinstance(value, dt.timedelta):
        if value <= dt.timedelta(0):
            raise ValidationError(f"{what}: a window must be longer than zero, got {value}")
        return value
    if isinstance(value, str):
        try:
            span = parse_span(value)
        except ValidationError:
            return None
        if span <= dt.timedelta(0):
            raise ValidationError(f"{what}: a window must be longer than zero, got {value!r}")
        return span
    return None


def _range(value: Any, what: str, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """A window: a span ending at ``end``, or a (since, until) pair."""
    span = _span(value, what)
    if span is not None:
        return end - span, end
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = (
            parse_when(value[0], name=f"{what} since"),
            parse_when(value[1], name=f"{what} until"),
        )
        if lo is None or hi is None:
            raise ValidationError(f"{what}: a (since, until) window needs both ends")
        if lo > hi:
            raise ValidationError(f"{what}: since is after until in {value!r}")
        return lo, hi
    raise ValidationError(
        f"{what}: expected a span such as '7d', a timedelta or a (since, until) pair, got {value!r}"
    )


def _pct(change: int, before: int) -> float:
    return float(Fraction(change * 100, before)) if before else float("nan")


@served
def usage_comparison(
    current: Any = "7d",
    previous: Any = None,
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
    """Usage in a window against the window before it, per ``by`` group.

    ``current``: a span (``"7d"``, ``"24h"``, a timedelta) ending at ``until`` (default
    now), or a ``(since, until)`` pair; ``since=`` (with optional ``until=``) also sets it.
    ``previous``: ``None`` for the same-length window right before ``current``, a span
    ending where ``current`` starts, or a ``(since, until)`` pair.

    Columns: the ``by`` columns, then for each of ``cost_usd``, ``calls``,
    ``input_tokens``, ``output_tokens``: ``<m>_current``, ``<m>_previous``, ``<m>_change``
    (current − previous; Decimal for cost) and ``<m>_change_pct`` (float percent of the
    previous value; NaN when it was 0). Groups seen in either window appear; sorted by
    ``cost_usd_current`` then ``cost_usd_previous``, descending. ``frame.attrs`` holds
    ``current_start``, ``current_end``, ``previous_start``, ``previous_end`` (UTC).
    """
    import pandas as pd

    keys = parse_keys(by)
    flt = filters_of(org, project, user, provider, model, filters)
    end = parse_when(until, name="until") or utcnow()
    if since is not None:
        cur = _range((since, end), "current", end)
    else:
        cur = _range(current, "current", end)
    if previous is None:
        prev = (cur[0] - (cur[1] - cur[0]), cur[0])
    else:
        prev = _range(previous, "previous", cur[0])
    st = resolve_store(store)
    if prev[1] == cur[0]:
        acc = aggregate(st, [prev[0], cur[0], cur[1]], keys, flt)
        now_acc = {k: v for (p, k), v in acc.items() if p == 1}
        before = {k: v for (p, k), v in acc.items() if p == 0}
    else:
        now_acc = {k: v for (_, k), v in aggregate(st, list(cur), keys, flt).items()}
        before = {k: v for (_, k), v in aggregate(st, list(prev), keys, flt).items()}
    zero = [0] * len(MEASURES)
    groups = sorted(
        set(now_acc) | set(before),
        key=lambda k: (
            -now_acc.get(k, zero)[COST],
            -before.get(k, zero)[COST],
            [sort_key(v) for v in k],
        ),
    )
    data: dict[str, Any] = {
        name: pd.Series([g[i] for g in groups], dtype=object) for i, name in enumerate(keys)
    }
    for m in COMPARED:
        idx = MEASURES.index("cost_nanos" if m == "cost_usd" else m)
        a = [now_acc.get(g, zero)[idx] for g in groups]
        b = [before.get(g, zero)[idx] for g in groups]
        if m == "cost_usd":
            data[f"{m}_current"] = pd.Series([usd(x) for x in a], dtype=object)
            data[f"{m}_previous"] = pd.Series([usd(x) for x in b], dtype=object)
            data[f"{m}_change"] = pd.Series([usd(x - y) for x, y in zip(a, b, strict=True)],
                                            dtype=object)  # fmt: skip
        else:
            data[f"{m}_current"] = pd.Series(a, dtype="int64")
            data[f"{m}_previous"] = pd.Series(b, dtype="int64")
            data[f"{m}_change"] = pd.Series([x - y for x, y in zip(a, b, strict=True)],
                                            dtype="int64")  # fmt: skip
        data[f"{m}_change_pct"] = pd.Series(
            [_pct(x - y, y) for x, y in zip(a, b, strict=True)], dtype="float64"
        )
    frame = pd.DataFrame(data)
    utc = dt.UTC
    frame.attrs.update(
        current_start=cur[0].replace(tzinfo=utc),
        current_end=cur[1].replace(tzinfo=utc),
        previous_start=prev[0].replace(tzinfo=utc),
        previous_end=prev[1].replace(tzinfo=utc),
    )
    return frame


# -- the last minutes ------------------------------------------------------------------------

REALTIME_COLUMNS: tuple[str, ...] = (
    "window_start", "window_end", *MEASURE_COLUMNS, "burn_rate_usd_per_hour",
    "calls_per_minute", "tokens_per_minute", "error_rate",
)  # fmt: skip


@served
def realtime_metrics(
    window: Any = "15m",
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
    """Calls, tokens, dollars and errors over the last ``window`` (``"15m"``, a timedelta).

    The window ends at ``until`` (default now); ``since=`` sets its start instead. Always
    one row (zeros when nothing matched), with ``window_start``, ``window_end`` (UTC), the
    measure columns, ``burn_rate_usd_per_hour`` (Decimal: cost × 3600 s / window length,
    rounded half-even to the nanodollar), ``calls_per_minute``, ``tokens_per_minute``
    (input + output) and ``error_rate`` (error_calls / calls, 0.0 without calls), floats.
    """
    import pandas as pd

    flt = filters_of(org, project, user, provider, model, filters)
    end = parse_when(until, name="until") or utcnow()
    if since is not None:
        start, end = _range((since, end), "window", end)
    else:
        start, end = _range(window, "window", end)
    t = total(aggregate(resolve_store(store), [start, end], (), flt, use_days=False))
    micros = (end - start) // dt.timedelta(microseconds=1)
    row = measures_frame([((), t)], ())
    utc = dt.UTC
    row.insert(0, "window_start", pd.Series([pd.Timestamp(start.replace(tzinfo=utc))],
                                            dtype=period_dtype(utc)))  # fmt: skip
    row.insert(1, "window_end", pd.Series([pd.Timestamp(end.replace(tzinfo=utc))],
                                          dtype=period_dtype(utc)))  # fmt: skip
    calls = t[CALLS]
    tokens = t[MEASURES.index("input_tokens")] + t[MEASURES.index("output_tokens")]
    if micros > 0:
        burn = _round_half_even(Fraction(t[COST] * 3600 * 10**6, micros))
        row["burn_rate_usd_per_hour"] = pd.Series([usd(burn)], dtype=object)
        row["calls_per_minute"] = float(Fraction(calls * 60 * 10**6, micros))
        row["tokens_per_minute"] = float(Fraction(tokens * 60 * 10**6, micros))
    else:
        row["burn_rate_usd_per_hour"] = pd.Series([usd(0)], dtype=object)
        row["calls_per_minute"] = 0.0
        row["tokens_per_minute"] = 0.0
    row["error_rate"] = share(t[MEASURES.index("error_calls")], calls)
    return row[list(REALTIME_COLUMNS)]


def _round_half_even(value: Fraction) -> int:
    return round(value)  # Fraction.__round__ rounds half to even
