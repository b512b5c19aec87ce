"""``llmspend db upgrade`` / ``current`` / ``rebuild-rollups``: the store's schema and rollups;
``db check`` / ``db recover``: its health (:mod:`.dbcheck`)."""

from __future__ import annotations

import argparse
import json

from . import ADMIN_NOTE, common_options, database_url
from .dbcheck import add_actions, missing_file
from .doctor import register as register_doctor

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """``llmspend db ...``, and ``llmspend doctor`` (its ``check`` with the settings)."""
    parser = sub.add_parser(
        "db", help="manage the store's schema and check its health" + ADMIN_NOTE
    )
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
    reb = dbsub.add_parser(
        "rebuild-rollups",
        help="recompute the analytics rollups from the raw usage rows (one transaction)",
    )
    common_options(reb)
    reb.add_argument("--json", action="store_true", help="print JSON for scripts")
    reb.set_defaults(func=_rebuild_rollups)
    add_actions(dbsub)
    register_doctor(sub)


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
    from ..store.engine import current_revisions, open_store, safe_url

    url = resolve_database_url(database_url(args))
    missing = missing_file(url)
    if missing is not None:  # a look never makes a store
        if args.json:
            print(
                json.dumps({"database_url": safe_url(url), "revision": [], "missing_file": missing})
            )
        else:
            print(f"current: {safe_url(url)}: no store file yet ({missing})")
        return 0
    store = open_store(url, migrate=False)
    _print(args, store, current_revisions(store), "current")
    return 0


def _rebuild_rollups(args: argparse.Namespace) -> int:
    import time

    from ..config import resolve_database_url
    from ..store.engine import open_store, safe_url
    from ..store.rollups import rebuild_rollups

    url = resolve_database_url(database_url(args))
    store = open_store(url)
    t0 = time.perf_counter()
    counts = rebuild_rollups(store)
    seconds = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps({"database_url": safe_url(store.url), **counts, "seconds": seconds}))
    else:
        print(
            f"rebuilt rollups in {safe_url(store.url)}: {counts['hourly']:,} hourly and "
            f"{counts['daily']:,} daily rows in {seconds:.2f} s"
        )
    return 0


def _print(args: argparse.Namespace, store: object, revisions: list[str], what: str) -> None:
    from ..store.engine import safe_url

    url = safe_url(store.url)  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps({"database_url": url, "revision": revisions}))
    else:
        print(f"{what}: {url} at schema revision {', '.join(revisions) or '(empty)'}")
