"""``llmspend report`` — run the spend-report notebook with papermill and write HTML.

    llmspend report                                   # this calendar month, every org
    llmspend report --period last-month --org acme --output /srv/reports/acme.html
    llmspend report --since 2026-01-01 --until 2026-04-01 --project churn --json

Parameters are checked before the notebook runs (a bad ``--since``, since not before
until, an org the store does not know, a missing output directory: exit 1 with one line,
nothing written). See :mod:`llmspend.report` and ``docs/scheduling.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..extras import REPORT, require_extra
from ..money import format_usd
from . import common_options, database_url, through_gateway
from .output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="run the spend report notebook and write a self-contained HTML page",
        description="Run the papermill spend report (totals, budgets, trend, breakdowns, "
        "comparison, top spenders, alerts, forecasts) for a period and write it as one "
        "HTML file that needs no network. Default period: the current calendar month (UTC).",
    )
    when = p.add_argument_group("period (UTC; default: the current calendar month)")
    when.add_argument(
        "--period",
        metavar="NAME",
        help="day, week, month, quarter, year, yesterday, last-week, last-month, "
        "last-quarter, last-year, or a span ending now such as 7d or 24h",
    )
    when.add_argument("--since", help="inclusive: a date, ISO time or span such as 30d")
    when.add_argument("--until", help="exclusive: a date, ISO time or span (after --since: now)")
    who = p.add_argument_group("filters (repeatable; default: everything)")
    for name in ("org", "project", "user"):
        who.add_argument(f"--{name}", action="append", metavar="NAME", help=f"only this {name}")
    out = p.add_argument_group("output")
    out.add_argument(
        "--output",
        "-o",
        metavar="FILE.html",
        help="the HTML page to write (default: spend-report-<period>.html here)",
    )
    out.add_argument(
        "--notebook-output",
        metavar="FILE.ipynb",
        help="also keep the executed notebook (kept even when a cell fails, for debugging)",
    )
    out.add_argument("--title", help="the report's title (default: 'LLM spend report · <period>')")
    out.add_argument(
        "--decimals", type=int, default=2, metavar="N", help="decimal places for money (2)"
    )
    out.add_argument(
        "--top", type=int, default=10, metavar="N", help="rows in the top-N tables (10)"
    )
    out.add_argument("--json", action="store_true", help="print a JSON summary for scripts")
    out.add_argument(
        "--reconcile",
        metavar="EXPORT",
        help="a provider's cost export (as for `llmspend reconcile`): adds a section of "
        "billed vs recorded per day and model",
    )
    run = p.add_argument_group("execution")
    run.add_argument(
        "--notebook", metavar="FILE.ipynb", help="run this notebook instead of the shipped one"
    )
    run.add_argument("--kernel", default="python3", help="Jupyter kernel name (python3)")
    run.add_argument("--timeout", type=int, default=600, metavar="SECONDS", help="per cell (600)")
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    common_options(p)
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    require_extra("llmspend report", *REPORT)
    # llmspend.report loads SQLAlchemy and the analytics; `llmspend --help` and the other
    # subcommands do not pay for it
    from ..report import run_report

    # papermill warns through logging (e.g. "Black is not installed"); keep stderr to errors
    logging.getLogger("papermill").setLevel(logging.ERROR)
    through_gateway(args)  # team mode: run_report reads through the gateway
    result = run_report(
        period=args.period,
        since=args.since,
        until=args.until,
        org=args.org,
        project=args.project,
        user=args.user,
        database_url=database_url(args),
        output=args.output,
        notebook_output=args.notebook_output,
        title=args.title,
        decimals=args.decimals,
        top=args.top,
        notebook=args.notebook,
        kernel_name=args.kernel,
        progress_bar=sys.stderr.isatty() and not args.no_progress and not args.json,
        timeout=args.timeout,
        reconcile=args.reconcile,
    )
    totals = result.totals
    if args.json:
        print_json(
            {
                "html": str(result.html),
                "notebook": str(result.notebook) if result.notebook else None,
                "title": result.title,
                "period": result.window.label,
                "since": result.window.since.isoformat(),
                "until": result.window.until.isoformat(),
                "filters": result.filters,
                "store": result.database_url,
                "cost_usd": totals.get("cost_usd"),
                "calls": totals.get("calls"),
                "seconds": round(result.seconds, 2),
            }
        )
        return 0
    calls = totals.get("calls", 0)
    print(
        f"spend report for {result.window.label}: {format_usd(totals.get('cost_usd'))} in "
        f"{calls:,} call{'' if calls == 1 else 's'} → {result.html}"
    )
    if result.notebook:
        print(f"executed notebook: {result.notebook}")
    return 0
