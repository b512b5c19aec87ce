"""The dashboard and charts, as a demanding user finds them (exploratory testing, views)."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

import llmspend
from llmspend.notebook import charts
from llmspend.notebook.widgets import Dashboard

NOW = dt.datetime.now(dt.UTC)


def call(model: str, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": NOW - dt.timedelta(hours=1), "provider": "openai", "model": model, "org": "acme",
        "project": "churn", "user": "ana", "input_tokens": 1000, "output_tokens": 100,
        "status": "ok",
    }  # fmt: skip
    return row | extra


@pytest.fixture
def dashboard_of(installed: Any) -> Iterator[Any]:
    made: list[Dashboard] = []

    def make(rows: list[dict[str, Any]]) -> Dashboard:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unknown model's warning
            llmspend.ingest(rows)
        dash = llmspend.dashboard(live=False)
        made.append(dash)
        assert dash.last_error is None, dash.last_error
        return dash

    yield make
    for dash in made:
        dash.close()


def test_calls_of_a_model_with_no_price_are_not_shown_as_a_silent_zero(dashboard_of: Any) -> None:
    dash = dashboard_of([call("no-such-model-x")])
    assert "1 unpriced call not counted" in dash.tiles.value
    assert "1 unpriced call" in repr(dash)
    assert "n/a" in dash.tiles.value  # no average of $0 over a call with no price
    assert "+ 1 unpriced" in dash.by_model.value and "+ 1 unpriced" in dash.by_user.value


def test_the_average_per_call_leaves_unpriced_calls_out(dashboard_of: Any) -> None:
    dash = dashboard_of([call("gpt-4o", cost_usd=Decimal("3")), call("no-such-model-x")])
    assert "1 unpriced call not counted" in dash.tiles.value
    assert ">$3.00<" in dash.tiles.value  # spend and average: $3 over the one priced call
    assert ">$1.50<" not in dash.tiles.value
    assert "+ 1 unpriced" in dash.by_model.value
    assert "gpt-4o $3.00 +" not in dash.by_model.value


def test_priced_calls_only_show_no_unpriced_note(dashboard_of: Any) -> None:
    dash = dashboard_of([call("gpt-4o", cost_usd=Decimal("3"))])
    assert "unpriced" not in dash.tiles.value + repr(dash)
    assert " unpriced<" not in dash.by_model.value  # no label (the tooltip names the column)


def test_breakdown_labels_say_how_many_calls_are_unpriced() -> None:
    frame = pd.DataFrame(
        {"model": ["a", "b"], "cost_usd": [Decimal("2"), Decimal(0)], "calls": [3, 2],
         "unpriced_calls": [0, 2]}
    )  # fmt: skip
    svg = charts.to_svg(charts.breakdown(frame, by="model"))
    assert "$2.00" in svg and "$0.00 + 2 unpriced" in svg
    assert "$2.00 +" not in svg


def test_a_dashboard_whose_refresh_failed_says_its_numbers_are_old(
    dashboard_of: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text and the exported snapshot of a dashboard whose store went away say that
    the numbers are those of the last refresh that worked."""
    from llmspend import analytics

    dash = dashboard_of([call("gpt-4o", cost_usd=Decimal("3"))])
    assert "refresh failed" not in repr(dash)

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise llmspend.StoreError("cannot reach the store")

    monkeypatch.setattr(analytics, "dashboard_data", gone)
    dash.refresh()
    text = repr(dash)
    assert "$3.00 in 1 calls" in text and "the last refresh failed: StoreError" in text
    assert "as of " in text and " UTC" in text
    assert "the last refresh failed" in dash.snapshot_html()


def test_a_trend_by_many_groups_keeps_the_top_ones_and_sums_the_rest() -> None:
    """Forty projects would be forty lines sharing ten colours."""
    day = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    frame = pd.DataFrame(
        [
            {"period": day + dt.timedelta(days=d), "project": f"p{i:02}", "cost_usd": Decimal(i)}
            for i in range(40)
            for d in range(3)
        ]
    )
    chart = charts.trend(frame, by="project", top=5)
    values = chart.to_dict()["datasets"]
    rows = next(iter(values.values()))
    groups = {r["project"] for r in rows}
    assert groups == {"p39", "p38", "p37", "p36", "other (36)"}
    other = [r["cost_usd"] for r in rows if r["project"] == "other (36)"]
    assert other == [sum(range(36))] * 3  # every bucket keeps its total
    few = charts.trend(frame[frame["project"] < "p03"], by="project").to_dict()
    assert {r["project"] for r in next(iter(few["datasets"].values()))} == {"p00", "p01", "p02"}


def test_a_user_filter_keeps_the_budgets_of_the_orgs_and_projects_of_that_users_calls(
    dashboard_of: Any,
) -> None:
    """Another org's project of the same name is not the user's."""
    for scope, name in (("org", "acme"), ("org", "beta"), ("project", "acme/churn"),
                        ("project", "beta/churn"), ("user", "acme/ana")):  # fmt: skip
        llmspend.set_budget(scope, name, 100)
    dash = dashboard_of([call("gpt-4o"), call("gpt-4o", org="beta", user="bo")])
    dash.user_menu.value = "ana"
    assert dash.last_error is None, dash.last_error
    assert sorted(s.budget for s in dash.statuses) == ["acme", "acme/ana", "acme/churn"]
    dash.user_menu.value = "(all)"
    assert len(dash.statuses) == 5
