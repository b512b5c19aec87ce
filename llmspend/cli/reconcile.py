"""``llmspend reconcile FILE`` — a provider's cost export against the recorded calls."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..reconciliation import reconcile
from ..tracker import Tracker
from . import ADMIN_NOTE, common_options, database_url
from .output import print_json, print_table

__all__ = ["register"]

_SHOWN = ("day", "provider", "model", "project", "billed_usd", "recorded_usd", "diff_usd",
          "diff_pct", "calls", "state")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconcile",
        help="compare a provider's cost export (OpenAI Costs API JSON or CSV, Anthropic cost "
        "report, Google Cloud billing CSV) with the recorded calls, per day and model" + ADMIN_NOTE,
    )
    p.add_argument("file", help="the provider's cost export (.json or .csv)")
    p.add_argument("--out", help="also write every line to this .csv or .parquet file")
    p.add_argument(
        "--format", choices=["csv", "parquet"], help="--out's format (default: its suffix)"
    )
    p.add_argument(
        "--provider",
        action="append",
        help="recorded provider name(s) the export bills (repeatable; default: the export's "
        "own, e.g. openai)",
    )
    p.add_argument("--by-project", action="store_true", help="split by the export's project")
    p.add_argument("--tolerance", default="0.01", help="USD under which a line matches")
    p.add_argument("--all", action="store_true", help="show matching lines too")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    result = reconcile(
        args.file,
        providers=args.provider,
        by_project=args.by_project,
        tolerance_usd=args.tolerance,
        tracker=Tracker(database_url(args)),
    )
    if args.out:
        result.write(args.out, args.format)
    lines = result.frame if args.all else result.differences
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in lines.to_dict("records")
    ]
    if args.json:  # strict JSON: no Infinity or NaN (nothing recorded: diff_pct null)
        for r in rows:
            pct = r["diff_pct"]
            r["diff_pct"] = pct if isinstance(pct, float) and math.isfinite(pct) else None
        print_json({"source": result.source, "totals": result.totals, "lines": rows})
        return 0
    for r in rows:
        r["diff_pct"] = "-" if r["diff_pct"] is None or r["diff_pct"] != r["diff_pct"] else (
            f"{r['diff_pct']:+.1f}%")  # fmt: skip
    t = result.totals
    span = f"{result.first_day} to {result.last_day}" if result.first_day else "no days"
    print(
        f"{result.source}: {span}; billed "
        f"${t['billed_usd']}, recorded ${t['recorded_usd']}, difference ${t['diff_usd']}"
    )
    print(f"{len(result.differences)} of {len(result.frame)} lines differ")
    print_table(rows, _SHOWN)
    if args.out:
        print(f"wrote {len(result.frame)} lines to {args.out}")
    return 0
