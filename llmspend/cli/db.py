"""``llmspend db upgrade`` / ``llmspend db current``: the store's schema."""

from __future__ import annotations

import argparse
import json

from . import common_options, database_url

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="manage the store's schema")
    dbsub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    up = dbsub.add_parser("upgrade", help="apply pending migrations (idempotent)")
    common_options(up)
    up.add_argument("--json", action="store_true", help="print JSON for scripts")
    up.set_defaults(func=_upgrade)
    cur = dbsub.add_parser("current", help="print the store's URL and schema revision")
    common_options(cur)
    cur.add_argument("--json", action="store_true", help="print JSON for scripts")
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    from ..config import resolve_database_url
    from ..store.engine import open_store, upgrade

    url = resolve_database_url(database_url(args))
    store = open_store(url, migrate=False)
    heads = upgrade(store)
    _print(args, store, heads, "upgraded")
    return 0


def _current(args: argparse.Namespace) -> int:
    from ..config import resolve_database_url
    from ..store.engine import current_revisions, open_store

    url = resolve_database_url(database_url(args))
    store = open_store(url, migrate=False)
    _print(args, store, current_revisions(store), "current")
    return 0


def _print(args: argparse.Namespace, store: object, revisions: list[str], what: str) -> None:
    from ..store.engine import safe_url

    url = safe_url(store.url)  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps({"database_url": url, "revision": revisions}))
    else:
        print(f"{what}: {url} at schema revision {', '.join(revisions) or '(empty)'}")
