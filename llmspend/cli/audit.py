"""``llmspend audit {verify,export}``: check the hash-chained audit log, keep a copy elsewhere.

``verify`` exits 0 with ``ok: N entries``, or 1 naming the first entry changed, removed or
reordered; ``--against FILE`` also checks the live log still holds an earlier export (which
catches a rewrite of the whole chain). ``export`` writes JSON lines, hashes included.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ValidationError
from ..store.audit import FIELDS, export_entries, verify
from ..store.engine import Store, open_store
from . import ADMIN_NOTE, common_options
from .admin_store import admin_database_url

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "audit", help="verify or export the tamper-evident audit log" + ADMIN_NOTE
    )
    asub = parser.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True

    p = asub.add_parser("verify", help="check the hash chain; name the first bad entry")
    p.add_argument(
        "--against", metavar="FILE", help="an earlier `audit export` the log must still hold"
    )
    common_options(p)
    p.set_defaults(func=_verify)

    p = asub.add_parser("export", help="write the log as JSON lines (hashes included)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    common_options(p)
    p.set_defaults(func=_export)


#: The fields of every exported entry (``export_entries``), all needed to check it again.
_EXPORTED = ("id", *FIELDS, "prev_hash", "hash")


def _store(args: argparse.Namespace) -> Store:
    return open_store(admin_database_url(args, "audit"))


def _read_export(path: str) -> list[dict[str, object]]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(f"cannot read the export {path}: {exc.strerror or exc}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ValidationError(f"{path} line {n} is not JSON: not an audit export") from None
        if not isinstance(entry, dict):
            raise ValidationError(f"{path} line {n} is not an audit entry")
        if missing := [f for f in _EXPORTED if f not in entry]:
            raise ValidationError(
                f"{path} line {n} is not an audit entry (no {', '.join(missing)})"
            )
        if type(entry["seq"]) is not int or not all(
            isinstance(entry[f], str) for f in ("hash", "prev_hash", "ts")
        ):
            raise ValidationError(
                f"{path} line {n} is not an audit entry (seq must be a whole number;"
                " ts, hash and prev_hash text)"
            )
        out.append(entry)
    return out


def _verify(args: argparse.Namespace) -> int:
    against = None if args.against is None else _read_export(args.against)
    with _store(args).begin() as conn:
        result = verify(conn, against=against)
    print(result, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def _export(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        out = sys.stdout if args.out is None else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ValidationError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    count = 0
    try:
        with store.begin() as conn:
            for entry in export_entries(conn):
                out.write(json.dumps(entry, sort_keys=True) + "\n")
                count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if args.out is not None:
        print(f"exported {count} entries to {args.out}")
    return 0
