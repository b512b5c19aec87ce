"""``llmspend.dashboard()``: a live ipywidgets dashboard.

Layout (top to bottom): filters (org, project, user, period, live, refresh) and the
time of the last refresh; headline tiles (spend, calls, tokens, average per call, and the
real-time window: calls, spend and burn rate); budget gauges per level next to the
spending trend and its forecast; breakdowns by model, project and user; recent alerts as
a table and a timeline.

Charts are Altair, drawn to SVG locally by vl-convert (nothing fetched from a CDN) and
shown in ``HTML`` widgets, so the dashboard works offline and in any frontend that
renders ipywidgets. Its output also carries a static snapshot (``text/html``: the same
cards, gauges and SVG charts), which exported notebooks, nbviewer and GitHub show; a
frontend with live widgets (JupyterLab) renders the widget instead. It refreshes by
itself when calls are recorded in this kernel (through the tracker's
``after_record_hooks``, at most once every ``min_interval`` seconds, on a timer thread),
when a filter changes, and on the refresh button.

In team mode (a gateway and its credential) every number comes through the gateway, scoped
by the caller's role (``dashboard_data()``, the analytics, ``budget_status()``,
``alerts()``), the filter menus list the names it lets the caller see
(``GatewayClient.names()``), and a live dashboard refreshes on the gateway's answers to
this kernel's calls (:func:`llmspend.teammode.add_observer`); no store is opened.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import threading
import time
import weakref
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..errors import ValidationError
from ..teamclient import client as team_client
from ..teammode import add_observer, remove_observer
from ..timeutil import utcnow
from ..tracker import get_tracker
from .render import NO_MATH, alerts_table, fmt_int, fmt_usd, snapshot_html

if TYPE_CHECKING:
    from ..budgets.spec import BudgetStatus
    from ..tracker import Tracker

__all__ = ["PERIODS", "Dashboard", "dashboard"]

log = logging.getLogger("llmspend")

ALL = "(all)"
REALTIME_WINDOW = "15m"
#: period choice → (since, trend granularity, label)
PERIODS: dict[str, tuple[str | None, str, str]] = {
    "24h": ("24h", "hour", "last 24 hours"),
    "7d": ("7d", "day", "last 7 days"),
    "30d": ("30d", "day", "last 30 days"),
    "month": (None, "day", "this month"),
}
_TILE = (
    "display:inline-block;min-width:120px;margin:0 8px 6px 0;padding:6px 10px;"
    "border:1px solid var(--jp-border-color2,#e0e0e0);border-radius:4px"
)


def _since(period: str) -> dt.datetime | str:
    since = PERIODS[period][0]
    if since is not None:
        return since
    now = utcnow()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _first(frame: Any, column: str, default: Any = 0) -> Any:
    """``frame[column][0]`` for a one-row frame (or a dict), else ``default``."""
    if frame is None:
        return default
    if isinstance(frame, dict):
        return frame.get(column, default)
    if column in getattr(frame, "columns", ()) and len(frame):
        value = frame[column].iloc[0]
        return default if value is None else value
    return default


def _sum(frame: Any, column: str) -> Any:
    if frame is None or column not in getattr(frame, "columns", ()) or not len(frame):
        return 0
    values = [v for v in frame[column] if v is not None and v == v]
    if values and isinstance(values[0], Decimal):
        return sum(values, Decimal(0))
    return sum(values)


def _unpriced(data: dict[str, Any]) -> int:
    """How many of the period's calls have no known price (their cost is missing)."""
    count = _first(data.get("totals"), "unpriced_calls", None)
    if count is None or count != count:
        count = _sum(data.get("by_model"), "unpriced_calls")
    return int(count or 0)


def _unpriced_text(count: int) -> str:
    return f"{fmt_int(count)} unpriced call{'' if count == 1 else 's'} not counted"


def _no_math(content: str) -> str:
    """Keep MathJax from typesetting "$1 ... $2" in an HTML widget as math."""
    return f'<div class="{NO_MATH}">{content}</div>'


def _tile(label: str, value: str, sub: str = "") -> str:
    return (
        f'<div style="{_TILE}"><div style="font-size:11px;color:#757575">{html.escape(label)}'
        f'</div><div style="font-size:18px;font-weight:600">{html.escape(value)}</div>'
        f'<div style="font-size:10px;color:#9e9e9e">{html.escape(sub)}</div></div>'
    )


def _budget_applies(
    status: BudgetStatus, filters: dict[str, Any], projects: set[tuple[str, str]]
) -> bool:
    """Does the budget constrain the calls the filters select?

    ``projects``: the (org, project) pairs those calls were made in (a user filter alone
    keeps the budgets of the orgs and projects the user worked in: another org's project
    of the same name is not theirs).
    """
    org, project, user = filters.get("org"), filters.get("project"), filters.get("user")
    parts = status.budget.split("/")
    if org and parts[0] != org:
        return False
    if status.scope == "org" and user and not project and not org:
        return parts[0] in {o for o, _ in projects}
    if status.scope == "project" and project and parts[1] != project:
        return False
    if status.scope == "project" and user and not project and tuple(parts) not in projects:
        return False
    if project and status.scope == "user" and len(parts) == 3 and parts[1] != project:
        return False
    return not (user and status.scope == "user" and parts[-1] != user)


def _forecast_limit(statuses: list[BudgetStatus], filters: dict[str, Any]) -> Decimal | None:
    """The monthly limit the month's forecast is drawn against: the most specific budget
    for the filters (user, then project, then org), if there is one."""
    scope = "user" if "user" in filters else "project" if "project" in filters else "org"
    for wanted in dict.fromkeys((scope, "project", "org")):
        limits = [s.limit_usd for s in statuses if s.period == "month" and s.scope == wanted]
        if len(limits) == 1 or (limits and wanted == scope):
            return min(limits)
    return None


def _names() -> tuple[list[str], list[str], list[str]]:
    """Every org, project and user name the store knows (for the filter menus); in team
    mode, the names the gateway lets the caller see."""
    team = team_client()
    if team is not None:
        return team.names()
    from sqlalchemy import select

    from ..store.models import Org, Project, User

    with get_tracker().store.begin() as conn:
        orgs = conn.execute(select(Org.name).distinct().order_by(Org.name)).scalars().all()
        projects = (
            conn.execute(select(Project.name).distinct().order_by(Project.name)).scalars().all()
        )
        users = conn.execute(select(User.name).distinct().order_by(User.name)).scalars().all()
    return list(orgs), list(projects), list(users)


class Dashboard(W.VBox):
    """The dashboard widget; ``refresh()`` redraws it, ``close()`` stops live updates."""

    def __init__(
        self,
        *,
        org: str | None = None,
        project: str | None = None,
        user: str | None = None,
        period: str = "7d",
        live: bool = True,
        min_interval: float = 2.0,
    ) -> None:

        if period not in PERIODS:
            raise ValidationError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        self.min_interval = float(min_interval)
        self.data: dict[str, Any] = {}
        self.statuses: list[BudgetStatus] = []
        self.refresh_count = 0
        self.last_error: str | None = None
        self._drawn_at: dt.datetime | None = None  # the last refresh that worked (UTC)
        self._lock = threading.RLock()  # one refresh at a time
        self._timer_lock = threading.Lock()  # scheduling only: never held while drawing
        self._timer: threading.Timer | None = None
        self._last_refresh = 0.0
        self._closed = False
        self._tracker: Tracker | None = None
        self._hook: Any = None
        self._observer: Any = None
        self._team = team_client() is not None  # team mode: no tracker, no store

        orgs, projects, users = _names()

        def menu(label: str, names: list[str], value: str | None) -> W.Dropdown:
            options = [ALL, *names]
            if value and value not in options:
                options.append(value)
            return W.Dropdown(
                options=options,
                value=value or ALL,
                description=label,
                layout=W.Layout(width="190px"),
                style={"description_width": "52px"},
            )

        self.org_menu = menu("org", orgs, org)
        self.project_menu = menu("project", projects, project)
        self.user_menu = menu("user", users, user)
        self.period_buttons = W.ToggleButtons(
            options=list(PERIODS),
            value=period,
            style={"button_width": "64px"},
            tooltips=[v[2] for v in PERIODS.values()],
        )
        self.live_box = W.Checkbox(value=live, description="live", indent=False)
        self.live_box.layout.width = "60px"
        self.refresh_button = W.Button(description="refresh", icon="refresh")
        self.refresh_button.layout.width = "100px"
        self.status = W.HTML()
        self.tiles = W.HTML()
        self.gauges = W.HTML()
        self.trend = W.HTML()
        self.forecast = W.HTML()
        self.by_model = W.HTML()
        self.by_project = W.HTML()
        self.by_user = W.HTML()
        self.alerts_html = W.HTML()
        self.alert_chart = W.HTML()

        title = W.HTML('<div style="font-size:16px;font-weight:600">llmspend · spend</div>')
        filters = W.HBox(
            [
                self.org_menu,
                self.project_menu,
                self.user_menu,
                self.period_buttons,
                self.live_box,
                self.refresh_button,
            ],
            layout=W.Layout(flex_flow="row wrap", align_items="center"),
        )
        row = W.Layout(flex_flow="row wrap", align_items="flex-start")
        super().__init__(
            [
                W.HBox([title, self.status], layout=W.Layout(justify_content="space-between")),
                filters,
                self.tiles,
                W.HBox([self.gauges, W.VBox([self.trend, self.forecast])], layout=row),
                W.HBox([self.by_model, self.by_project, self.by_user], layout=row),
                W.HBox([self.alerts_html, self.alert_chart], layout=row),
            ]
        )
        self.add_class("llmspend-dashboard")
        for w in (self.org_menu, self.project_menu, self.user_menu, self.period_buttons):
            w.observe(self._on_filter, names="value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        if self._team:
            self._observe_gateway()
        else:
            self._attach(get_tracker())
        self.refresh()

    # -- filters -------------------------------------------------------------------------------
    @property
    def filters(self) -> dict[str, Any]:
        """The org/project/user filters in force (only those set)."""
        out: dict[str, Any] = {}
        for key, menu in (
            ("org", self.org_menu),
            ("project", self.project_menu),
            ("user", self.user_menu),
        ):
            if menu.value and menu.value != ALL:
                out[key] = menu.value
        return out

    @property
    def period(self) -> str:
        return str(self.period_buttons.value)

    def _on_filter(self, change: Any) -> None:
        self.refresh()

    # -- live updates ------------------------------------------------------------------------
    def _attach(self, tracker: Tracker) -> None:
        if self._tracker is tracker:
            return
        self._detach()
        ref = weakref.ref(self)

        def hook(call: Any, row: dict[str, Any]) -> None:
            dash = ref()
            if dash is None:
                return
            dash.request_refresh()

        self._hook, self._tracker = hook, tracker
        tracker.after_record_hooks.append(hook)

    def _observe_gateway(self) -> None:
        """Team mode: refresh when the gateway answers one of this kernel's calls."""
        ref = weakref.ref(self)

        def observer(answer: Any) -> None:
            dash = ref()
            if dash is not None:
                dash.request_refresh()

        self._observer = observer
        add_observer(observer)

    def _detach(self) -> None:
        if self._tracker is not None and self._hook in self._tracker.after_record_hooks:
            self._tracker.after_record_hooks.remove(self._hook)
        self._tracker = self._hook = None
        if self._observer is not None:
            remove_observer(self._observer)
            self._observer = None

    def request_refresh(self) -> None:
        """Refresh soon: at once if the last refresh is older than ``min_interval``."""
        if self._closed or not self.live_box.value:
            return
        with self._timer_lock:
            if self._timer is not None:
                return  # a refresh is already due; it will see this call too
            delay = max(0.0, self._last_refresh + self.min_interval - time.monotonic())
            self._timer = threading.Timer(delay, self._timed_refresh)
            self._timer.daemon = True
            self._timer.start()

    def _timed_refresh(self) -> None:
        with self._timer_lock:
            self._timer = None
        self.refresh()

    def close(self) -> None:
        """Stop live updates and close the widgets."""
        self._closed = True
        lock = getattr(self, "_timer_lock", None)  # None when __init__ failed half-way
        if lock is not None:
            with lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            self._detach()
        for child in self.children:
            child.close()
        super().close()

    def __repr__(self) -> str:
        totals = self.data.get("totals")
        cost = _first(totals, "cost_usd", None)
        calls = int(_first(totals, "calls", 0) or 0)
        where = ", ".join(f"{k}={v}" for k, v in self.filters.items()) or "everything"
        unpriced = _unpriced(self.data)
        if unpriced:
            where = f"{where}; {_unpriced_text(unpriced)}"
        label = PERIODS[self.period][2] if self.period in PERIODS else self.period
        stale = ""
        if self.last_error is not None:  # the numbers shown are those of the last good refresh
            drawn = f"as of {self._drawn_at:%H:%M:%S} UTC" if self._drawn_at else "no data"
            stale = f"; {drawn}, the last refresh failed: {self.last_error}"
        return (
            f"<llmspend dashboard: {fmt_usd(cost)} in {calls:,} calls, {label}, {where}; "
            f"{len(self.statuses)} budgets{stale}>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, its text, and a static snapshot as ``text/html`` (see
        :meth:`snapshot_html`): a renderer shows the richest of them it supports."""
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {"text/plain": repr(self)}
        try:
            bundle["text/html"] = self.snapshot_html()
        except Exception:  # a snapshot never costs the user the widget
            log.exception("llmspend dashboard snapshot failed")
        return bundle

    def snapshot_html(self) -> str:
        """The dashboard as drawn at its last refresh, as static HTML with inline SVG."""
        with self._lock:
            return snapshot_html(
                repr(self),
                [
                    [self.tiles.value],
                    [self.gauges.value, self.trend.value + self.forecast.value],  # as laid out live
                    [self.by_model.value, self.by_project.value, self.by_user.value],
                    [self.alerts_html.value, self.alert_chart.value],
                ],
            )

    # -- drawing ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the data and redraw everything. Never raises (errors show in the header)."""
        if self._closed:
            return
        with self._lock:
            try:
                self._refresh()
                self.last_error = None
                self._drawn_at = utcnow()
            except Exception as exc:
                log.exception("llmspend dashboard refresh failed")
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.status.value = (
                    f'<span style="color:#b00020;font-size:11px">refresh failed: '
                    f"{html.escape(self.last_error)}</span>"
                )
            finally:
                self._last_refresh = time.monotonic()
                self.refresh_count += 1

    def _refresh(self) -> None:
        import llmspend

        from .. import analytics
        from . import charts

        if not self._team:
            self._attach(get_tracker())
        filters = self.filters
        since = _since(self.period)
        granularity, label = PERIODS[self.period][1], PERIODS[self.period][2]
        data = analytics.dashboard_data(
            since, granularity=granularity, realtime_window=REALTIME_WINDOW, **filters
        )
        trend = data["trend"]
        by_project = data.get("by_project")
        projects = (
            set(zip(by_project["org"], by_project["project"], strict=True))
            if by_project is not None and len(by_project)
            else set()
        )
        statuses = [s for s in llmspend.budget_status() if _budget_applies(s, filters, projects)]
        alerts = llmspend.alerts(since, **filters)
        self.data, self.statuses = dict(data, alert_rows=alerts), statuses

        self.tiles.value = self._tiles(data, label)
        self.gauges.value = _no_math(charts.to_svg(charts.budget_gauges(statuses, title="Budgets")))
        self.trend.value = _no_math(
            charts.to_svg(charts.trend(trend, title=f"Spend per {granularity}, {label}"))
        )
        month = analytics.spending_trends(granularity="day", since=_since("month"), **filters)
        limit = _forecast_limit(statuses, filters)
        self.forecast.value = _no_math(
            charts.to_svg(charts.forecast(month, limit=limit, title="This month and its forecast"))
        )
        for widget, key, by in (
            (self.by_model, "by_model", "model"),
            (self.by_project, "by_project", "project"),
            (self.by_user, "by_user", "user"),
        ):
            frame = data.get(key)
            widget.value = _no_math(charts.to_svg(charts.breakdown(frame, by=by, top=8)))
        recent = alerts.tail(10) if len(alerts) else alerts
        self.alerts_html.value = alerts_table(recent, title="Recent alerts")._repr_html_()
        self.alert_chart.value = (
            _no_math(charts.to_svg(charts.alert_timeline(recent, title="Alert timeline")))
            if len(recent)
            else ""
        )
        live = "● live" if self.live_box.value else "paused"
        self.status.value = (
            f'<span style="font-size:11px;color:#757575">{live} · updated '
            f"{utcnow().strftime('%H:%M:%S')} UTC</span>"
        )

    def _tiles(self, data: dict[str, Any], label: str) -> str:
        totals = data.get("totals")
        cost = _first(totals, "cost_usd", None)
        if cost is None:
            cost = _sum(data.get("by_model"), "cost_usd")
        calls = int(_first(totals, "calls", 0) or _sum(data.get("by_model"), "calls"))
        tokens_in = int(_first(totals, "input_tokens", 0) or 0)
        tokens_out = int(_first(totals, "output_tokens", 0) or 0)
        unpriced = _unpriced(data)
        cost = Decimal(cost) if not isinstance(cost, Decimal) else cost
        priced = calls - unpriced  # an unpriced call has no cost: it is not averaged as $0
        avg: Decimal | None = (cost / priced) if priced > 0 else None if unpriced else Decimal(0)
        rt = data.get("realtime")
        rt_calls = int(_first(rt, "calls", 0) or 0)
        rt_cost = _first(rt, "cost_usd", Decimal(0)) or Decimal(0)
        burn = _first(rt, "burn_rate_usd_per_hour", None)
        window = REALTIME_WINDOW
        # An unknown model's calls are never shown as a silent $0 (DESIGN §4).
        spend_note = f"{label} · {_unpriced_text(unpriced)}" if unpriced else label
        tiles = [
            _tile("spend", fmt_usd(cost), spend_note),
            _tile("calls", fmt_int(calls), label),
            _tile("tokens in / out", f"{fmt_int(tokens_in)} / {fmt_int(tokens_out)}", label),
            _tile("per call", fmt_usd(avg), "average of priced calls" if unpriced else "average"),
            _tile(f"last {window}", fmt_usd(Decimal(rt_cost)), f"{fmt_int(rt_calls)} calls"),
        ]
        if burn is not None:
            tiles.append(_tile("burn rate", f"{fmt_usd(Decimal(burn))}/h", f"last {window}"))
        return f'<div class="llmspend-tiles {NO_MATH}">' + "".join(tiles) + "</div>"


def dashboard(**options: Any) -> Dashboard:
    """Build and return the dashboard widget (see :class:`Dashboard` for the options)."""
    return Dashboard(**options)
