"""``llmspend.dashboard()``: the numbers it shows, its filters, and live refresh.

Widgets work without a kernel (their state is plain Python), so these tests read the
widgets' values directly.
"""

from __future__ import annotations

import datetime as dt
import time
import types
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import ipywidgets
import openai
import pytest

import llmspend
from llmspend.money import format_usd
from llmspend.notebook import widgets
from llmspend.notebook.widgets import Dashboard
from llmspend.sim import SimServer

PEOPLE = [("churn", "ana"), ("churn", "bo"), ("pricing", "chen")]
MODELS = ["gpt-4o-mini", "gpt-4o"]


@pytest.fixture
def history(installed: Any) -> Any:
    """Ten days of calls (2 to 11 days ago) for three people, and budgets at every level."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for day in range(2, 12):
        for i, (project, user) in enumerate(PEOPLE):
            for model in MODELS:
                rows.append(
                    {
                        "ts": now - dt.timedelta(days=day, hours=i),
                        "provider": "openai",
                        "model": model,
                        "org": "acme",
                        "project": project,
                        "user": user,
                        "input_tokens": 1000 * (day + i),
                        "output_tokens": 100 * day,
                        "status": "ok",
                    }
                )
    assert llmspend.ingest(rows) == len(rows)
    llmspend.set_budget("org", "acme", 500, "month")
    llmspend.set_budget("project", "acme/churn", 100, "month")
    llmspend.set_budget("project", "acme/pricing", 50, "month", mode="soft")
    llmspend.set_budget("user", "acme/churn/ana", 5, "day", mode="soft")
    return installed


@pytest.fixture
def dashboards() -> Iterator[list[Dashboard]]:
    """Dashboards made by a test, closed afterwards (their timers and hooks stopped)."""
    made: list[Dashboard] = []
    yield made
    for d in made:
        d.close()


def make(dashboards: list[Dashboard], **options: Any) -> Dashboard:
    dash = llmspend.dashboard(**options)
    dashboards.append(dash)
    return dash


def spend(**filters: Any) -> tuple[Decimal, int]:
    frame = llmspend.records(**filters)
    return sum(frame["cost_usd"], Decimal(0)), len(frame)


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_dashboard_shows_the_numbers(history: Any, dashboards: list[Dashboard]) -> None:
    dash = make(dashboards, period="30d", live=False)
    assert isinstance(dash, ipywidgets.Widget) and isinstance(dash, ipywidgets.VBox)
    assert dash.last_error is None, dash.last_error
    total, calls = spend()
    assert format_usd(total) in dash.tiles.value
    assert f">{calls:,}<" in dash.tiles.value
    gauges = dash.gauges.value
    assert "<svg" in gauges and "mathjax_ignore" in gauges
    for name in ("acme/churn", "acme/pricing", "acme/churn/ana", "org budgets", "user budgets"):
        assert name in gauges, name
    for model in MODELS:
        assert model in dash.by_model.value
    assert "churn" in dash.by_project.value and "pricing" in dash.by_project.value
    for _, user in PEOPLE:
        assert user in dash.by_user.value
    assert "<svg" in dash.trend.value and "<svg" in dash.forecast.value
    assert "no alerts" in dash.alerts_html.value
    assert [s.budget for s in dash.statuses] == [s.budget for s in llmspend.budget_status()]
    assert "updated" in dash.status.value


def test_filters_redraw_with_the_filtered_numbers(
    history: Any, dashboards: list[Dashboard]
) -> None:
    dash = make(dashboards, period="30d", live=False)
    assert dash.org_menu.options == ("(all)", "acme")
    assert set(dash.user_menu.options) >= {"ana", "bo", "chen"}
    before = dash.refresh_count
    dash.project_menu.value = "pricing"
    assert dash.refresh_count == before + 1
    total, calls = spend(project="pricing")
    assert format_usd(total) in dash.tiles.value and f">{calls:,}<" in dash.tiles.value
    assert "chen" in dash.by_user.value and "ana" not in dash.by_user.value
    assert "acme/pricing" in dash.gauges.value and "acme/churn" not in dash.gauges.value
    dash.project_menu.value = "(all)"
    dash.user_menu.value = "ana"
    total, calls = spend(user="ana")
    assert format_usd(total) in dash.tiles.value
    assert "acme/churn/ana" in dash.gauges.value and "acme/pricing" not in dash.gauges.value
    dash.user_menu.value = "(all)"
    dash.period_buttons.value = "24h"  # the history is older than a day
    assert ">0<" in dash.tiles.value and "no spend" in dash.by_model.value
    assert dash.filters == {}


def test_dashboard_options_preselect_filters(history: Any, dashboards: list[Dashboard]) -> None:
    dash = make(dashboards, org="acme", project="churn", period="month", live=False)
    assert dash.filters == {"org": "acme", "project": "churn"} and dash.period == "month"
    with pytest.raises(llmspend.ValidationError, match="period"):
        llmspend.dashboard(period="fortnight")


class ManualTimer:
    """Stands in for ``threading.Timer``: the test fires it, so no clock decides anything."""

    def __init__(self, made: list[ManualTimer], interval: float, function: Callable[[], None]):
        self.interval, self.function, self.daemon, self.cancelled = interval, function, False, False
        made.append(self)

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


def test_live_refresh_is_throttled_and_stops_on_close(
    installed: Any,
    fresh_sim: SimServer,
    dashboards: list[Dashboard],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)

    def call() -> None:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )

    dash = make(dashboards, period="24h", min_interval=1.0)
    start = dash.refresh_count
    call()  # a real timer refreshes soon
    assert wait_for(lambda: dash.refresh_count == start + 1)

    timers: list[ManualTimer] = []
    fake = types.SimpleNamespace(
        Timer=lambda interval, function: ManualTimer(timers, interval, function)
    )
    monkeypatch.setattr(widgets, "threading", fake)
    for _ in range(5):  # the listener runs in the caller's thread, after each commit
        call()
    # a burst of calls gives one refresh, not five: one timer, due within min_interval
    assert len(timers) == 1 and 0 <= timers[0].interval <= dash.min_interval
    assert dash.refresh_count == start + 1
    timers[0].function()  # the throttle's time has come
    assert dash.refresh_count == start + 2 and len(timers) == 1
    total, calls = spend()
    assert calls == 6 and f">{calls:,}<" in dash.tiles.value
    assert format_usd(total) in dash.tiles.value

    dash.live_box.value = False
    call()
    assert len(timers) == 1 and dash.refresh_count == start + 2  # paused: nothing scheduled

    hooks = installed.after_record_hooks
    n = len(hooks)
    dash.close()
    assert len(hooks) == n - 1
    call()
    assert len(timers) == 1 and dash.refresh_count == start + 2


def test_refresh_errors_are_shown_not_raised(
    installed: Any, dashboards: list[Dashboard], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspend import analytics

    dash = make(dashboards, live=False)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("store unreachable")

    monkeypatch.setattr(analytics, "dashboard_data", broken)
    dash.refresh()
    assert dash.last_error == "RuntimeError: store unreachable"
    assert "refresh failed" in dash.status.value
