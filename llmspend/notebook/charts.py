"""Altair charts of spend that render offline, and static SVG/PNG export.

Altair's default renderer loads Vega from a CDN (an error with no internet), and
JupyterLab 4.6's built-in Vega-Lite renderer does not know Vega-Lite 6. So the charts
here are displayed through :func:`offline`: a wrapper whose mime bundle carries an SVG
(and a PNG, for notebooks opened untrusted) drawn locally by vl-convert, with nothing
fetched from the network. The Altair object stays available (``.chart``, ``to_dict()``)
for anyone who wants the interactive version.

Charts (each takes the analytics frames of DESIGN §3: money in ``cost_usd`` as
``Decimal``, time buckets in ``period``, group columns named as in ``records()``):

- :func:`trend` — spend over time, optionally one line per group
- :func:`breakdown` — spend by model / user / project / provider (top N + "other")
- :func:`budget_gauges` — one gauge per budget, grouped by level, coloured by state
- :func:`alert_timeline` — when which budget crossed which threshold (or refused)
- :func:`forecast` — cumulative spend with its end-of-period projection and band
- :func:`reconciliation` — billed minus recorded per day and model (``llmspend.reconcile``)

Export: :func:`to_svg`, :func:`to_png`, :func:`save_svg`, :func:`save_png`.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .render import fmt_pct, fmt_usd

if TYPE_CHECKING:
    import altair as alt
    import pandas as pd

    from ..budgets.spec import BudgetStatus

__all__ = [
    "OfflineChart",
    "alert_timeline",
    "breakdown",
    "budget_gauges",
    "forecast",
    "forecast_frame",
    "offline",
    "reconciliation",
    "save_png",
    "save_svg",
    "to_png",
    "to_svg",
    "trend",
]

STATE_DOMAIN = ["ok", "warning", "exceeded"]
STATE_RANGE = ["#2e7d32", "#f9a825", "#c62828"]
LEVELS = ["org", "project", "user"]
WIDTH = 420
_MONEY = "$,.6~r"  # tooltips: 6 significant digits, trailing zeros trimmed


def money_format(values: Any, *, label: bool = False) -> str:
    """A d3 format for money of this size: ``$1,234`` / ``$12.50`` / ``$0.0042``.

    Axes get few digits; ``label=True`` (a value written on a mark) keeps more.
    """
    finite = [abs(v) for v in (_num(x) for x in values) if v is not None]
    top = max(finite, default=0.0)
    if top >= 1000:
        return "$,.0f"
    if top >= 1:
        return "$,.2f" if label else "$,.2~f"
    if top == 0:
        return "$,.2f"
    return "$,.3~r" if label else "$,.2~r"


# -- rendering ------------------------------------------------------------------------------


def _spec(chart: Any) -> dict[str, Any]:
    if isinstance(chart, OfflineChart):
        chart = chart.chart
    return chart if isinstance(chart, dict) else chart.to_dict()


def to_svg(chart: Any) -> str:
    """The chart as an SVG string, drawn locally by vl-convert (no network)."""
    import vl_convert as vlc

    return str(vlc.vegalite_to_svg(_spec(chart), allowed_base_urls=[]))


def to_png(chart: Any, *, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes (``scale`` × its size), drawn locally by vl-convert."""
    import vl_convert as vlc

    return bytes(vlc.vegalite_to_png(_spec(chart), scale=scale, allowed_base_urls=[]))


def save_svg(chart: Any, path: str | os.PathLike[str]) -> Path:
    """Write the chart to ``path`` as SVG; returns the path."""
    target = Path(path)
    target.write_text(to_svg(chart), encoding="utf-8")
    return target


def save_png(chart: Any, path: str | os.PathLike[str], *, scale: float = 2.0) -> Path:
    """Write the chart to ``path`` as PNG; returns the path."""
    target = Path(path)
    target.write_bytes(to_png(chart, scale=scale))
    return target


class OfflineChart:
    """An Altair chart that displays as a locally drawn SVG (and PNG) in any notebook."""

    def __init__(self, chart: alt.TopLevelMixin, *, png: bool = True) -> None:
        self.chart = chart
        self.png = png

    def to_dict(self) -> dict[str, Any]:
        return _spec(self.chart)

    def to_svg(self) -> str:
        return to_svg(self.chart)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save as ``.svg`` or ``.png`` (by the file's suffix) or ``.json`` (the spec)."""
        target = Path(path)
        suffix = target.suffix.lower()
        if suffix == ".png":
            return save_png(self.chart, target)
        if suffix == ".json":
            import json

            target.write_text(json.dumps(self.to_dict()), encoding="utf-8")
            return target
        return save_svg(self.chart, target)

    def __repr__(self) -> str:
        title = self.to_dict().get("title")
        if isinstance(title, dict):
            title = title.get("text")
        return f"<llmspend chart{': ' + str(title) if title else ''}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"image/svg+xml": self.to_svg(), "text/plain": repr(self)}
        if self.png:
            import base64

            bundle["image/png"] = base64.b64encode(to_png(self.chart, scale=1.0)).decode()
        return bundle


def offline(chart: alt.TopLevelMixin, *, png: bool = True) -> OfflineChart:
    """Wrap ``chart`` so that it displays offline (see the module docstring)."""
    return OfflineChart(chart, png=png)


# -- data helpers --------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """Money and counts as floats, for drawing only (the frames keep exact Decimals)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return float(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _plot_frame(frame: pd.DataFrame, money: Sequence[str] = ("cost_usd",)) -> pd.DataFrame:
    """A copy with money (and any other ``Decimal`` column) as floats, for JSON specs."""
    out = frame.copy()
    for col in out.columns:
        if col in money or (
            out[col].dtype == object and any(isinstance(v, Decimal) for v in out[col])
        ):
            out[col] = [_num(v) for v in out[col]]
    return out


def _field(column: str) -> str:
    """A column name Altair's shorthand cannot misread (``tag:team`` → ``tag_team``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", column)


def _empty(title: str, message: str = "no spend in this period") -> alt.TopLevelMixin:
    import altair as alt
    import pandas as pd

    return (
        alt.Chart(pd.DataFrame({"text": [message]}))
        .mark_text(size=13, color="#757575")
        .encode(text="text:N")
        .properties(title=title, width=WIDTH, height=60)
    )


# -- charts ---------------------------------------------------------------------------------------


def trend(
    frame: pd.DataFrame,
    *,
    by: str | None = None,
    value: str = "cost_usd",
    title: str = "Spend over time",
    cumulative: bool = False,
    top: int = 10,
) -> alt.TopLevelMixin:
    """Spend per time bucket (``period``), one line per ``by`` group if given: the ``top``
    groups by total spend, the rest summed as one "other (n)" line (more lines than
    colours would share colours)."""
    import altair as alt

    if frame is None or not len(frame):
        return _empty(title)
    data = _plot_frame(frame, (value,))
    label = by
    if by and by in data.columns:
        data = data.rename(columns={by: _field(by)})
        by = _field(by)
        data[by] = data[by].fillna("(none)").astype(str)
        totals = data.groupby(by)[value].sum().sort_values(ascending=False, kind="stable")
        if len(totals) > max(top, 1):
            rest = set(totals.index[max(top, 1) - 1 :])
            other = f"other ({len(rest)})"
            data[by] = [other if g in rest else g for g in data[by]]
        data = data.groupby(["period", by], as_index=False)[[value]].sum()
    else:
        by = None
        data = data.groupby("period", as_index=False)[[value]].sum()
    data = data.sort_values("period")
    if cumulative:
        data[value] = data.groupby(by)[value].cumsum() if by else data[value].cumsum()
    y_title = "cumulative spend (USD)" if cumulative else "spend (USD)"
    base = alt.Chart(data).encode(
        x=alt.X("period:T", title=None),
        y=alt.Y(f"{value}:Q", title=y_title, axis=alt.Axis(format=money_format(data[value]))),
        tooltip=[
            alt.Tooltip("period:T", title="period"),
            *([alt.Tooltip(f"{by}:N")] if by else []),
            alt.Tooltip(f"{value}:Q", title="spend", format=_MONEY),
        ],
    )
    if by:
        base = base.encode(color=alt.Color(f"{by}:N", title=label))
    chart = base.mark_line(point=True) if len(data) > 1 else base.mark_point(size=60)
    return chart.properties(title=title, width=WIDTH, height=180)


def breakdown(
    frame: pd.DataFrame | None,
    *,
    by: str = "model",
    value: str = "cost_usd",
    top: int = 10,
    title: str | None = None,
) -> alt.TopLevelMixin:
    """Horizontal bars of spend by ``by`` (largest first; the rest summed as "other")."""
    import altair as alt
    import pandas as pd

    title = title or f"Spend by {by}"
    if frame is None or not len(frame) or by not in frame.columns:
        return _empty(title)
    data = _plot_frame(frame, (value,))
    label, by = by, _field(by)
    data = data.rename(columns={label: by})
    cols = [c for c in ("calls", "unpriced_calls") if c in data.columns]
    data = data.groupby(by, as_index=False, dropna=False)[[value, *cols]].sum()
    data[by] = data[by].fillna("(none)").astype(str)
    data = data.sort_values(value, ascending=False)
    if len(data) > top:
        rest = data.iloc[top - 1 :]
        other = {by: f"other ({len(rest)})", value: rest[value].sum()}
        for c in cols:
            other[c] = rest[c].sum()
        data = pd.concat([data.iloc[: top - 1], pd.DataFrame([other])], ignore_index=True)
    tooltip = [
        alt.Tooltip(f"{by}:N", title=label),
        alt.Tooltip(f"{value}:Q", title="spend", format=_MONEY),
        *[alt.Tooltip(f"{c}:Q", format=",") for c in cols],
    ]
    bars = (
        alt.Chart(data)
        .mark_bar(color="#4c78a8")
        .encode(
            x=alt.X(
                f"{value}:Q", title="spend (USD)", axis=alt.Axis(format=money_format(data[value]))
            ),
            y=alt.Y(f"{by}:N", sort="-x", title=None),
            tooltip=tooltip,
        )
    )
    money = money_format(data[value], label=True)
    text = f"format(datum[{value!r}], {money!r})"
    if "unpriced_calls" in cols and data["unpriced_calls"].sum():
        # a model with no known price is not a silent $0: say how many calls are uncounted
        u = "datum.unpriced_calls"
        text += f" + ({u} > 0 ? ' + ' + {u} + ' unpriced' : '')"
    labels = (
        bars.mark_text(align="left", dx=3, fontSize=10, color="#424242")
        .transform_calculate(label=text)
        .encode(text="label:N")
    )
    return (bars + labels).properties(title=title, width=WIDTH - 60, height=max(40, 22 * len(data)))


def _status_rows(statuses: Any) -> list[dict[str, Any]]:
    import pandas as pd

    if isinstance(statuses, pd.DataFrame):
        items = statuses.to_dict("records")
    else:
        items = [s.__dict__ if hasattr(s, "__dict__") else dict(s) for s in statuses]
    rows = []
    for s in items:
        limit = _num(s.get("limit_usd")) or 0.0
        spent = _num(s.get("spent_usd")) or 0.0
        reserved = _num(s.get("reserved_usd")) or 0.0
        pct = spent * 100 / limit if limit else float(s.get("percent_used") or 0.0)
        rows.append(
            {
                "level": s.get("scope"),
                "budget": f"{s.get('budget')} ({s.get('period')}, {s.get('mode')})",
                "percent": pct,
                "shown": min(pct, 120.0),
                "with_reserved": min(pct + (reserved * 100 / limit if limit else 0.0), 120.0),
                "spent_usd": spent,
                "reserved_usd": reserved,
                "limit_usd": limit,
                "state": s.get("state", "ok"),
                "label": f"{fmt_usd(s.get('spent_usd'))} of {fmt_usd(s.get('limit_usd'))} · "
                f"{fmt_pct(pct)}",
            }
        )
    return rows


def budget_gauges(
    statuses: Sequence[BudgetStatus] | pd.DataFrame, *, title: str = "Budgets"
) -> alt.TopLevelMixin:
    """One gauge per budget: % of the limit used (reserved shown lighter), by level."""
    import altair as alt
    import pandas as pd

    rows = _status_rows(statuses)
    if not rows:
        return _empty(title, "no budgets set")
    data = pd.DataFrame(rows)
    scale = alt.Scale(domain=[0, 120])
    x = alt.X("shown:Q", title="% of limit", scale=scale)
    y = alt.Y("budget:N", title=None, sort=None)
    base = alt.Chart(data).encode(y=y)
    track = base.mark_bar(color="#eeeeee", size=14).encode(x=alt.X("full:Q", scale=scale))
    track = track.transform_calculate(full="100")
    reserved = base.mark_bar(color="#bdbdbd", size=14).encode(
        x=alt.X("with_reserved:Q", scale=scale)
    )
    used = base.mark_bar(size=14).encode(
        x=x,
        color=alt.Color(
            "state:N",
            scale=alt.Scale(domain=STATE_DOMAIN, range=STATE_RANGE),
            legend=alt.Legend(title="state", orient="bottom"),
        ),
        tooltip=[
            alt.Tooltip("budget:N"),
            alt.Tooltip("spent_usd:Q", title="spent", format=_MONEY),
            alt.Tooltip("reserved_usd:Q", title="reserved", format=_MONEY),
            alt.Tooltip("limit_usd:Q", title="limit", format="$,.2f"),
            alt.Tooltip("percent:Q", title="%", format=".1f"),
        ],
    )
    limit_tick = (
        base.mark_tick(color="#424242", thickness=2, size=18)
        .encode(x=alt.X("full:Q", scale=scale))
        .transform_calculate(full="100")
    )
    labels = base.mark_text(align="left", dx=4, fontSize=10, color="#424242").encode(
        x=alt.X("with_reserved:Q", scale=scale), text="label:N"
    )
    layered = alt.layer(track, reserved, used, labels, limit_tick, data=data)
    levels = [lvl for lvl in LEVELS if lvl in set(data["level"])]
    charts = [
        layered.transform_filter(alt.datum.level == lvl).properties(
            title=f"{lvl} budgets", width=WIDTH - 120, height=alt.Step(22)
        )
        for lvl in levels
    ]
    if len(charts) == 1:
        return charts[0].properties(title=title)
    return alt.vconcat(*charts).properties(title=title).resolve_scale(y="independent")


def alert_timeline(alerts: pd.DataFrame, *, title: str = "Alerts") -> alt.TopLevelMixin:
    """Each alert as a mark on a timeline: which budget, which threshold, or a refusal."""
    import altair as alt

    if alerts is None or not len(alerts):
        return _empty(title, "no alerts")
    data = _plot_frame(alerts, ("spent_usd", "limit_usd", "call_cost_usd"))
    data["label"] = data["scope"].astype(str) + " " + data["budget"].astype(str)
    kinds = data["kind"] if "kind" in data.columns else ["threshold"] * len(data)
    data["event"] = [
        "refused" if k == "refused" else f"{float(t) * 100:.0f} %"
        for k, t in zip(kinds, data["threshold"], strict=True)
    ]
    data["ts"] = data["ts"].astype(str)
    return (
        alt.Chart(data)
        .mark_point(filled=True, size=90)
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("label:N", title=None),
            color=alt.Color("event:N", title="event"),
            shape=alt.Shape("event:N", title="event"),
            tooltip=[
                alt.Tooltip("ts:T", title="time", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("label:N", title="budget"),
                alt.Tooltip("event:N"),
                alt.Tooltip("percent_used:Q", title="%", format=".1f"),
                alt.Tooltip("spent_usd:Q", title="spent", format=_MONEY),
                alt.Tooltip("limit_usd:Q", title="limit", format="$,.2f"),
            ],
        )
        .properties(title=title, width=WIDTH, height=alt.Step(26))
    )


def _month_end(now: dt.datetime) -> dt.datetime:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + dt.timedelta(days=32)).replace(day=1)


def forecast_frame(
    trend_frame: pd.DataFrame, *, until: dt.datetime | None = None, z: float = 1.645
) -> pd.DataFrame:
    """Cumulative daily spend, then a straight-line projection to ``until`` with a band.

    The projection continues at the mean daily spend; the band is ``± z`` standard
    deviations of the daily spend times ``sqrt(days ahead)`` (90 % by default).
    Columns: ``period``, ``kind`` (``actual``/``forecast``), ``cost_usd``, ``low``, ``high``.
    """
    import pandas as pd

    cols = ["period", "kind", "cost_usd", "low", "high"]
    if trend_frame is None or not len(trend_frame):
        return pd.DataFrame(columns=cols)
    data = _plot_frame(trend_frame)
    data["period"] = pd.to_datetime(data["period"], utc=True)
    daily = data.groupby(data["period"].dt.floor("D"))["cost_usd"].sum().sort_index()
    last = daily.index.max()
    full = pd.date_range(daily.index.min(), last, freq="D")
    daily = daily.reindex(full, fill_value=0.0)
    cum = daily.cumsum()
    rows = [
        {"period": p, "kind": "actual", "cost_usd": v, "low": v, "high": v} for p, v in cum.items()
    ]
    end = pd.Timestamp(until if until is not None else _month_end(last.to_pydatetime()))
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    mean = float(daily.mean())
    std = float(daily.std(ddof=1)) if len(daily) > 1 else mean * 0.5
    start_value = float(cum.iloc[-1])
    days = pd.date_range(last, end, freq="D")
    for i, p in enumerate(days):
        spread = z * std * math.sqrt(i)
        value = start_value + mean * i
        rows.append(
            {
                "period": p,
                "kind": "forecast",
                "cost_usd": value,
                "low": max(start_value, value - spread),
                "high": value + spread,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def forecast(
    trend_frame: pd.DataFrame,
    *,
    until: dt.datetime | None = None,
    limit: Decimal | float | None = None,
    title: str = "Spend forecast",
) -> alt.TopLevelMixin:
    """Cumulative spend, its projection to ``until`` (default: month end) and a band."""
    import altair as alt
    import pandas as pd

    data = forecast_frame(trend_frame, until=until)
    if not len(data):
        return _empty(title)
    data["period"] = data["period"].astype(str)
    x = alt.X("period:T", title=None)
    money = alt.Axis(format=money_format([*data["high"], _num(limit) or 0.0]))
    base = alt.Chart(data)
    band = (
        base.transform_filter(alt.datum.kind == "forecast")
        .mark_area(opacity=0.25, color="#4c78a8")
        .encode(x=x, y=alt.Y("low:Q", title="cumulative spend (USD)", axis=money), y2="high:Q")
    )
    lines = base.mark_line().encode(
        x=x,
        y=alt.Y("cost_usd:Q", axis=money),
        strokeDash=alt.StrokeDash(
            "kind:N",
            scale=alt.Scale(domain=["actual", "forecast"], range=[[1, 0], [5, 3]]),
            title=None,
        ),
        tooltip=[
            alt.Tooltip("period:T", title="day", format="%Y-%m-%d"),
            alt.Tooltip("kind:N"),
            alt.Tooltip("cost_usd:Q", title="spend", format=_MONEY),
            alt.Tooltip("low:Q", format=_MONEY),
            alt.Tooltip("high:Q", format=_MONEY),
        ],
    )
    layers: list[Any] = [band, lines]
    if limit is not None:
        rule = pd.DataFrame({"limit": [_num(limit)]})
        layers.append(
            alt.Chart(rule)
            .mark_rule(color="#c62828", strokeDash=[4, 2])
            .encode(y=alt.Y("limit:Q"), tooltip=[alt.Tooltip("limit:Q", format="$,.2f")])
        )
    return alt.layer(*layers).properties(title=title, width=WIDTH, height=180)


def reconciliation(frame: pd.DataFrame, *, title: str = "Billed minus recorded") -> Any:
    """Bars of billed minus recorded (``diff_usd``) per day, one colour per model, from a
    reconciliation's ``frame`` (``llmspend.reconcile(...).frame``); matching lines are 0."""
    import altair as alt

    if frame is None or not len(frame):
        return _empty(title, "nothing to reconcile")
    data = _plot_frame(frame, ("billed_usd", "recorded_usd", "diff_usd"))
    data["day"] = [str(d) for d in data["day"]]
    return (
        alt.Chart(data)
        .mark_bar()
        .encode(
            x=alt.X("day:O", title=None),
            y=alt.Y("sum(diff_usd):Q", title="billed − recorded (USD)",
                    axis=alt.Axis(format=money_format(data["diff_usd"]))),
            color=alt.Color("model:N"),
            tooltip=[
                alt.Tooltip("day:O"), alt.Tooltip("model:N"), alt.Tooltip("state:N"),
                alt.Tooltip("billed_usd:Q", title="billed", format=_MONEY),
                alt.Tooltip("recorded_usd:Q", title="recorded", format=_MONEY),
                alt.Tooltip("diff_usd:Q", title="difference", format=_MONEY),
            ],
        )
        .properties(title=title, width=WIDTH, height=180)
    )  # fmt: skip
