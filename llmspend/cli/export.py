"""``llmspend export FILE`` — usage records to CSV or Parquet, with filters (in team mode,
through the gateway: the records the caller's role may read)."""

from __future__ import annotations

import argparse
from typing import Any

from ..extras import PARQUET, require_extra
from . import common_options, database_url, through_gateway
from .output import print_json

__all__ = ["add_filters", "register"]


def add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="inclusive: a date, ISO time or span such as 7d")
    p.add_argument("--until", help="exclusive: a date, ISO time or span")
    for name in ("org", "project", "user", "provider", "model"):
        p.add_argument(f"--{name}", action="append", help=f"only this {name} (repeatable)")


def filters_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: getattr(args, name)
        for name in ("org", "project", "user", "provider", "model")
        if getattr(args, name)
    }


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write usage records to CSV or Parquet")
    p.add_argument("file", help="output file (.csv or .parquet)")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..exchange import detect_format, write_records
    from ..tracker import Tracker
    from ..usage import fetch_records

    if detect_format(args.file, args.format) == "parquet":  # before the store is read
        require_extra("llmspend export to Parquet", *PARQUET)
    if through_gateway(args):  # team mode: the records the caller's role may read
        import llmspend

        frame = llmspend.records(args.since, args.until, **filters_of(args))
    else:
        store = Tracker(database_url(args)).store
        frame = fetch_records(store, args.since, args.until, **filters_of(args))
    n = write_records(frame, args.file, args.format)
    if args.json:
        print_json({"file": args.file, "rows": n})
    else:
        print(f"exported {n} records to {args.file}")
    return 0
