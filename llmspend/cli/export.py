"""``llmspend export FILE`` — usage records to CSV or Parquet, with filters (in team mode,
through the gateway: the records the caller's role may read).

``FILE`` ``-`` writes to stdout (CSV unless ``--format parquet``; the summary line then goes
to stderr), and so does any target that is not a regular file (``/dev/stdout``, a named
pipe): those are written in place, never replaced by a renamed temporary file; a symlink
is written through to its target."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..extras import PARQUET, require_extra
from . import common_options, database_url, through_gateway
from .output import print_json

__all__ = ["add_filters", "check_window", "register"]


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
    p.add_argument("file", help="output file (.csv or .parquet), or - for stdout")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    common_options(p)
    p.set_defaults(func=_export)


def check_window(since: str | None, until: str | None) -> None:
    """A window that ends before it begins is a mistake to name, not an empty result."""
    from ..errors import ValidationError
    from ..timeutil import parse_when, utcnow

    now = utcnow()
    lo = parse_when(since, name="since", now=now)
    hi = parse_when(until, name="until", now=now)
    if lo is not None and hi is not None and lo >= hi:
        raise ValidationError(
            f"since ({lo:%Y-%m-%d %H:%M}) must be before until ({hi:%Y-%m-%d %H:%M}) "
            "(until is exclusive)"
        )


def _write(frame: Any, file: str, fmt: str | None) -> int:
    from ..errors import ValidationError
    from ..exchange import detect_format, write_records, write_to_stream

    # /dev/stdout behind `>> log.txt` resolves to log.txt: written to fd 1 as `-` is (a
    # renamed file replaced log.txt, its lines lost)
    if file != "-" and not _is_stdout(file):
        # a symlink written through, a device or pipe into (see exchange)
        return write_records(frame, file, fmt or detect_format(file))
    try:
        sys.stdout.flush()
        n = write_to_stream(
            frame, sys.stdout.buffer, fmt or ("csv" if file == "-" else detect_format(file))
        )
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # `| head`: main() ends quietly
        raise
    except OSError as exc:  # a full disk behind `> file`
        raise ValidationError(f"cannot write to stdout: {exc.strerror or exc}") from None
    return n


def _export(args: argparse.Namespace) -> int:
    from ..exchange import detect_format
    from ..tracker import Tracker
    from ..usage import fetch_records

    fmt = args.format or ("csv" if args.file == "-" else None)
    if detect_format(args.file, fmt) == "parquet":  # before the store is read
        require_extra("llmspend export to Parquet", *PARQUET)
    check_window(args.since, args.until)
    if through_gateway(args):  # team mode: the records the caller's role may read
        import llmspend

        frame = llmspend.records(args.since, args.until, **filters_of(args))
    else:
        store = Tracker(database_url(args)).store
        frame = fetch_records(store, args.since, args.until, **filters_of(args))
    n = _write(frame, args.file, fmt)
    to_stdout = args.file == "-" or _is_stdout(args.file)
    if args.json:
        print_json({"file": args.file, "rows": n}, file=sys.stderr if to_stdout else None)
    else:
        where = "stdout" if args.file == "-" else args.file
        print(f"exported {n} records to {where}", file=sys.stderr if to_stdout else None)
    return 0


def _is_stdout(file: str) -> bool:
    """Whether ``file`` is this process's stdout (``/dev/stdout``, ``/dev/fd/1``)."""
    try:
        return os.path.samestat(os.stat(Path(file).expanduser()), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):
        return False
