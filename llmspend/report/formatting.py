"""Formatting for the report notebook: money, percentages, tables, charts and headings.

The notebook writes numbers the way the CLI does (``$1,234.56``); each helper gives an
object that shows as HTML in the page and as plain text in papermill logs and terminals.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..money import format_usd
from ..notebook.charts import to_svg
from ..notebook.render import Note, Table, fmt_pct, fmt_when
from ..timeutil import utcnow
from .window import Window

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HTMLBlock",
    "change_of",
    "change_percent",
    "frame_table",
    "heading_html",
    "integer",
    "kpis_html",
    "money",
    "note",
    "percent",
    "signed_money",
    "svg",
    "trend_granularity",
    "when",
    "window_limit",
]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):
        return False


def money(value: Any, decimals: int = 2) -> str:
    """Money for people: ``$1,234.56`` (``decimals`` places; tiny amounts keep digits)."""
    if _missing(value):
        return "n/a"
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format_usd(Decimal(value), int(decimals))


def signed_money(value: Any, decimals: int = 2) -> str:
    """A change of money: ``+$12.00``, ``−$3.50``, ``$0.00``."""
    if _missing(value):
        return "n/a"
    dec = Decimal(value) if not isinstance(value, float) else Decimal(repr(value))
    if dec > 0:
        return "+" + money(dec, decimals)
    if dec < 0:
        return "−" + money(-dec, decimals)
    return money(dec, decimals)


def percent(value: Any) -> str:
    """``62 %``, ``4.2 %``, ``<0.1 %`` (``n/a`` for NaN)."""
    return "n/a" if _missing(value) else fmt_pct(float(value))


def change_percent(value: Any) -> str:
    """A relative change: ``+12 %``, ``−4.2 %``, ``new`` when there was nothing before."""
    if _missing(value):
        return "new"
    v = float(value)
    sign = "+" if v > 0 else ("−" if v < 0 else "")
    return sign + percent(abs(v))


def integer(value: Any) -> str:
    """``12,345``."""
    return "" if _missing(value) else f"{int(value):,}"


def when(value: Any) -> str:
    """``2026-03-31 00:00 UTC`` (``never`` when missing)."""
    return "never" if _missing(value) else fmt_when(value)


_KINDS = {
    "text": lambda v, d: "" if _missing(v) else str(v),
    "money": money,
    "signed_money": signed_money,
    "int": lambda v, d: integer(v),
    "pct": lambda v, d: percent(v),
    "share": lambda v, d: percent(None if _missing(v) else float(v) * 100),
    "change_pct": lambda v, d: change_percent(v),
    "when": lambda v, d: when(v),
    "bool": lambda v, d: "" if _missing(v) else ("yes" if v else "no"),
}
_RIGHT = {"money", "signed_money", "int", "pct", "share", "change_pct"}


def frame_table(
    frame: pd.DataFrame,
    columns: Sequence[tuple[str, str, str]],
    *,
    title: str | None = None,
    empty: str = "nothing to show",
    caption: str | None = None,
    decimals: int = 2,
    limit: int | None = None,
) -> Table:
    """A :class:`~llmspend.notebook.render.Table` of ``frame``'s rows.

    ``columns``: ``(header, column, kind)`` with kind one of ``text``, ``money``,
    ``signed_money``, ``int``, ``pct`` (0–100), ``share`` (0–1), ``change_pct``, ``when``,
    ``bool``. ``limit`` keeps the first rows and says how many were left out.
    """
    rows: list[list[str]] = []
    styles: dict[tuple[int, str], str] = {}
    records = frame.to_dict("records") if frame is not None and len(frame) else []
    shown = records[:limit] if limit else records
    for i, r in enumerate(shown):
        row = []
        for header, col, kind in columns:
            row.append(_KINDS[kind](r.get(col), decimals))
            if col in ("state", "budget_state") and r.get(col) in _STATE_STYLE:
                styles[(i, header)] = _STATE_STYLE[r[col]]
        rows.append(row)
    if limit and len(records) > limit:
        more = f"{len(records) - limit} more not shown"
        caption = f"{caption} · {more}" if caption else more
    return Table(
        [h for h, _, _ in columns],
        rows,
        title=title,
        caption=caption,
        right=frozenset(h for h, _, kind in columns if kind in _RIGHT),
        styles=styles,
        frame=frame,
        empty=empty,
    )


_STATE_STYLE = {
    "ok": "color:#2e7d32;font-weight:600",
    "warning": "color:#b26a00;font-weight:600",
    "exceeded": "color:#b00020;font-weight:600",
}


def change_of(current: Any, previous: Any) -> float | None:
    """The change from ``previous`` to ``current`` in percent (``None`` if previous is 0)."""
    if _missing(previous) or not previous:
        return None
    return float((Decimal(current) - Decimal(previous)) * 100 / Decimal(previous))


def trend_granularity(length: dt.timedelta) -> str:
    """Buckets for a trend over ``length``: hours up to 2 days, days up to a quarter,
    weeks up to a year, months beyond."""
    if length <= dt.timedelta(days=2):
        return "hour"
    if length <= dt.timedelta(days=92):
        return "day"
    if length <= dt.timedelta(days=366):
        return "week"
    return "month"


def window_limit(budgets: pd.DataFrame, window: Window) -> Decimal | None:
    """The limit of the budget whose period is exactly ``window`` (the org's first, then a
    project's, then a user's), for the forecast chart; ``None`` if none or ambiguous."""
    if budgets is None or not len(budgets):
        return None
    import pandas as pd

    lo, hi = pd.Timestamp(window.since, tz="UTC"), pd.Timestamp(window.until, tz="UTC")
    same = [
        not _missing(s) and not _missing(e) and pd.Timestamp(s) == lo and pd.Timestamp(e) == hi
        for s, e in zip(budgets["period_start"], budgets["period_end"], strict=True)
    ]
    aligned = budgets[same]
    for level in ("org", "project", "user"):
        rows = aligned[aligned["scope"] == level]
        if len(rows):
            return Decimal(rows["limit_usd"].iloc[0]) if len(rows) == 1 else None
    return None


def note(text: str, level: str = "info") -> Note:
    """A one-line message (``level="warning"`` shows it in amber)."""
    return Note(text, level)


@dataclass
class HTMLBlock:
    """A piece of HTML that reads as plain text in papermill logs and terminals."""

    html: str
    text: str = ""

    def __repr__(self) -> str:
        return self.text or re.sub(r"<[^>]+>", "", self.html)

    def _repr_html_(self) -> str:
        return self.html


_chart_ids = itertools.count(1)
#: Keeps MathJax in JupyterLab from reading "$1 ... $5" as inline math.
_NO_MATH = "mathjax_ignore tex2jax_ignore"


def svg(chart: Any, *, text: str | None = None) -> HTMLBlock:
    """An Altair chart drawn to SVG locally (vl-convert) and shown inline in the page.

    Inline ``<svg>`` (not an image) keeps chart text searchable and needs nothing but the
    HTML file; ids inside the SVG are made unique so several charts share one page.
    """
    drawing = to_svg(chart)
    ids = set(re.findall(r'\bid="([^"]+)"', drawing))
    if ids:
        prefix = f"c{next(_chart_ids)}-"
        for old in sorted(ids, key=len, reverse=True):
            drawing = drawing.replace(f'id="{old}"', f'id="{prefix}{old}"')
            drawing = drawing.replace(f"url(#{old})", f"url(#{prefix}{old})")
            drawing = drawing.replace(f'href="#{old}"', f'href="#{prefix}{old}"')
    spec = chart.to_dict() if hasattr(chart, "to_dict") else {}
    title = spec.get("title")
    if isinstance(title, dict):
        title = title.get("text")
    shown = text or f"[chart: {title or 'spend'}]"
    return HTMLBlock(f'<div class="llmspend-chart {_NO_MATH}">{drawing}</div>', shown)


def heading_html(
    title: str,
    window: Window,
    filters: Mapping[str, Sequence[str]],
    *,
    store: str,
    now: dt.datetime | None = None,
) -> HTMLBlock:
    """The report's title block: what period, which part of the hierarchy, from where."""
    now = now or utcnow()
    esc = html.escape
    scope = (
        " · ".join(f"{k} {', '.join(v)}" for k, v in filters.items())
        if filters
        else "every org, project and user"
    )
    progress = " (to date)" if window.in_progress(now) else ""
    last = window.until - dt.timedelta(microseconds=1)
    span = f"{window.since:%Y-%m-%d %H:%M} – {last:%Y-%m-%d %H:%M:%S} UTC"
    lines = [
        f"<h1 class='llmspend-title {_NO_MATH}'>{esc(title)}</h1>",
        f"<p class='llmspend-sub {_NO_MATH}'><strong>{esc(window.label)}{progress}</strong> · "
        f"{esc(span)}<br>{esc(scope)}<br>generated {now:%Y-%m-%d %H:%M} UTC from "
        f"<code>{esc(store)}</code></p>",
    ]
    text = f"{title}\n{window.label}{progress} ({span}); {scope}; generated {now:%Y-%m-%d %H:%M}"
    return HTMLBlock("\n".join(lines), text)


def kpis_html(items: Sequence[tuple[str, str, str]]) -> HTMLBlock:
    """Headline numbers as tiles: ``(label, value, detail)``."""
    esc = html.escape
    tiles = "".join(
        f"<div class='llmspend-kpi'><div class='llmspend-kpi-label'>{esc(label)}</div>"
        f"<div class='llmspend-kpi-value'>{esc(value)}</div>"
        f"<div class='llmspend-kpi-detail'>{esc(detail)}</div></div>"
        for label, value, detail in items
    )
    text = "\n".join(f"{label}: {value}  {detail}".rstrip() for label, value, detail in items)
    return HTMLBlock(f"<div class='llmspend-kpis {_NO_MATH}'>{tiles}</div>", text)
