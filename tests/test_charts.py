"""Altair charts: their specs (``to_dict()``), offline SVG/PNG rendering, and export."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from llmspend.budgets.spec import BudgetStatus
from llmspend.notebook import charts

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def trend_frame(days: int = 10) -> pd.DataFrame:
    """Like ``analytics.spending_trends``: ``period`` buckets, exact ``cost_usd``."""
    rows = []
    for i in range(days):
        day = (NOW - dt.timedelta(days=days - 1 - i)).replace(hour=0)
        rows.append({"period": day, "model": "gpt-4o", "cost_usd": Decimal("1.25"), "calls": 5})
        rows.append(
            {"period": day, "model": "gpt-4o-mini", "cost_usd": Decimal("0.10") * i, "calls": i}
        )
    return pd.DataFrame(rows)


def status(name: str, scope: str, spent: str, limit: str = "100", **kw: Any) -> BudgetStatus:
    spent_d, limit_d = Decimal(spent), Decimal(limit)
    pct = float(spent_d * 100 / limit_d)
    state = "exceeded" if pct >= 100 else "warning" if pct >= 80 else "ok"
    values: dict[str, Any] = {
        "budget": name, "scope": scope, "mode": "hard", "period": "month",
        "period_start": NOW.replace(day=1), "period_end": NOW.replace(month=12, day=1),
        "limit_usd": limit_d, "spent_usd": spent_d, "reserved_usd": Decimal("2.5"),
        "remaining_usd": max(limit_d - spent_d, Decimal(0)), "percent_used": pct,
        "state": state, "projected_usd": None,
    }  # fmt: skip
    values.update(kw)
    return BudgetStatus(**values)


STATUSES = [
    status("acme", "org", "120", "500"),
    status("acme/churn", "project", "85"),
    status("acme/ana", "user", "5.5", "5"),
]


def alerts_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "ts": [NOW, NOW + dt.timedelta(hours=1), NOW + dt.timedelta(hours=2)],
            "kind": ["threshold", "threshold", "refused"],
            "budget": ["acme/churn", "acme/churn", "acme/ana"],
            "scope": ["project", "project", "user"],
            "threshold": [Decimal("0.5"), Decimal("0.8"), Decimal("0")],
            "percent_used": [50.1, 80.4, 99.0],
            "spent_usd": [Decimal("50.1"), Decimal("80.4"), Decimal("4.95")],
            "limit_usd": [Decimal(100), Decimal(100), Decimal(5)],
            "call_cost_usd": [Decimal("0.1"), Decimal("0.2"), None],
            "acknowledged": [False, False, False],
        }
    )


def layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every unit spec inside a (possibly layered / concatenated) spec."""
    out = []
    for key in ("layer", "vconcat", "hconcat", "concat"):
        for sub in spec.get(key, []):
            out.extend(layers(sub))
    if "mark" in spec:
        out.append(spec)
    return out


def mark(unit: dict[str, Any]) -> str:
    m = unit["mark"]
    return m if isinstance(m, str) else m["type"]


def data_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return next(iter(spec["datasets"].values()))


def assert_renders(chart: Any, *texts: str) -> str:
    svg = charts.to_svg(chart)
    assert svg.lstrip().startswith("<svg") and "</svg>" in svg
    for text in texts:
        assert text in svg, text
    for cdn in ("cdn.jsdelivr", "unpkg.com", "http://", "https://"):
        assert cdn not in svg.replace("http://www.w3.org", "")
    return svg


def test_trend_spec_and_svg() -> None:
    chart = charts.trend(trend_frame(), title="Daily spend")
    spec = chart.to_dict()
    assert spec["title"] == "Daily spend"
    unit = layers(spec)[0]
    assert mark(unit) == "line"
    assert (
        unit["encoding"]["x"]["field"] == "period" and unit["encoding"]["x"]["type"] == "temporal"
    )
    assert unit["encoding"]["y"]["field"] == "cost_usd"
    values = data_of(spec)
    assert len(values) == 10  # summed per period over the models
    assert values[-1]["cost_usd"] == pytest.approx(1.25 + 0.9)
    assert_renders(chart, "Daily spend")

    by_model = charts.trend(trend_frame(), by="model", cumulative=True).to_dict()
    unit = layers(by_model)[0]
    assert unit["encoding"]["color"]["field"] == "model"
    values = [v for v in data_of(by_model) if v["model"] == "gpt-4o"]
    assert values[-1]["cost_usd"] == pytest.approx(12.5)  # cumulative per model


def test_breakdown_sorts_and_folds_the_tail_into_other() -> None:
    frame = pd.DataFrame(
        {"model": [f"m{i}" for i in range(12)], "cost_usd": [Decimal(i) for i in range(12)],
         "calls": list(range(12))}
    )  # fmt: skip
    chart = charts.breakdown(frame, by="model", top=5)
    spec = chart.to_dict()
    values = data_of(spec)
    assert [v["model"] for v in values] == ["m11", "m10", "m9", "m8", "other (8)"]
    assert values[-1]["cost_usd"] == pytest.approx(sum(range(8)))
    assert values[-1]["calls"] == sum(range(8))
    units = layers(spec)
    assert [mark(u) for u in units] == ["bar", "text"]
    assert units[0]["encoding"]["y"]["sort"] == "-x"
    assert_renders(chart, "m11", "other (8)", "Spend by model")


def test_budget_gauges_per_level() -> None:
    chart = charts.budget_gauges(STATUSES)
    spec = chart.to_dict()
    assert len(spec["vconcat"]) == 3
    titles = [sub["title"] for sub in spec["vconcat"]]
    assert titles == ["org budgets", "project budgets", "user budgets"]
    values = {v["budget"]: v for v in data_of(spec)}
    churn = values["acme/churn (month, hard)"]
    assert churn["percent"] == pytest.approx(85.0) and churn["state"] == "warning"
    assert churn["with_reserved"] == pytest.approx(87.5)
    assert values["acme/ana (month, hard)"]["shown"] == pytest.approx(110.0)
    colour = next(u for u in layers(spec) if "color" in u.get("encoding", {}))["encoding"]
    assert colour["color"]["scale"]["domain"] == ["ok", "warning", "exceeded"]
    assert_renders(chart, "acme/churn", "$85.00 of $100.00", "user budgets")
    # a status table's frame works too, and one level is a single chart
    from llmspend.notebook.render import status_table

    one = charts.budget_gauges(status_table(STATUSES[1:2]).to_frame()).to_dict()
    assert "vconcat" not in one and len(data_of(one)) == 1


def test_alert_timeline() -> None:
    chart = charts.alert_timeline(alerts_frame())
    spec = chart.to_dict()
    unit = layers(spec)[0]
    assert mark(unit) == "point"
    assert unit["encoding"]["x"]["field"] == "ts"
    assert [v["event"] for v in data_of(spec)] == ["50 %", "80 %", "refused"]
    assert_renders(chart, "project acme/churn", "user acme/ana", "refused")


def test_forecast_frame_projects_with_a_widening_band() -> None:
    frame = charts.forecast_frame(trend_frame(), until=dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    actual = frame[frame["kind"] == "actual"]
    ahead = frame[frame["kind"] == "forecast"]
    assert len(actual) == 10 and actual["cost_usd"].iloc[-1] == pytest.approx(12.5 + 4.5)
    daily_mean = (12.5 + 4.5) / 10
    assert ahead["cost_usd"].iloc[0] == pytest.approx(17.0)
    assert ahead["cost_usd"].iloc[-1] == pytest.approx(17.0 + daily_mean * (len(ahead) - 1))
    widths = (ahead["high"] - ahead["low"]).tolist()
    assert widths[0] == 0 and widths == sorted(widths) and widths[-1] > 0
    assert (ahead["low"] >= 17.0 - 1e-9).all()  # never below what is already spent
    assert ahead["period"].iloc[-1] == pd.Timestamp("2026-11-30", tz="UTC")


def test_forecast_chart_has_band_lines_and_limit() -> None:
    chart = charts.forecast(trend_frame(), limit=Decimal(40), title="Forecast")
    spec = chart.to_dict()
    marks = [mark(u) for u in layers(spec)]
    assert marks == ["area", "line", "rule"]
    band = layers(spec)[0]
    assert band["encoding"]["y2"]["field"] == "high"
    assert_renders(chart, "Forecast")


@pytest.mark.parametrize(
    "make",
    [
        lambda: charts.trend(trend_frame().iloc[:0]),
        lambda: charts.breakdown(pd.DataFrame(columns=["model", "cost_usd"])),
        lambda: charts.budget_gauges([]),
        lambda: charts.alert_timeline(pd.DataFrame()),
        lambda: charts.forecast(pd.DataFrame(columns=["period", "cost_usd"])),
    ],
)
def test_empty_data_gives_a_message_not_an_error(make: Any) -> None:
    svg = assert_renders(make())
    assert "no " in svg


def test_offline_chart_bundle_and_export(tmp_path: Path) -> None:
    chart = charts.offline(charts.breakdown(trend_frame(), by="model"))
    bundle = chart._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "image/png", "text/plain"}
    assert bundle["text/plain"] == "<llmspend chart: Spend by model>"
    assert "gpt-4o-mini" in bundle["image/svg+xml"]
    import base64

    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert set(charts.offline(chart.chart, png=False)._repr_mimebundle_()) == {
        "image/svg+xml",
        "text/plain",
    }
    svg = charts.save_svg(chart, tmp_path / "c.svg")
    assert svg.read_text().startswith("<svg")
    png = charts.save_png(chart.chart, tmp_path / "c.png", scale=1)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert chart.save(tmp_path / "c2.png").read_bytes().startswith(b"\x89PNG")
    assert '"$schema"' in chart.save(tmp_path / "c.json").read_text()
    assert chart.save(tmp_path / "c3.svg").read_text().startswith("<svg")
    assert chart.to_dict()["$schema"].startswith("https://vega.github.io/schema/vega-lite/v6")
