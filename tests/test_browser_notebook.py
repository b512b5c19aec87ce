"""JupyterLab in a headless Chromium runs a notebook that uses llmspend.

The notebook loads the extension, makes a call to ``llmspend.sim`` through the real
``openai`` client, shows ``%budget status``, ``llmspend.dashboard()`` and a
``%spend report`` chart. The test asserts that the table, the dashboard's charts and the
report chart are visible (not an error, not a CDN failure: the page never requests
anything but the local server) and saves screenshots under ``artifacts/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.labserver import LabServer, chromium, open_notebook, require_browser, run_all_cells

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

CELLS = [
    """import os
from llmspend.sim import SimServer
sim = SimServer()
sim.start()
os.environ["OPENAI_BASE_URL"] = sim.openai_base_url
os.environ["OPENAI_API_KEY"] = "sim-key\"""",
    "%load_ext llmspend",
    """%spend context --org acme --project churn --user ana
%budget set org acme 500/month
%budget set project acme/churn 100/month --hard --alert 50,80,100""",
    """import openai
import llmspend
resp = openai.OpenAI().chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hello from the browser"}]
)
print("tokens:", resp.usage.total_tokens)""",
    "%budget status",
    "dash = llmspend.dashboard(period='24h')\ndash",
    "report = %spend report --by model --since 1d",
]


def write_notebook(path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def cell_output(page: Any, index: int) -> Any:
    return page.locator(".jp-NotebookPanel .jp-CodeCell").nth(index).locator(".jp-OutputArea")


@pytest.mark.timeout(240)
def test_notebook_in_jupyterlab(tmp_path: Path) -> None:
    require_browser()
    root = tmp_path / "lab"
    root.mkdir()
    write_notebook(root / "llmspend-browser.ipynb")
    env = {
        "LLMSPEND_HOME": str(tmp_path / "home"),
        "LLMSPEND_DATABASE_URL": f"sqlite:///{tmp_path / 'browser.sqlite'}",
        "LLMSPEND_CELL_COST": "on",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    foreign: list[str] = []
    with LabServer(root, env=env) as lab, chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 2200})
        page.on(
            "request",
            lambda r: (
                foreign.append(r.url)
                if not r.url.startswith((lab.url, "data:", "blob:", "about:"))
                else None
            ),
        )
        try:
            open_notebook(page, lab, "llmspend-browser.ipynb")
            run_all_cells(page, timeout=150)

            text = page.locator(".jp-NotebookPanel").inner_text()
            assert "Traceback" not in text, text[-3000:]
            assert "Error displaying widget" not in text
            assert "llmspend · this cell: 1 call" in text  # the per-cell line

            # %budget status: the rendered HTML table
            table = cell_output(page, 4).locator(".llmspend-table table")
            table.scroll_into_view_if_needed()
            assert table.is_visible()
            status = table.inner_text()
            assert "acme/churn" in status and "$100.00" in status and "$500.00" in status
            assert "period end" in status

            # the dashboard widget with its charts drawn (inline SVG, no CDN)
            dash = cell_output(page, 5).locator(".llmspend-dashboard")
            dash.wait_for(state="visible", timeout=30_000)
            dash.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => document.querySelectorAll('.llmspend-dashboard svg').length >= 4",
                timeout=30_000,
            )
            svgs = dash.locator("svg")
            sizes = [svgs.nth(i).bounding_box() for i in range(svgs.count())]
            assert sum(1 for b in sizes if b and b["width"] > 150 and b["height"] > 40) >= 4
            dash_text = dash.inner_text()
            assert "refresh failed" not in dash_text
            assert "calls" in dash_text and "gpt-4o-mini" in dash.inner_html()
            dash.screenshot(path=str(ARTIFACTS / "browser-dashboard.png"))

            # %spend report: the offline chart (SVG/PNG image), not a Vega CDN error
            chart = cell_output(page, 6).locator("img, svg").first
            chart.scroll_into_view_if_needed()
            chart.wait_for(state="visible", timeout=30_000)
            box = chart.bounding_box()
            assert box is not None and box["width"] > 150 and box["height"] > 40
        finally:
            page.screenshot(path=str(ARTIFACTS / "browser-notebook.png"), full_page=True)
    assert not foreign, f"the page fetched from outside the server: {foreign[:5]}"
