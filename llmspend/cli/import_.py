"""``llmspend import FILE`` — load historical usage through ``ingest`` (all or nothing)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from . import ADMIN_NOTE, common_options, database_url
from .output import print_json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="load usage from CSV or Parquet (validated first; nothing is written on error)"
        + ADMIN_NOTE,
        description="Load historical usage (e.g. an export from a provider's usage page) "
        "with the columns of records(): ts, provider, model, tokens, cost_usd (optional: "
        "rows without it are priced at their own ts), org, project, user, ...",
    )
    p.add_argument(
        "file", help="input file (.csv or .parquet), or - for stdin (CSV unless --format)"
    )
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=COLUMN",
        help="rename a source column, e.g. --map 'Model=model' (repeatable)",
    )
    p.add_argument("--org", help="default org for rows without one")
    p.add_argument("--project", help="default project for rows without one")
    p.add_argument("--user", help="default user for rows without one")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from ..errors import ValidationError
    from ..exchange import read_records
    from ..tracker import Tracker

    mapping = {}
    for item in args.map:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValidationError(f"--map takes SOURCE=COLUMN, got {item!r}")
        mapping[source] = target
    tracker = Tracker(database_url(args), org=args.org, project=args.project, user=args.user)
    if args.file == "-":  # e.g. `llmspend export - ... | llmspend import - --database-url ...`
        fmt = args.format or "csv"
        with tempfile.TemporaryDirectory(prefix="llmspend-import-") as tmp:
            copy = Path(tmp) / f"stdin.{fmt}"
            with open(copy, "wb") as dst:
                shutil.copyfileobj(sys.stdin.buffer, dst)
            try:
                rows = read_records(copy, fmt, column_map=mapping)
            except ValidationError as exc:  # name stdin, not the temporary copy
                raise ValidationError(str(exc).replace(repr(str(copy)), "stdin")) from None
    else:
        rows = read_records(args.file, args.format, column_map=mapping)
    n = tracker.ingest(rows)
    if args.json:
        print_json({"file": args.file, "rows": n})
    else:
        source = "stdin" if args.file == "-" else args.file
        print(f"imported {n} records from {source}")
    return 0
