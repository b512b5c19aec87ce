"""The scheduled spend report: run ``spend_report.ipynb`` with papermill, write HTML.

:func:`run_report` is what ``llmspend report`` calls: it resolves and checks every
parameter first (the period, the org/project/user names against the store), then executes
the report notebook with papermill in a ``python3`` kernel and renders the executed
notebook to one self-contained HTML file (code hidden, charts as inline SVG, styles
inlined, no script or font loaded from anywhere: the page works offline and in mail).

The notebook itself uses the small helpers below (:func:`resolve_window`, :func:`money`,
:func:`frame_table`, :func:`svg`, ...), so the CLI and the notebook agree on what a period
means and how money is written (``$1,234.56``).

Periods are UTC. A window is ``[since, until)``: ``since`` inclusive, ``until`` exclusive,
as everywhere in llmspend. The default is the current calendar month.
"""

from __future__ import annotations

import calendar
import datetime as dt
import html
import itertools
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, LLMSpendError, ValidationError
from .money import format_usd
from .timeutil import parse_span, parse_when, utcnow

if TYPE_CHECKING:
    import pandas as pd

    from .notebook.render import Note, Table
    from .store.engine import Store

__all__ = [
    "CALENDAR_PERIODS",
    "DEFAULT_NOTEBOOK",
    "REMOVED_TAGS",
    "HTMLBlock",
    "ReportError",
    "ReportResult",
    "Window",
    "calendar_unit",
    "change_of",
    "change_percent",
    "check_names",
    "default_output",
    "default_title",
    "execute_notebook",
    "filter_names",
    "frame_table",
    "heading_html",
    "integer",
    "kernel_arguments",
    "kpis_html",
    "money",
    "note",
    "notebook_path",
    "percent",
    "resolve_window",
    "run_report",
    "signed_money",
    "svg",
    "to_html",
    "trend_granularity",
    "when",
    "window_limit",
]

#: Named periods for ``--period`` (all UTC, on calendar boundaries; weeks start Monday).
CALENDAR_PERIODS: tuple[str, ...] = (
    "day", "week", "month", "quarter", "year",
    "yesterday", "last-week", "last-month", "last-quarter", "last-year",
)  # fmt: skip
_ALIASES = {"today": "day", "this-day": "day", "this-week": "week", "this-month": "month",
            "this-quarter": "quarter", "this-year": "year", "last-day": "yesterday"}  # fmt: skip
_UNIT_MONTHS = {"month": 1, "quarter": 3, "year": 12}
_MONTHS = tuple(calendar.month_name)


class ReportError(LLMSpendError):
    """The report could not be made (the notebook failed, a tool is missing, ...)."""


# -- periods ----------------------------------------------------------------------------------


def _midnight(t: dt.datetime) -> dt.datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def _add_months(t: dt.datetime, months: int) -> dt.datetime:
    """The first of the month ``months`` after ``t``'s month (``t`` is a month start)."""
    index = t.year * 12 + t.month - 1 + months
    return t.replace(year=index // 12, month=index % 12 + 1, day=1)


def _unit_start(unit: str, now: dt.datetime) -> dt.datetime:
    day = _midnight(now)
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    first = day.replace(day=1)
    if unit == "month":
        return first
    if unit == "quarter":
        return first.replace(month=(first.month - 1) // 3 * 3 + 1)
    return first.replace(month=1)


def _unit_shift(unit: str, start: dt.datetime, n: int) -> dt.datetime:
    if unit == "day":
        return start + dt.timedelta(days=n)
    if unit == "week":
        return start + dt.timedelta(weeks=n)
    return _add_months(start, n * _UNIT_MONTHS[unit])


def calendar_unit(since: dt.datetime, until: dt.datetime) -> str | None:
    """``"day"``, ``"week"``, ``"month"``, ``"quarter"`` or ``"year"`` if ``[since, until)``
    is exactly one such calendar period (UTC, weeks from Monday), else ``None``."""
    if since != _midnight(since):
        return None
    for unit in ("day", "week", "month", "quarter", "year"):
        if _unit_start(unit, since) == since and _unit_shift(unit, since, 1) == until:
            return unit
    return None


def _day(t: dt.datetime) -> str:
    return f"{t.day} {_MONTHS[t.month]} {t.year}"


@dataclass(frozen=True)
class Window:
    """A report period ``[since, until)`` in naive UTC."""

    since: dt.datetime
    until: dt.datetime
    period: str | None = None  # how it was asked for: "month", "7d", ... (None: since/until)

    @property
    def unit(self) -> str | None:
        """The calendar unit the window is exactly one of, if any."""
        return calendar_unit(self.since, self.until)

    @property
    def label(self) -> str:
        """For people: ``March 2026``, ``week of 2 March 2026``, ``Q1 2026``, or a range."""
        s, u = self.since, self.until
        unit = self.unit
        if unit == "day":
            return _day(s)
        if unit == "week":
            return f"week of {_day(s)}"
        if unit == "month":
            return f"{_MONTHS[s.month]} {s.year}"
        if unit == "quarter":
            return f"Q{(s.month - 1) // 3 + 1} {s.year}"
        if unit == "year":
            return str(s.year)
        if s == _midnight(s) and u == _midnight(u):
            return f"{_day(s)} – {_day(u - dt.timedelta(days=1))}"
        return f"{s:%Y-%m-%d %H:%M} – {u:%Y-%m-%d %H:%M} UTC"

    @property
    def slug(self) -> str:
        """For file names: ``2026-03``, ``2026-W10``, ``2026-Q1``, ``2026-03-01_2026-03-14``."""
        s, u = self.since, self.until
        unit = self.unit
        if unit == "day":
            return f"{s:%Y-%m-%d}"
        if unit == "week":
            year, week, _ = s.isocalendar()
            return f"{year}-W{week:02d}"
        if unit == "month":
            return f"{s:%Y-%m}"
        if unit == "quarter":
            return f"{s.year}-Q{(s.month - 1) // 3 + 1}"
        if unit == "year":
            return f"{s.year}"
        if s == _midnight(s) and u == _midnight(u):
            return f"{s:%Y-%m-%d}_{u - dt.timedelta(days=1):%Y-%m-%d}"
        return f"{s:%Y-%m-%dT%H%M}_{u:%Y-%m-%dT%H%M}"

    def in_progress(self, now: dt.datetime | None = None) -> bool:
        """Whether ``now`` falls inside the window (the period is not over yet)."""
        now = now or utcnow()
        return self.since <= now < self.until

    def to_date(self, now: dt.datetime | None = None) -> dt.datetime:
        """The end of what has happened so far: ``min(until, now)`` (never before since)."""
        now = now or utcnow()
        return max(self.since, min(self.until, now))

    def previous(self, now: dt.datetime | None = None) -> Window:
        """The window to compare with, like for like.

        A calendar month, quarter or year is compared with the one before it; any other
        window with the same length right before it. While the window is in progress,
        only as much of the previous one as has elapsed of this one (month to date
        against the same days of last month).
        """
        unit = self.unit
        if unit in _UNIT_MONTHS:
            start = _unit_shift(unit, self.since, -1)
        else:
            start = self.since - (self.until - self.since)
        elapsed = self.to_date(now) - self.since
        end = min(start + elapsed, self.since) if self.in_progress(now) else self.since
        return Window(start, end)

    def iso(self) -> tuple[str, str]:
        """``(since, until)`` as ISO strings (what the notebook receives)."""
        return self.since.isoformat(), self.until.isoformat()


def _normalize_period(period: str) -> str:
    name = period.strip().lower().replace("_", "-").replace(" ", "-")
    name = name.replace("previous-", "last-").replace("prev-", "last-")
    return _ALIASES.get(name, name)


def resolve_window(
    period: str | None = None,
    since: Any = None,
    until: Any = None,
    *,
    now: dt.datetime | None = None,
) -> Window:
    """The report window from ``period`` or ``since``/``until`` (default: this month).

    ``period``: one of :data:`CALENDAR_PERIODS` (``month`` is the current calendar month,
    ``last-month`` the one before, ...) or a span such as ``"7d"`` (the last 7 days up to
    now). ``since``/``until`` accept what ``records()`` accepts (datetimes, dates, ISO
    strings, spans); ``since`` alone runs to now, ``until`` alone starts at the first of
    its month. Empty strings count as not given. Raises :class:`ValidationError` with a
    one-line message for anything else (both a period and since/until, an unknown
    period, an unparseable time, since not before until).
    """
    now = now or utcnow()
    period = (period or "").strip() or None
    since = since.strip() if isinstance(since, str) else since
    until = until.strip() if isinstance(until, str) else until
    since = since if since not in ("", None) else None
    until = until if until not in ("", None) else None
    if period is not None and (since is not None or until is not None):
        raise ValidationError(f"give either a period ({period!r}) or since/until, not both")
    if period is None and since is None and until is None:
        period = "month"
    if period is not None:
        name = _normalize_period(period)
        last = name.startswith("last-")
        unit = "day" if name == "yesterday" else name.removeprefix("last-")
        if unit in ("day", "week", "month", "quarter", "year"):
            start = _unit_start(unit, now)
            if last or name == "yesterday":
                start = _unit_shift(unit, start, -1)
            return Window(start, _unit_shift(unit, start, 1), name)
        try:
            span = parse_span(period)
        except ValidationError:
            raise ValidationError(
                f"unknown period {period!r}; use one of {', '.join(CALENDAR_PERIODS)} or a "
                "span such as '7d', '24h'"
            ) from None
        if span <= dt.timedelta(0):
            raise ValidationError(f"the period must be longer than zero, got {period!r}")
        return Window(now - span, now, period.strip())
    lo = parse_when(since, name="since", now=now)
    hi = parse_when(until, name="until", now=now)
    if hi is None:
        hi = now
    if lo is None:
        lo = _unit_start("month", hi - dt.timedelta(microseconds=1))
    if lo >= hi:
        raise ValidationError(
            f"since ({lo:%Y-%m-%d %H:%M}) must be before until ({hi:%Y-%m-%d %H:%M}) "
            "(until is exclusive)"
        )
    return Window(lo, hi)


# -- filters ------------------------------------------------------------------------------------


def filter_names(value: Any, what: str = "name") -> list[str] | None:
    """A filter value as a list of names: ``"acme"``, ``"acme,beta"`` or a list; ``""``,
    ``None`` and ``[]`` mean no filter."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(f"{what}: expected names, got {item!r}")
        if item.strip() and item.strip() not in names:
            names.append(item.strip())
    return names or None


def _known(store: Store) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    from sqlalchemy import select

    from .store.models import Org, Project, User

    with store.begin() as conn:
        orgs = dict(conn.execute(select(Org.id, Org.name)).all())
        projects: dict[str, set[str]] = {}
        users: dict[str, set[str]] = {}
        for org_id, name in conn.execute(select(Project.org_id, Project.name)):
            projects.setdefault(orgs[org_id], set()).add(name)
        for org_id, name in conn.execute(select(User.org_id, User.name)):
            users.setdefault(orgs[org_id], set()).add(name)
    return set(orgs.values()), projects, users


def _listing(names: set[str]) -> str:
    shown = sorted(names)
    if not shown:
        return "none yet"
    more = f", ... ({len(shown)} in all)" if len(shown) > 12 else ""
    return ", ".join(shown[:12]) + more


def check_names(
    store: Store, org: Any = None, project: Any = None, user: Any = None
) -> dict[str, list[str]]:
    """The filters as lists of names, each checked against the store's hierarchy.

    A name the store has never seen (no usage, no budget) raises
    :class:`ValidationError` listing the names it knows, so a typo fails at once
    instead of producing an empty report.
    """
    flt = {
        k: v
        for k, v in (
            ("org", filter_names(org, "org")),
            ("project", filter_names(project, "project")),
            ("user", filter_names(user, "user")),
        )
        if v
    }
    if not flt:
        return {}
    orgs, projects, users = _known(store)
    for name in flt.get("org", []):
        if name not in orgs:
            raise ValidationError(f"unknown org {name!r} (the store knows: {_listing(orgs)})")
    scope = flt.get("org") or sorted(orgs)
    where = f" in org {', '.join(flt['org'])}" if "org" in flt else ""
    for what, table in (("project", projects), ("user", users)):
        known = set().union(*(table.get(o, set()) for o in scope))
        for name in flt.get(what, []):
            if name not in known:
                raise ValidationError(
                    f"unknown {what} {name!r}{where} (the store knows: {_listing(known)})"
                )
    return flt


# -- formatting, for the notebook ------------------------------------------------------------------


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
    from .notebook.render import fmt_pct

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
    from .notebook.render import fmt_when

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
    from .notebook.render import Table

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
    from .notebook.render import Note

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
    from .notebook.charts import to_svg

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


# -- running the notebook -------------------------------------------------------------------------

#: Where the report notebook is looked for: inside the package (wheels), then the checkout.
_CANDIDATES = (
    Path(__file__).resolve().parent / "notebooks" / "spend_report.ipynb",
    Path(__file__).resolve().parent.parent / "notebooks" / "spend_report.ipynb",
)
DEFAULT_NOTEBOOK = _CANDIDATES[-1]


def notebook_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The report notebook to run: ``path``, else the one shipped with llmspend."""
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise ConfigError(f"report notebook not found: {str(found)!r}")
        return found
    for candidate in _CANDIDATES:
        if candidate.is_file():
            return candidate
    raise ConfigError(
        "the spend report notebook is not installed with this copy of llmspend; pass "
        "--notebook PATH (notebooks/spend_report.ipynb in the llmspend sources)"
    )


def default_output(window: Window) -> Path:
    """``spend-report-<period>.html`` in the current directory."""
    return Path(f"spend-report-{window.slug}.html")


@contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set environment variables for the kernel papermill starts (it inherits ours)."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_line(text: Any, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def kernel_arguments(kernel_name: str) -> list[str]:
    """Extra command-line arguments for the kernel; checks that it exists.

    An ipykernel kernel is told to log only critical problems: its start-up warning about
    TCP without encryption (it listens on 127.0.0.1) and the interrupt papermill sends
    after a failing cell would otherwise land on stderr of every scheduled run, where cron
    mails them. Failures still surface, as papermill's errors.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        raise ReportError(
            f"no Jupyter kernel named {kernel_name!r}; install one with "
            "'python -m ipykernel install --user' (or pip install ipykernel)"
        ) from None
    if any("ipykernel" in part for part in spec.argv):
        return ["--IPKernelApp.log_level=CRITICAL"]
    return []


def execute_notebook(
    notebook: Path,
    output: Path,
    parameters: Mapping[str, Any],
    *,
    database_url: str,
    kernel_name: str = "python3",
    progress_bar: bool = False,
    timeout: int | None = 600,
) -> Path:
    """Execute ``notebook`` with papermill into ``output``.

    The store's URL goes to the kernel through ``LLMSPEND_DATABASE_URL`` rather than as a
    parameter, so a password in it is not written into the executed notebook. A failing
    cell raises :class:`ReportError` naming the cell and its error in one line.
    """
    try:
        import papermill as pm
        from nbformat import ValidationError as NotebookInvalid
        from papermill.exceptions import PapermillException, PapermillExecutionError
    except ImportError as exc:  # pragma: no cover - an install without the extra
        raise ReportError(
            f"llmspend report needs papermill and nbconvert ({exc.name} is missing): "
            "pip install 'llmspend[notebook]'"
        ) from None
    extra = kernel_arguments(kernel_name)
    try:
        with _environ(LLMSPEND_DATABASE_URL=database_url):
            pm.execute_notebook(
                str(notebook),
                str(output),
                parameters=dict(parameters),
                kernel_name=kernel_name,
                progress_bar=progress_bar,
                execution_timeout=timeout,
                extra_arguments=extra,
            )
    except PapermillExecutionError as exc:
        source = next((ln for ln in str(exc.source).splitlines() if ln.strip()), "")
        raise ReportError(
            f"the report notebook failed in cell {exc.exec_count} ({_one_line(source, 60)}): "
            f"{exc.ename}: {_one_line(exc.evalue)}"
        ) from None
    except TimeoutError as exc:
        raise ReportError(f"the report notebook timed out: {_one_line(exc)}") from None
    except (RuntimeError, PapermillException, NotebookInvalid, ValueError, OSError) as exc:
        # the kernel died or did not start, or the file is not a runnable notebook
        raise ReportError(
            f"the report notebook {str(notebook)!r} could not run: {_one_line(exc)}"
        ) from None
    return output


_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{#- llmspend report: the lab template with nothing loaded from the network -#}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<style type="text/css">
body.jp-Notebook { max-width: 1000px; margin: 0 auto; padding: 16px 24px; }
.jp-Cell { padding: 2px 0; }
.jp-OutputArea-output table { font-size: 13px; }
h1.llmspend-title { margin: 8px 0 4px; font-size: 26px; }
p.llmspend-sub { margin: 0 0 12px; color: #555; line-height: 1.5; }
.llmspend-kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.llmspend-kpi { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.llmspend-kpi-label { color: #666; font-size: 12px; }
.llmspend-kpi-value { font-size: 22px; font-weight: 600; }
.llmspend-kpi-detail { color: #777; font-size: 12px; }
.llmspend-chart svg { max-width: 100%; height: auto; }
</style>
{%- endblock extra_css -%}
"""
#: Cells with these tags are left out of the HTML page.
REMOVED_TAGS: tuple[str, ...] = ("hide-in-report", "parameters", "injected-parameters")
_EXTERNAL_SCRIPT = re.compile(r"<script[^>]+src\s*=\s*[\"']?\s*(?:https?:)?//", re.I)


def to_html(executed: Path, output: Path, *, title: str | None = None) -> Path:
    """Render an executed notebook to one self-contained HTML file at ``output``.

    Code cells' inputs and prompts are left out; nothing is loaded from the network
    (no require.js, MathJax, Mermaid or widget scripts; styles inlined). Written to a
    temporary file first and moved into place, so a failure leaves no partial page.
    """
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    nb = nbformat.read(str(executed), as_version=4)
    nb.metadata.pop("widgets", None)  # live widgets would need scripts from a CDN
    for cell in nb.cells:  # warnings on stderr are for the notebook, not for its readers
        if cell.cell_type == "code":
            cell.outputs = [
                o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")
            ]
    if title:
        nb.metadata["title"] = title
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"llmspend_report.html.j2": _TEMPLATE})],
        template_file="llmspend_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(
        TagRemovePreprocessor(remove_cell_tags=set(REMOVED_TAGS)), enabled=True
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or "report"}})
    if _EXTERNAL_SCRIPT.search(body):  # pragma: no cover - a template change upstream
        raise ReportError("the rendered report would load a script from the network")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")  # created with the umask
    try:
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportError(f"cannot write {str(output)!r}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output


@dataclass
class ReportResult:
    """What :func:`run_report` made."""

    html: Path
    notebook: Path | None
    window: Window
    filters: dict[str, list[str]]
    title: str
    database_url: str
    seconds: float
    totals: dict[str, Any] = field(default_factory=dict)


def _check_output(path: Path, what: str) -> Path:
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ValidationError(f"{what}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValidationError(f"{what}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise ValidationError(f"{what}: {str(path)!r} is a directory")
    return path


def default_title(window: Window) -> str:
    """``LLM spend report · March 2026``."""
    return f"LLM spend report · {window.label}"


def run_report(
    *,
    period: str | None = None,
    since: Any = None,
    until: Any = None,
    org: Any = None,
    project: Any = None,
    user: Any = None,
    database_url: str | None = None,
    output: str | os.PathLike[str] | None = None,
    notebook_output: str | os.PathLike[str] | None = None,
    title: str | None = None,
    decimals: int = 2,
    top: int = 10,
    notebook: str | os.PathLike[str] | None = None,
    kernel_name: str = "python3",
    progress_bar: bool = False,
    timeout: int | None = 600,
    now: dt.datetime | None = None,
) -> ReportResult:
    """Make the spend report: check the parameters, run the notebook, write the HTML.

    Everything that can be checked before the (seconds-long) notebook run is: the period
    (:func:`resolve_window`), the store (it is opened), the org/project/user names
    (:func:`check_names`), the output directories, ``decimals`` and ``top``. Errors are
    :class:`~llmspend.LLMSpendError`\\ s with one-line messages; on any error no HTML is
    written. Returns a :class:`ReportResult` (paths, window, totals of the period).
    """
    from .analytics import usage_report
    from .tracker import Tracker

    started = time.monotonic()
    window = resolve_window(period, since, until, now=now)
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 9:
        raise ValidationError(f"decimals must be a whole number from 0 to 9, got {decimals!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValidationError(f"top must be a whole number of at least 1, got {top!r}")
    html_path = _check_output(Path(output) if output else default_output(window), "output")
    nb_out = _check_output(Path(notebook_output), "notebook output") if notebook_output else None
    source = notebook_path(notebook)
    tracker = Tracker(database_url)
    url = tracker.settings.database_url
    flt = check_names(tracker.store, org, project, user)
    title = title or default_title(window)
    s, u = window.iso()
    parameters = {
        "period": "",
        "since": s,
        "until": u,
        "org": flt.get("org", []),
        "project": flt.get("project", []),
        "user": flt.get("user", []),
        "database_url": "",
        "decimals": decimals,
        "top": top,
        "title": title,
    }
    with tempfile.TemporaryDirectory(prefix="llmspend-report-") as tmp:
        executed = nb_out or Path(tmp) / "spend_report.ipynb"
        execute_notebook(
            source,
            executed,
            parameters,
            database_url=url,
            kernel_name=kernel_name,
            progress_bar=progress_bar,
            timeout=timeout,
        )
        to_html(executed, html_path, title=title)
    totals = usage_report("org", window.since, window.until, store=tracker.store, **flt).attrs[
        "totals"
    ]
    from .store.engine import safe_url

    return ReportResult(
        html=html_path,
        notebook=nb_out,
        window=window,
        filters=flt,
        title=title,
        database_url=safe_url(url),
        seconds=time.monotonic() - started,
        totals=dict(totals),
    )
