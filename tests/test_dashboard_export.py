"""The dashboard survives export: its output bundle carries a static ``text/html`` snapshot
(cards, gauges, SVG charts) beside the live widget view, and the executed quickstart's HTML
rendering (what ``make demo`` writes) shows it."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import llmspend
from llmspend.money import format_usd
from llmspend.notebook.render import snapshot_html
from llmspend.notebook.widgets import Dashboard

from .test_notebooks import load_demo

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def dash(installed: Any) -> Iterator[Dashboard]:
    now = dt.datetime.now(dt.UTC)
    rows = [
        {
            "ts": now - dt.timedelta(days=day),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "org": "acme",
            "project": "churn",
            "user": "ana",
            "input_tokens": 1000 * day,
            "output_tokens": 100 * day,
            "status": "ok",
        }
        for day in range(1, 6)
    ]
    llmspend.ingest(rows)
    llmspend.set_budget("project", "acme/churn", 100, "month")
    d = llmspend.dashboard(period="7d", live=False)
    yield d
    d.close()


def svgs(text: str) -> int:
    return len(re.findall(r"<svg\b", text))


def test_bundle_has_the_widget_view_and_a_static_snapshot(dash: Dashboard) -> None:
    bundle = dash._repr_mimebundle_()
    assert bundle[WIDGET_VIEW]["model_id"] == dash.model_id  # JupyterLab: the live widget
    assert bundle["text/plain"].startswith("<llmspend dashboard: ")
    page = bundle["text/html"]
    total = sum(llmspend.records()["cost_usd"])
    assert format_usd(total) in page and dash.tiles.value in page  # the cards
    assert dash.gauges.value in page and dash.trend.value in page  # as drawn, inline SVG
    assert svgs(page) >= 4 and "acme/churn" in page
    assert "llmspend dashboard: " in page  # the text summary heads it
    assert "<script" not in page  # static: nothing to run


def test_snapshot_follows_a_refresh(dash: Dashboard) -> None:
    before = dash.snapshot_html()
    llmspend.ingest(
        [
            {
                "ts": dt.datetime.now(dt.UTC),
                "provider": "openai",
                "model": "gpt-4o",
                "org": "acme",
                "project": "churn",
                "user": "ana",
                "input_tokens": 5000,
                "output_tokens": 500,
                "status": "ok",
            }
        ]
    )
    dash.refresh()
    after = dash.snapshot_html()
    assert "gpt-4o<" in after.replace("gpt-4o-mini", "") and after != before


def test_snapshot_layout_escapes_the_caption_and_drops_empty_parts() -> None:
    page = snapshot_html("<a & b>", [["<b>x</b>", ""], ["", ""]])
    assert "&lt;a &amp; b&gt;" in page and "<b>x</b>" in page
    assert page.count("display:flex") == 1


@pytest.mark.timeout(240)
def test_executed_quickstart_html_shows_the_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert load_demo().main(["--out", str(out)]) == 0
    capsys.readouterr()
    page = (out / "quickstart.html").read_text()
    start = page.index('class="llmspend-snapshot')
    snapshot = page[start:]
    assert "llmspend dashboard: " in snapshot[:2000]
    assert 'class="llmspend-tiles' in snapshot  # the cards
    for card in ("spend", "calls", "tokens in / out", "per call"):
        assert f">{card}<" in snapshot, card
    assert svgs(snapshot) >= 2
    assert "Spend per" in snapshot and "Budgets" in snapshot  # the trend and budget charts
    assert "unpkg.com" not in page  # nothing fetched from a CDN
