"""Small rich tables for the notebook: HTML for JupyterLab, aligned text everywhere else.

Every table is a :class:`Table` with ``_repr_html_`` and a plain-text ``__repr__`` (so it
reads well in a terminal, in papermill logs and in tests), and ``to_frame()`` for the
exact values behind it (money as ``Decimal``). Builders: :func:`status_table`,
:func:`budgets_table`, :func:`history_table`, :func:`alerts_table`, :func:`calls_table`.
:func:`snapshot_html` lays out the dashboard's parts as one static page section.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..money import format_usd, nanos_to_usd

if TYPE_CHECKING:
    import pandas as pd

    from ..budgets.spec import Budget, BudgetStatus

__all__ = [
    "NO_MATH",
    "Note",
    "Table",
    "alerts_table",
    "budgets_table",
    "calls_table",
    "fmt_pct",
    "fmt_usd",
    "fmt_when",
    "history_table",
    "snapshot_html",
    "status_percent",
    "status_table",
]

STATE_COLOURS = {"ok": "#2e7d32", "warning": "#b26a00", "exceeded": "#b00020"}
_FONT = "font-size:12px;font-family:var(--jp-ui-font-family, sans-serif)"
#: Classes that keep MathJax (JupyterLab: MathJax 3; classic: MathJax 2) from reading
#: "$1 of $5" as inline math.
NO_MATH = "mathjax_ignore tex2jax_ignore"


def fmt_usd(value: Decimal | int | float | None) -> str:
    """``$1,234.56``; small amounts keep their significant digits (``$0.000019``,
    ``$0.00000002``)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = Decimal(repr(value))
    return format_usd(Decimal(value))


def fmt_pct(value: float | None) -> str:
    """``62 %``, ``4.2 %``, ``<0.1 %``."""
    if value is None:
        return "n/a"
    if value == 0:
        return "0 %"
    if abs(value) < 0.1:
        return "<0.1 %"
    if abs(value) < 10:
        return f"{value:.1f} %"
    return f"{value:.0f} %"


def status_percent(status: Any) -> float:
    """A status's % used, exact enough to tell a tiny spend (``<0.1 %``) from none."""
    limit, spent = status.limit_usd, status.spent_usd
    if limit:
        return float(Decimal(spent) * 100 / Decimal(limit))
    return float(status.percent_used)


def fmt_when(value: Any, *, seconds: bool = False) -> str:
    """A UTC time as ``2026-11-30 00:00 UTC`` (``never`` for ``None``)."""
    if value is None or (isinstance(value, float) and value != value):
        return "never"
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"
    return str(value)


def fmt_int(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""


@dataclass
class Note:
    """A one-line message shown as text and as muted HTML."""

    text: str
    level: str = "info"  # info | warning

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        colour = "#b26a00" if self.level == "warning" else "var(--jp-ui-font-color2, #616161)"
        return (
            f'<div class="{NO_MATH}" style="{_FONT};color:{colour}">{html.escape(self.text)}</div>'
        )


@dataclass
class Table:
    """Rows of display strings plus the exact frame behind them."""

    columns: Sequence[str]
    rows: list[list[str]]
    title: str | None = None
    caption: str | None = None
    right: frozenset[str] = frozenset()
    styles: dict[tuple[int, str], str] = field(default_factory=dict)
    bars: dict[int, float] = field(default_factory=dict)  # row -> percent, drawn under "%"
    frame: Any = None
    empty: str = "nothing to show"

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        """The exact values behind the table (``Decimal`` money, aware datetimes)."""
        import pandas as pd

        if self.frame is not None:
            return self.frame
        return pd.DataFrame(self.rows, columns=list(self.columns))

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        if not self.rows:
            lines.append(f"({self.empty})")
        else:
            widths = [
                max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)
            ]

            def line(cells: Sequence[str]) -> str:
                out = []
                for i, c in enumerate(cells):
                    name = self.columns[i]
                    out.append(c.rjust(widths[i]) if name in self.right else c.ljust(widths[i]))
                return "  ".join(out).rstrip()

            lines.append(line(self.columns))
            lines.append("  ".join("-" * w for w in widths))
            lines.extend(line(r) for r in self.rows)
        if self.caption:
            lines.append(self.caption)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        parts = [f'<div class="llmspend-table {NO_MATH}" style="{_FONT}">']
        if self.title:
            parts.append(f'<div style="font-weight:600;margin:2px 0 4px">{esc(self.title)}</div>')
        if not self.rows:
            parts.append(f"<div><em>{esc(self.empty)}</em></div></div>")
            return "".join(parts)
        parts.append('<table style="border-collapse:collapse"><thead><tr>')
        for c in self.columns:
            align = "right" if c in self.right else "left"
            parts.append(
                f'<th style="text-align:{align};padding:2px 8px;'
                f'border-bottom:1px solid #bbb">{esc(c)}</th>'
            )
        parts.append("</tr></thead><tbody>")
        for r, row in enumerate(self.rows):
            parts.append("<tr>")
            for c, text in zip(self.columns, row, strict=True):
                align = "right" if c in self.right else "left"
                style = f"text-align:{align};padding:2px 8px;" + self.styles.get((r, c), "")
                cell = esc(text)
                if c == "%" and r in self.bars:
                    cell += _bar(self.bars[r], self.styles.get((r, "state"), ""))
                parts.append(f'<td style="{style}">{cell}</td>')
            parts.append("</tr>")
        parts.append("</tbody></table>")
        if self.caption:
            parts.append(f'<div style="color:#757575;margin-top:4px">{esc(self.caption)}</div>')
        parts.append("</div>")
        return "".join(parts)


def _bar(percent: float, state_style: str) -> str:
    colour = "#2e7d32"
    for c in STATE_COLOURS.values():
        if c in state_style:
            colour = c
    width = max(0.0, min(100.0, percent))
    return (
        '<div style="background:#e0e0e0;height:4px;width:80px;margin-top:2px;'
        f'display:inline-block;vertical-align:middle;margin-left:6px">'
        f'<div style="background:{colour};height:4px;width:{width:.1f}%"></div></div>'
    )


def _state_style(state: str) -> str:
    colour = STATE_COLOURS.get(state)
    return f"color:{colour};font-weight:600" if colour else ""


def status_table(statuses: Sequence[BudgetStatus], *, title: str | None = None) -> Table:
    """Budget status: budget, scope, mode, period, spent, reserved, limit, %, state, end."""
    import pandas as pd

    cols = [
        "budget", "scope", "mode", "period", "spent", "reserved", "limit", "%", "state",
        "period end",
    ]  # fmt: skip
    rows, styles, bars = [], {}, {}
    for i, s in enumerate(statuses):
        rows.append(
            [
                s.budget + (" (default)" if s.inherited else ""),
                s.scope,
                s.mode,
                s.period,
                fmt_usd(s.spent_usd),
                fmt_usd(s.reserved_usd),
                fmt_usd(s.limit_usd),
                fmt_pct(status_percent(s)),
                s.state,
                fmt_when(s.period_end),
            ]
        )
        styles[(i, "state")] = _state_style(s.state)
        bars[i] = s.percent_used
    frame = pd.DataFrame(
        [s.__dict__ for s in statuses],
        columns=[
            "budget", "scope", "mode", "period", "period_start", "period_end", "limit_usd",
            "spent_usd", "reserved_usd", "remaining_usd", "percent_used", "state",
            "projected_usd", "calls", "inherited", "timezone",
        ],
    )  # fmt: skip
    return Table(
        cols,
        rows,
        title=title or "llmspend · budget status",
        right=frozenset({"spent", "reserved", "limit", "%"}),
        styles=styles,
        bars=bars,
        frame=frame,
        empty="no budgets set; try %budget set project acme/churn 100/month",
    )


def _thresholds(values: Iterable[Decimal]) -> str:
    out = [f"{(v * 100).normalize():f}" for v in values]
    return ",".join(out) + " %" if out else "none"


def budgets_table(budgets: Sequence[Budget]) -> Table:
    """Budget definitions: scope, name, limit, period, mode, alerts, time zone."""
    import pandas as pd

    cols = ["scope", "budget", "limit", "period", "mode", "alerts at", "time zone", "kind"]
    rows = []
    for b in budgets:
        kind = "default" if b.is_default else ("from default" if b.inherited else "explicit")
        rows.append(
            [
                b.scope,
                b.name,
                fmt_usd(b.limit_usd),
                b.period,
                b.mode,
                _thresholds(b.thresholds),
                b.timezone,
                kind,
            ]
        )
    frame = pd.DataFrame([b.__dict__ for b in budgets])
    return Table(
        cols,
        rows,
        title="llmspend · budgets",
        right=frozenset({"limit"}),
        frame=frame,
        empty="no budgets set",
    )


def history_table(scope: str, name: str, frame: pd.DataFrame) -> Table:
    """The periods of one budget, newest first."""
    cols = ["period start", "period end", "spent", "limit", "%", "calls"]
    rows, bars = [], {}
    for i, r in enumerate(frame.to_dict("records")):
        spent, limit = r["spent_usd"], r["limit_usd"]
        pct = float(spent * 100 / limit) if limit else 0.0
        rows.append(
            [
                fmt_when(r["period_start"]),
                fmt_when(r["period_end"]),
                fmt_usd(spent),
                fmt_usd(limit),
                fmt_pct(pct),
                fmt_int(r["calls"]),
            ]
        )
        bars[i] = pct
    return Table(
        cols,
        rows,
        title=f"llmspend · history of {scope} budget {name}",
        right=frozenset({"spent", "limit", "%", "calls"}),
        bars=bars,
        frame=frame,
        empty="no periods yet",
    )


def alerts_table(frame: pd.DataFrame, *, title: str = "llmspend · alerts") -> Table:
    """Alerts, newest first: id, time, budget, what happened, spent/limit, acknowledged."""
    cols = ["id", "time", "budget", "event", "spent", "limit", "%", "ack"]
    rows, styles = [], {}
    ordered = frame.iloc[::-1] if len(frame) else frame
    for i, r in enumerate(ordered.to_dict("records")):
        kind = r.get("kind", "threshold")
        if kind == "refused":
            event = "refused a call"
            styles[(i, "event")] = _state_style("exceeded")
        else:
            event = f"reached {_thresholds([Decimal(str(r['threshold']))])}"
            if Decimal(str(r["threshold"])) >= 1:
                styles[(i, "event")] = _state_style("exceeded")
            else:
                styles[(i, "event")] = _state_style("warning")
        rows.append(
            [
                str(r["id"]),
                fmt_when(r["ts"]),
                f"{r['scope']} {r['budget']}",
                event,
                fmt_usd(r["spent_usd"]),
                fmt_usd(r["limit_usd"]),
                fmt_pct(r["percent_used"]),
                "yes" if r["acknowledged"] else "no",
            ]
        )
    return Table(
        cols,
        rows,
        title=title,
        right=frozenset({"id", "spent", "limit", "%"}),
        styles=styles,
        frame=frame,
        empty="no alerts",
    )


def _row_cost(row: Mapping[str, Any]) -> Decimal | None:
    if "cost_usd" in row:
        v = row["cost_usd"]
        return None if v is None or (isinstance(v, float) and v != v) else Decimal(v)
    return nanos_to_usd(row.get("cost_nanos"))


def calls_table(rows: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Table:
    """Recorded calls, newest last: time, model, tokens, cost, latency, status.

    ``rows`` are recorded rows as ``Tracker.recent`` keeps them (store column names) or
    ``records()`` rows.
    """
    import pandas as pd

    cols = ["time", "model", "who", "input", "output", "cost", "latency", "status"]
    out, styles, exact = [], {}, []
    for i, r in enumerate(rows):
        cost = _row_cost(r)
        org = r.get("org_name", r.get("org"))
        project = r.get("project_name", r.get("project"))
        user = r.get("user_name", r.get("user"))
        latency = r.get("latency_ms")
        status = str(r.get("status", ""))
        cost_text = "unpriced" if r.get("price_status") == "unknown" else fmt_usd(cost)
        out.append(
            [
                fmt_when(r.get("ts"), seconds=True),
                str(r.get("model", "")),
                f"{org}/{project}/{user}",
                fmt_int(r.get("input_tokens", 0)),
                fmt_int(r.get("output_tokens", 0)),
                cost_text,
                "" if latency is None else f"{float(latency):,.0f} ms",
                status,
            ]
        )
        if status in ("error", "refused"):
            styles[(i, "status")] = _state_style("exceeded")
        elif status == "partial":
            styles[(i, "status")] = _state_style("warning")
        exact.append(
            {
                "ts": r.get("ts"),
                "provider": r.get("provider"),
                "model": r.get("model"),
                "org": org,
                "project": project,
                "user": user,
                "input_tokens": r.get("input_tokens"),
                "output_tokens": r.get("output_tokens"),
                "cost_usd": cost,
                "latency_ms": latency,
                "status": status,
            }
        )
    total = sum((c for c in (_row_cost(r) for r in rows) if c is not None), Decimal(0))
    caption = f"{len(rows)} call{'s' if len(rows) != 1 else ''}, {fmt_usd(total)}" if rows else None
    unpriced = sum(r.get("price_status") == "unknown" for r in rows)
    if caption and unpriced:  # an unknown cost is never silently $0
        caption += f" + {unpriced} unpriced (cost unknown)"
    return Table(
        cols,
        out,
        title=title or "llmspend · last calls",
        caption=caption,
        right=frozenset({"input", "output", "cost", "latency"}),
        styles=styles,
        frame=pd.DataFrame(exact),
        empty="no calls recorded in this kernel yet",
    )


_ROW = "display:flex;flex-flow:row wrap;align-items:flex-start"


def snapshot_html(caption: str, rows: Sequence[Sequence[str]]) -> str:
    """A static section of HTML: ``caption`` (plain text) over ``rows`` of HTML parts shown
    side by side (empty parts left out). The dashboard's output for renderers without live
    widgets (nbconvert, nbviewer, GitHub): its cards, gauges and SVG charts as drawn."""
    out = [
        f'<div class="llmspend-snapshot {NO_MATH}" style="{_FONT}">',
        f'<div style="font-size:11px;color:#757575;margin-bottom:4px">{html.escape(caption)}</div>',
    ]
    for row in rows:
        parts = [p for p in row if p]
        if parts:
            cells = "".join(f'<div style="margin:0 8px 8px 0">{p}</div>' for p in parts)
            out.append(f'<div style="{_ROW}">{cells}</div>')
    out.append("</div>")
    return "".join(out)
