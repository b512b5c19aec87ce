#!/usr/bin/env python
"""Run the quickstart notebook against the simulated provider and show what it did.

    python scripts/demo.py --out demo-out        # what `make demo` runs

Executes ``notebooks/quickstart.ipynb`` with papermill into ``OUT/quickstart.ipynb``
(recording into a fresh ``OUT/demo.sqlite``), renders it to ``OUT/quickstart.html`` with
nbconvert (charts are inline SVG/PNG: the page works offline), and prints where they are
and a short spend summary read back from the store. Nothing leaves the machine: the
notebook starts ``llmspend.sim`` on 127.0.0.1 and points the real ``openai`` client at it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for the results")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK, help="notebook to run")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    return parser.parse_args(argv)


def execute(notebook: Path, out: Path, database_url: str, kernel: str, timeout: int) -> Path:
    """Run ``notebook`` with papermill; returns the executed notebook's path."""
    import papermill as pm

    executed = out / notebook.name
    pm.execute_notebook(
        str(notebook),
        str(executed),
        parameters={"database_url": database_url},
        kernel_name=kernel,
        cwd=str(out),
        execution_timeout=timeout,
        progress_bar=False,
    )
    return executed


def to_html(executed: Path) -> Path:
    """Render the executed notebook to a standalone HTML page."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    # Live widgets need their JavaScript from a CDN in a static page; without their saved
    # state the page shows each widget's text instead (the dashboard's is a summary).
    nb.metadata.pop("widgets", None)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    html_path = executed.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def summary(database_url: str) -> str:
    """A few lines about what the notebook spent, read back from its store."""
    from decimal import Decimal

    from llmspend.money import format_usd
    from llmspend.tracker import Tracker, set_tracker

    tracker = Tracker(database_url)
    old = set_tracker(tracker)
    try:
        import llmspend

        rows = llmspend.records()
        statuses = llmspend.budget_status()
        alerts = llmspend.alerts()
    finally:
        set_tracker(old)
    costs = [c for c in rows["cost_usd"] if c is not None]
    total = sum(costs, Decimal(0))
    refused = int((rows["status"] == "refused").sum())
    lines = [
        f"spend: {len(rows)} calls ({refused} refused before sending), total {format_usd(total)}"
    ]
    by_model = rows[rows["status"] == "ok"].groupby("model")["cost_usd"]
    for model, values in by_model:
        lines.append(f"  {model:<18} {len(values):>3} calls  {format_usd(sum(values, Decimal(0)))}")
    lines.append("budgets:")
    for s in statuses:
        lines.append(
            f"  {s.scope:<7} {s.budget:<16} {format_usd(s.spent_usd):>11} of "
            f"{format_usd(s.limit_usd)}/{s.period} ({s.mode}, {s.state})"
        )
    lines.append(f"alerts: {len(alerts)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    store = out / "demo.sqlite"
    for leftover in (
        store,
        store.with_name(store.name + "-wal"),
        store.with_name(store.name + "-shm"),
    ):
        leftover.unlink(missing_ok=True)
    database_url = f"sqlite:///{store}"
    os.environ.setdefault("LLMSPEND_CELL_COST", "on")

    started = time.monotonic()
    shown = args.notebook.relative_to(ROOT) if args.notebook.is_relative_to(ROOT) else args.notebook
    print(f"running {shown} against the simulated provider ...", flush=True)
    try:
        executed = execute(args.notebook, out, database_url, args.kernel, args.timeout)
    except Exception as exc:  # papermill's error names the failing cell
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    html_path = to_html(executed)
    print(f"done in {time.monotonic() - started:.1f}s")
    print(f"executed notebook: {executed}")
    print(f"HTML rendering:    {html_path}")
    print(f"store:             {database_url}")
    print(summary(database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
