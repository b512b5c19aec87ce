"""Budget recommendations: end-of-period forecasts, suggested limits, cheaper models.

**Forecast** (one ``kind="forecast"`` row per concrete budget with a period end).
Daily spend ``d_1..d_n`` of the budget's scope over the complete UTC days of the history
window (default: the 28 days before today; days before the store's first record are
left out) gives a trailing rate ``μ = mean(d)`` and a dispersion ``σ`` (sample standard
deviation, 0 with one day). With ``R`` days left in the budget's period::

    forecast = spent + μ·R          band = ± 1.2816·σ·√R   (an 80 % interval if days
    low = max(spent, forecast − band)                        were independent normals)
    high = forecast + band

rounded half-even to the nanodollar. With no complete day of history the rate is the
period-to-date rate (``spent`` / time elapsed in the period) and there is no band.

**Suggested limit**: 1.2 × the larger of the highest spend of the budget's last three
complete periods (in its own time zone, read from the rollups; periods that began before
the store's first record are skipped) and this period's ``high`` forecast, rounded up to
two significant figures. None when both are zero.

**Cheaper models** (``kind="cheaper_model"`` rows): for each model used in the history
window that has a known cheaper sibling (:data:`ALTERNATIVES`, or your own
``alternatives=``), the window's actual token counts are priced on the sibling at today's
prices with :class:`~llmspend.pricing.PriceBook`: exact per-token rates times the summed
tokens, plus any per-request fee per call that reached the provider, rounded once. That
is exact for token-linear prices; if the sibling has long-context tiers, calls are priced
at its base tier (rollups keep sums, not per-call sizes), so the saving is an upper bound
and the ``note`` says so. A model with calls of unknown price is skipped. Only
alternatives that cost less are listed. Cheaper is not equivalent: check quality first.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..budgets.manage import budget_status, list_budgets
from ..budgets.periods import period_bounds
from ..budgets.spec import parse_key
from ..errors import ValidationError
from ..money import nanos_to_usd, usd_to_nanos
from ..names import name_list
from ..store.rollups import MEASURES
from ..timeutil import parse_span, utcnow
from ..tracker import get_tracker
from .frames import (
    COST,
    Filter,
    empty_frame,
    filters_of,
    period_dtype,
    resolve_store,
    served,
    window,
)
from .query import aggregate, data_bounds

if TYPE_CHECKING:
    import pandas as pd

    from ..budgets.spec import Budget, BudgetStatus
    from ..pricing import PriceBook
    from ..store.engine import Store

__all__ = ["ALTERNATIVES", "RECOMMENDATION_COLUMNS", "Z_80", "budget_recommendations"]

DAY = dt.timedelta(days=1)
#: z for a central 80 % normal interval.
Z_80 = 1.2815515655446004
HEADROOM = Fraction(6, 5)
PAST_PERIODS = 3

#: Cheaper siblings per model family (keys and values are model names as priced).
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "gpt-4": ("gpt-4o-mini",),
    "gpt-4-turbo": ("gpt-4o", "gpt-4o-mini"),
    "gpt-4o": ("gpt-4o-mini",),
    "gpt-4.1": ("gpt-4.1-mini",),
    "gpt-4.1-mini": ("gpt-4.1-nano",),
    "gpt-5": ("gpt-5-mini",),
    "gpt-5-mini": ("gpt-5-nano",),
    "o1": ("o3", "o4-mini"),
    "o3": ("o4-mini",),
    "gemini-1.5-pro": ("gemini-1.5-flash",),
    "gemini-2.0-flash": ("gemini-2.0-flash-lite",),
    "gemini-2.5-pro": ("gemini-2.5-flash",),
    "gemini-2.5-flash": ("gemini-2.5-flash-lite",),
    "grok-3": ("grok-3-mini",),
    "grok-4": ("grok-3-mini",),
    "claude-opus-4": ("claude-sonnet-4",),
    "claude-3-opus": ("claude-3-5-sonnet",),
    "claude-sonnet-4": ("claude-3-5-haiku",),
}
_DATED = re.compile(r"-(?:20\d\d-\d\d-\d\d|20\d{6})$")

#: budget_recommendations() columns → dtype.
RECOMMENDATION_COLUMNS: dict[str, Any] = {
    "kind": object, "budget": object, "scope": object, "period": object,
    "period_start": "utc", "period_end": "utc", "limit_usd": object, "spent_usd": object,
    "daily_rate_usd": object, "forecast_usd": object, "forecast_low_usd": object,
    "forecast_high_usd": object, "will_exceed": object, "suggested_limit_usd": object,
    "provider": object, "model": object, "alternative_provider": object,
    "alternative_model": object, "calls": "Int64",
    "cost_usd": object, "alternative_cost_usd": object, "saving_usd": object,
    "saving_pct": "float64", "note": object,
}  # fmt: skip


def _base_name(model: str) -> str:
    name = model.strip().lower()
    name = name.rsplit("models/", 1)[-1]
    if "/" in name:
        name = name.split("/", 1)[1]
    return _DATED.sub("", name)


def _nice_ceiling(nanos: Fraction) -> Decimal:
    """Round a positive amount up to two significant figures, in USD."""
    usd = Decimal(nanos.numerator) / Decimal(nanos.denominator) / Decimal(10**9)
    exp = usd.adjusted() - 1
    quantum = Decimal(1).scaleb(exp)
    return (usd / quantum).to_integral_value(rounding=ROUND_CEILING) * quantum


def _history_days(lo: dt.datetime, hi: dt.datetime, first: dt.datetime | None) -> list[dt.datetime]:
    """Boundaries of the complete UTC days in ``[lo, hi)`` after the first record."""
    start = lo.replace(hour=0, minute=0, second=0, microsecond=0)
    if start < lo:
        start += DAY
    if first is not None:
        floor = first.replace(hour=0, minute=0, second=0, microsecond=0)
        start = max(start, floor if floor == first else floor + DAY)
    end = hi.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while start <= end:
        days.append(start)
        start += DAY
    return days if len(days) >= 2 else []


def _scope_filters(org: str, project: str | None, user: str | None) -> dict[str, Any]:
    flt: dict[str, Any] = {"org": org}
    if project:
        flt["project"] = project
    if user:
        flt["user"] = user
    return flt


def _past_periods(
    budget: Budget, start: dt.datetime, first: dt.datetime | None
) -> list[dt.datetime]:
    """Spend bounds of up to PAST_PERIODS complete periods before ``start``."""
    bounds = [start]
    at = start
    for _ in range(PAST_PERIODS):
        prev_start, _ = period_bounds(
            budget.period, budget.timezone, at - dt.timedelta(microseconds=1),
            week_start=budget.week_start,
        )  # fmt: skip
        if first is None or prev_start <= first:
            break
        bounds.insert(0, prev_start)
        at = prev_start
    return bounds


def _forecast_row(
    store: Store,
    status: BudgetStatus,
    budget: Budget,
    days: list[dt.datetime],
    first: dt.datetime | None,
    now: dt.datetime,
) -> dict[str, Any]:
    key = parse_key(status.scope, status.budget)
    flt = _scope_filters(key.org, key.project, key.user)
    start = status.period_start.replace(tzinfo=None)
    end = status.period_end.replace(tzinfo=None) if status.period_end else None
    spent = usd_to_nanos(status.spent_usd)
    limit = usd_to_nanos(status.limit_usd)
    row: dict[str, Any] = dict.fromkeys(RECOMMENDATION_COLUMNS)
    row.update(
        kind="forecast", budget=status.budget, scope=status.scope, period=status.period,
        period_start=status.period_start, period_end=status.period_end,
        limit_usd=status.limit_usd, spent_usd=status.spent_usd,
    )  # fmt: skip
    notes = []
    high = Fraction(spent)
    if end is not None and end > now:
        left = Fraction((end - now) // dt.timedelta(microseconds=1), 86_400 * 10**6)
        if days:
            acc = aggregate(store, days, (), flt)
            daily = [acc.get((i, ()), [0] * len(MEASURES))[COST] for i in range(len(days) - 1)]
            n = len(daily)
            mean = Fraction(sum(daily), n)
            sigma = math.sqrt(sum((d - mean) ** 2 for d in daily) / (n - 1)) if n > 1 else 0.0
            band = Fraction(round(Z_80 * sigma * math.sqrt(left)))
            notes.append(f"trailing {n}-day mean rate")
        else:
            elapsed = Fraction((now - start) // dt.timedelta(microseconds=1), 86_400 * 10**6)
            mean = Fraction(spent) / elapsed if elapsed else Fraction(0)
            band = Fraction(0)
            notes.append("less than one complete day of history: period-to-date rate, no band")
        forecast = round(spent + mean * left)
        low = max(spent, forecast - round(band))
        high = Fraction(forecast + round(band))
        row.update(
            daily_rate_usd=nanos_to_usd(round(mean)), forecast_usd=nanos_to_usd(forecast),
            forecast_low_usd=nanos_to_usd(low), forecast_high_usd=nanos_to_usd(int(high)),
            will_exceed=forecast > limit,
        )  # fmt: skip
    elif end is None:
        notes.append("a total budget has no period end to forecast")
    past = _past_periods(budget, start, first)
    best = Fraction(0)
    if len(past) > 1:
        acc = aggregate(store, past, (), flt)
        best = Fraction(max(acc.get((i, ()), [0] * len(MEASURES))[COST]
                            for i in range(len(past) - 1)))  # fmt: skip
        notes.append(f"limit from {len(past) - 1} past period(s)")
    base = max(best, high)
    if base > 0:
        row["suggested_limit_usd"] = _nice_ceiling(base * HEADROOM)
    row["note"] = "; ".join(notes) or None
    return row


def _unit_rates(pb: PriceBook, provider: str, model: str) -> tuple[Decimal, ...] | None:
    """Exact USD per token (input, cached delta, cache-write delta, output, reasoning
    delta) and the per-request fee, at the base tier; None when unpriced."""
    one_in = pb.price(model, provider=provider, input_tokens=1)
    if one_in.input_usd is None:
        return None
    u_in = one_in.input_usd
    cached = pb.price(model, provider=provider, input_tokens=1, cached_input_tokens=1)
    cwrite = pb.price(model, provider=provider, input_tokens=1, cache_write_tokens=1)
    out = pb.price(model, provider=provider, output_tokens=1)
    reason = pb.price(model, provider=provider, output_tokens=1, reasoning_tokens=1)
    fee = pb.price(model, provider=provider)
    values = (cached.input_usd, cwrite.input_usd, out.output_usd, reason.output_usd,
              fee.total_usd)  # fmt: skip
    if any(v is None for v in values):
        return None
    c, w, o, r, f = (v for v in values if v is not None)
    return (u_in, c - u_in, w - u_in, o, r - o, f)


def _cheaper_rows(
    store: Store,
    bounds: list[dt.datetime],
    flt: dict[str, Any],
    alternatives: Mapping[str, Sequence[Any]],
    pb: PriceBook,
) -> list[dict[str, Any]]:
    acc = aggregate(store, bounds, ("provider", "model"), flt)
    idx = {m: MEASURES.index(m) for m in MEASURES}
    rows = []
    for (_, (provider, model)), sums in sorted(acc.items(), key=lambda e: -e[1][COST]):
        options = alternatives.get(model) or alternatives.get(_base_name(model)) or ()
        if not options or sums[idx["unpriced_calls"]]:
            continue
        sent = sums[idx["calls"]] - sums[idx["refused_calls"]] - sums[idx["error_calls"]]
        counts = (
            sums[idx["input_tokens"]], sums[idx["cached_input_tokens"]],
            sums[idx["cache_write_tokens"]], sums[idx["output_tokens"]],
            sums[idx["reasoning_tokens"]], max(sent, 0),
        )  # fmt: skip
        actual = sums[COST]
        for option in options:
            alt_provider, alt = (provider, option) if isinstance(option, str) else option
            if (alt_provider, alt) == (provider, model):
                continue
            rates = _unit_rates(pb, alt_provider, alt)
            if rates is None:
                continue
            exact = sum((Decimal(n) * r for n, r in zip(counts, rates, strict=True)), Decimal(0))
            alt_nanos = round(Fraction(exact) * 10**9)
            if alt_nanos >= actual:
                continue
            note = f"{sums[idx['calls']]} calls repriced on {alt} at today's {alt_provider} prices"
            tiers = [r for r in pb.history(alt, alt_provider) if r["in_force"] and r["tiers"]]
            if tiers:
                above = min(t["above_input_tokens"] for t in tiers[0]["tiers"])
                note += (
                    f"; {alt} costs more above {above:,} input tokens per call and calls "
                    "were priced at its base tier, so the saving is an upper bound"
                )
            row: dict[str, Any] = dict.fromkeys(RECOMMENDATION_COLUMNS)
            row.update(
                kind="cheaper_model", provider=provider, model=model,
                alternative_provider=alt_provider, alternative_model=alt,
                calls=sums[idx["calls"]], cost_usd=nanos_to_usd(actual),
                alternative_cost_usd=nanos_to_usd(alt_nanos),
                saving_usd=nanos_to_usd(actual - alt_nanos),
                saving_pct=float(Fraction(actual - alt_nanos, actual) * 100),
                note=note,
            )  # fmt: skip
            rows.append(row)
    return rows


def _alternatives(value: Any) -> dict[str, tuple[str | tuple[str, str], ...]]:
    """``alternatives=`` checked: model name → names or ``(provider, model)`` pairs (one
    name alone stands for a list of it)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            "alternatives: expected a mapping of model name to cheaper models, such as "
            f"{{'gpt-4o': ['gpt-4o-mini']}}, not {type(value).__name__}"
        )
    out: dict[str, tuple[str | tuple[str, str], ...]] = {}
    for model, options in value.items():
        if not isinstance(model, str) or not model:
            raise ValidationError(f"alternatives: a model name must be text, got {model!r}")
        if isinstance(options, str):
            options = (options,)
        if not isinstance(options, (list, tuple)):
            raise ValidationError(
                f"alternatives[{model!r}]: expected a list of model names or (provider, "
                f"model) pairs, got {type(options).__name__}"
            )
        checked: list[str | tuple[str, str]] = []
        for option in options:
            if isinstance(option, str) and option:
                checked.append(option)
            elif (
                isinstance(option, (list, tuple))
                and len(option) == 2
                and all(isinstance(part, str) and part for part in option)
            ):
                checked.append((option[0], option[1]))
            else:
                raise ValidationError(
                    f"alternatives[{model!r}]: {option!r} is neither a model name nor a "
                    "(provider, model) pair"
                )
        out[model] = tuple(checked)
    return out


@served
def budget_recommendations(
    since: Any = None,
    until: Any = None,
    *,
    lookback: Any = "28d",
    alternatives: Mapping[str, Sequence[str | tuple[str, str]]] | None = None,
    org: Filter = None,
    project: Filter = None,
    user: Filter = None,
    provider: Filter = None,
    model: Filter = None,
    store: Store | None = None,
    pricebook: PriceBook | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Forecasts and suggested limits per budget, and cheaper-model savings.

    The history window is ``[since, until)`` (default: ``lookback`` before now). The
    methods are described in this module's docstring. ``org``/``project``/``user`` keep
    budgets whose own name has that part and restrict the usage repriced for
    cheaper-model rows; ``provider``/``model`` apply to the cheaper-model rows only.
    ``alternatives`` maps a model name to cheaper models to price: names (priced with the
    same provider) or ``(provider, model)`` pairs; it adds to and overrides
    :data:`ALTERNATIVES`.

    Columns: ``kind`` (``forecast`` / ``cheaper_model``); for forecasts ``budget``,
    ``scope``, ``period``, ``period_start``, ``period_end``, ``limit_usd``, ``spent_usd``,
    ``daily_rate_usd``, ``forecast_usd``, ``forecast_low_usd``, ``forecast_high_usd``,
    ``will_exceed`` (bool), ``suggested_limit_usd``; for cheaper models ``provider``,
    ``model``, ``alternative_provider``, ``alternative_model``, ``calls``, ``cost_usd``
    (what the calls cost), ``alternative_cost_usd``, ``saving_usd`` (Decimal) and
    ``saving_pct`` (float); and ``note`` (how the row was computed). Columns that do not
    apply to a row are None.
    """
    import pandas as pd

    flt = filters_of(org, project, user, provider, model, filters)
    lo, hi = window(since, until)
    now = utcnow()
    hi = hi or now
    if lo is None:
        span = lookback if isinstance(lookback, dt.timedelta) else parse_span(lookback)
        lo = hi - span
    st = resolve_store(store)
    with st.begin() as conn:
        extent = data_bounds(conn)
    first = extent[0] if extent else None
    days = _history_days(lo, hi, first)
    wanted = {"org": name_list(org, "org"), "project": name_list(project, "project"),
              "user": name_list(user, "user")}  # fmt: skip
    defs = {(b.scope, b.name): b for b in list_budgets(st)}
    rows: list[dict[str, Any]] = []
    for status in budget_status(st):
        key = parse_key(status.scope, status.budget)
        parts = {"org": key.org, "project": key.project, "user": key.user}
        if any(w is not None and parts[k] not in w for k, w in wanted.items()):
            continue
        budget = defs.get((status.scope, status.budget))
        if budget is not None:
            rows.append(_forecast_row(st, status, budget, days, first, now))
    if pricebook is None:
        pricebook = get_tracker().pricebook
    table: dict[str, tuple[str | tuple[str, str], ...]] = dict(ALTERNATIVES)
    table.update(_alternatives(alternatives))
    if lo < hi:
        rows += _cheaper_rows(st, [lo, hi], flt, table, pricebook)
    columns = {c: (period_dtype(dt.UTC) if t == "utc" else t)
               for c, t in RECOMMENDATION_COLUMNS.items()}  # fmt: skip
    if not rows:
        return empty_frame(columns)
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=t) for c, t in columns.items()})
