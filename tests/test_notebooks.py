"""The shipped notebooks run top to bottom under papermill and show the right numbers.

``scripts/demo.py`` (what ``make demo`` runs) executes the quickstart; the dashboard
notebook is executed directly. Both record into a store the test reads back, so the
numbers in the outputs are checked against the store.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import re
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import pytest

from llmspend.money import format_usd

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def outputs(nb: Any) -> list[tuple[str, list[str]]]:
    """(cell source, [text of each output]) for every code cell; errors fail the test."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for o in cell.get("outputs", []):
            assert o.output_type != "error", (cell.source, o.get("ename"), o.get("evalue"))
            if o.output_type == "stream":
                assert o.name == "stdout" or "Traceback" not in o.text, o.text
                texts.append(o.text)
            else:
                texts.append("\n".join(str(v) for v in o.get("data", {}).values()))
        out.append((cell.source, texts))
    return out


def cell(nb_outputs: list[tuple[str, list[str]]], starts: str) -> str:
    """All output text of the first cell whose source starts with ``starts``."""
    for source, texts in nb_outputs:
        if source.startswith(starts):
            return "\n".join(texts)
    raise AssertionError(f"no cell starting with {starts!r}")


def records(url: str) -> Any:
    from llmspend.tracker import Tracker, set_tracker

    old = set_tracker(Tracker(url))
    try:
        import llmspend

        return llmspend.records(), llmspend.budget_status(), llmspend.alerts()
    finally:
        set_tracker(old)


def load_demo() -> Any:
    spec = importlib.util.spec_from_file_location("llmspend_demo", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llmspend_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(180)
def test_demo_runs_the_quickstart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert load_demo().main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    executed, html = out / "quickstart.ipynb", out / "quickstart.html"
    assert f"executed notebook: {executed}" in printed and f"HTML rendering:    {html}" in printed

    url = f"sqlite:///{out / 'demo.sqlite'}"
    rows, statuses, alerts = records(url)
    ok = rows[rows["status"] == "ok"]
    total = sum(ok["cost_usd"], Decimal(0))
    assert len(ok) == 6 and (rows["status"] == "refused").sum() == 1
    assert set(ok["model"]) == {"gpt-4o-mini", "gpt-4o", "gemini-2.5-flash"}
    assert set(ok["provider"]) == {"openai-compatible", "google"}
    assert set(rows["org"]) == {"acme"} and set(rows["user"]) == {"ana"}
    assert f"spend: 7 calls (1 refused before sending), total {format_usd(total)}" in printed

    nb = outputs(nbformat.read(executed, as_version=4))
    # the per-cell line under the cells that made calls
    first = cell(nb, "import openai")
    assert f"llmspend · this cell: 1 call, {format_usd(ok['cost_usd'].iloc[0])}" in first
    assert "llmspend · this cell: 4 calls" in cell(nb, "questions = ")
    # %budget status: spent of every budget, and the limits
    status = cell(nb, "%budget status")
    by_name = {s.budget: s for s in statuses}
    assert by_name["acme/churn"].spent_usd == total
    for name, limit in (("acme", "$500.00"), ("acme/churn", "$100.00"), ("acme/ana", "$5.00")):
        line = next(x for x in status.splitlines() if x.startswith(name + " "))
        assert format_usd(total) in line and limit in line
    gemini = ok[ok["provider"] == "google"].iloc[0]
    assert gemini.reasoning_tokens > 0  # thoughts, billed as output
    assert f"llmspend · this cell: 1 call, {format_usd(gemini.cost_usd)}" in cell(
        nb, "from google import genai"
    )
    # %spend last: the calls with their own cost and tokens
    last = cell(nb, "%spend last")
    shown = ok.tail(5)  # %spend last shows the last five calls
    for r in shown.itertuples():
        assert format_usd(r.cost_usd) in last
    assert "5 calls, " + format_usd(sum(shown["cost_usd"], Decimal(0))) in last
    # %spend report: a chart drawn offline, and the DataFrame by model
    report = cell(nb, "report = %spend report")
    assert "<svg" in report and "Spend by model" in report
    for model, group in ok.groupby("model"):
        assert str(sum(group["cost_usd"], Decimal(0))) in report, model
    # the hard budget refused before sending
    refusal = cell(nb, "before = sim.request_count")
    assert "refused: hard user budget 'acme/churn/ana' (day) would be exceeded" in refusal
    assert "limit $0.01" in refusal and "Nothing was sent." in refusal
    assert "requests the provider received: 0" in refusal
    assert "1 call (1 refused), $0" in refusal
    assert len(alerts) == 1 and alerts["kind"].iloc[0] == "refused"
    assert "refused a call" in cell(nb, "%budget alerts")
    assert "llmspend dashboard" in cell(nb, "llmspend.dashboard()")
    assert f"7 calls recorded, 1 refused, total ${total}" in cell(nb, "spend = llmspend.records()")

    page = html.read_text()
    assert "llmspend · budget status" in page and "Traceback" not in page
    images = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', page)
    assert any(b"Spend by model" in base64.b64decode(i) for i in images)  # drawn, offline
    assert "llmspend dashboard: " in page and "unpkg.com" not in page


@pytest.mark.timeout(180)
def test_dashboard_notebook(tmp_path: Path) -> None:
    import papermill as pm

    url = f"sqlite:///{tmp_path / 'dash.sqlite'}"
    executed = tmp_path / "dashboard.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS / "dashboard.ipynb"),
        str(executed),
        parameters={"database_url": url, "days": 20, "seed": 3},
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    nb = outputs(nbformat.read(executed, as_version=4))
    rows, _, alerts = records(url)
    history = rows[rows["user"] != "dee"]
    live = rows[rows["user"] == "dee"]
    assert f"ingested {len(history)} calls over 20 days" in cell(nb, "rng = random.Random(seed)")
    assert len(live) == 6 and set(live["project"]) == {"churn"}
    assert live["tags"].tolist() == [{"notebook": "dashboard"}] * 6

    month_start = dt.datetime.now(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    this_month = history[history["ts"] >= month_start]
    status = cell(nb, "%budget set org acme 250/month")
    org_line = next(x for x in status.splitlines() if x.startswith("acme "))
    assert format_usd(sum(this_month["cost_usd"], Decimal(0))) in org_line and "$250.00" in org_line

    dash = cell(nb, "dash = llmspend.dashboard")
    m = re.search(r"<llmspend dashboard: \$([\d,.]+) in ([\d,]+) calls, last 30 days", dash)
    assert m, dash
    live_cell = cell(nb, "import openai")
    assert "reached 50 %" in live_cell and "reached 100 %" in live_cell
    assert "3 alerts for dee" in live_cell
    assert "llmspend · this cell: 6 calls" in live_cell and "acme/churn/dee" in live_cell
    assert len(alerts) == 3

    total = cell(nb, "total = sum(")
    t = re.search(r"total over 20 days: \$([\d,.]+) in (\d+) calls", total)
    assert t, total
    now = dt.datetime.now(dt.UTC)
    surely_in = rows[rows["ts"] >= now - dt.timedelta(days=20)]
    maybe_in = rows[rows["ts"] >= now - dt.timedelta(days=20, hours=1)]
    assert len(surely_in) <= int(t.group(2)) <= len(maybe_in)
    # the dashboard (last 30 days, drawn before dee's calls) shows the whole history
    assert int(m.group(2).replace(",", "")) == len(history)
    assert f"${m.group(1)}" == format_usd(sum(history["cost_usd"], Decimal(0)))

    svgs = [text for _, texts in nb for text in texts if "<svg" in text]
    assert len(svgs) >= 5  # trend, breakdown, gauges, forecast, alert timeline
    joined = "\n".join(svgs)
    for label in ("gpt-4o-mini", "gemini-2.5-flash", "acme/churn", "churn", "pricing"):
        assert label in joined, label
    assert "forecast" in cell(nb, "analytics.budget_recommendations()")
