"""``llmspend db check`` / ``db recover`` and ``llmspend doctor``: the store's health.

``check`` reports the store (its URL, password hidden), whether it is sound (SQLite's
``quick_check``, or ``integrity_check`` with ``--full``), its schema revision against
this llmspend's, its row counts, the spool's backlog and where the data directory and
spool are; it exits 1 when the store is damaged, unreachable or too new. ``recover``
copies what is readable out of a damaged SQLite file into a fresh store
(:mod:`llmspend.store.recover`), keeps the old file as ``<name>.corrupt-<timestamp>``,
rebuilds the rollups from the recovered usage rows (budget periods recount their spend
from them when next used), replays the spool into it, and says what was kept and lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from . import common_options, database_url

__all__ = ["add_actions", "health_report", "missing_file", "print_report"]

COUNTED = ("llmspend_usage", "llmspend_budgets", "llmspend_budget_periods", "llmspend_alerts")


def add_actions(dbsub: argparse._SubParsersAction) -> None:
    """Add ``check`` and ``recover`` to ``llmspend db``."""
    chk = dbsub.add_parser(
        "check", help="the store's health, schema, row counts and the spool's backlog"
    )
    add_check_options(chk)
    chk.set_defaults(func=run_check)
    rec = dbsub.add_parser(
        "recover",
        help="copy what is readable of a damaged SQLite store into a fresh one (keeps the old)",
    )
    common_options(rec)
    rec.add_argument("--json", action="store_true", help="print JSON for scripts")
    rec.add_argument(
        "--force", action="store_true", help="rebuild the store even if no damage is found"
    )
    rec.set_defaults(func=run_recover)


def add_check_options(parser: argparse.ArgumentParser) -> None:
    common_options(parser)
    parser.add_argument(
        "--full", action="store_true", help="integrity_check (slower) instead of quick_check"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def health_report(url: str, *, full: bool = False) -> dict[str, Any]:
    """What ``db check`` reports about the store at ``url`` (never raises for its state)."""
    from ..config import resolve_home
    from ..errors import LLMSpendError
    from ..spool import Spool
    from ..store.engine import current_revisions, open_store, safe_url
    from ..store.health import check_file
    from ..store.migrate import _script_heads

    spool = Spool(url)
    report: dict[str, Any] = {
        "database_url": safe_url(url),
        "data_dir": str(resolve_home()),
        "spool_dir": str(spool.dir),
        "spool_pending": len(spool.pending()),
        "spool_rejected": len(spool.rejected()),
        "problems": [],
    }
    problems: list[str] = report["problems"]
    missing = missing_file(url)
    if missing is not None:  # nothing to check, and a check never makes a store
        report.update(file=missing, file_missing=True, healthy=True)
        return report
    try:
        store = open_store(url, migrate=False)
    except LLMSpendError as e:
        problems.append(str(e))
        report["healthy"] = False
        return report
    if store.path is not None:
        report["file"] = store.path
        try:
            report["file_bytes"] = os.path.getsize(store.path)
        except OSError:
            report["file_bytes"] = None
        found = check_file(store.path, full=full)
        report["check"] = "integrity_check" if full else "quick_check"
        report["check_result"] = found or ["ok"]
        if found:
            problems.append(
                f"the file is corrupted ({found[0]}): run `llmspend db recover` to copy what "
                "is readable into a fresh store (the old file is kept)"
            )
    heads, _known = _script_heads()
    report["schema_head"] = sorted(heads)
    try:
        current = current_revisions(store)
        report["schema_revision"] = current
        if set(current) - _known:
            problems.append("the schema is newer than this llmspend: upgrade llmspend")
        elif set(current) != heads:
            report["schema_note"] = "behind: migrated on next open or by `llmspend db upgrade`"
    except LLMSpendError as e:
        report["schema_revision"] = None
        if not problems:
            problems.append(str(e))
    report["rows"] = _counts(store)
    report["healthy"] = not problems
    return report


def missing_file(url: str) -> str | None:
    """The file of a SQLite store at ``url`` that does not exist (yet), else ``None``."""
    from ..errors import LLMSpendError
    from ..store.sqlite import file_path
    from ..store.urls import normalize_url

    try:
        parsed = normalize_url(url)
    except LLMSpendError:
        return None  # said by open_store
    path = file_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None or os.path.exists(os.path.expanduser(path)):  # a dangling link: none
        return None
    return path


def _counts(store: Any) -> dict[str, int | None]:
    from sqlalchemy import exc, text

    counts: dict[str, int | None] = {}
    for table in COUNTED:
        try:
            with store.engine.connect() as conn:
                sql = text(f"SELECT count(*) FROM {table}")  # noqa: S608 (a constant name)
                counts[table] = int(conn.execute(sql).scalar())
        except exc.DBAPIError:
            counts[table] = None  # unreadable or missing
    return counts


def print_report(report: dict[str, Any]) -> None:
    """``report`` for people."""
    state = "healthy" if report["healthy"] else "UNHEALTHY"
    print(f"store:        {report['database_url']} ({state})")
    if report.get("file_missing"):
        print(f"file:         {report['file']} (none yet: made when llmspend first opens it)")
    elif "file" in report:
        size = report.get("file_bytes")
        print(f"file:         {report['file']}" + (f" ({size:,} bytes)" if size else ""))
        said = report["check_result"]
        more = f" (and {len(said) - 1} more)" if len(said) > 1 else ""
        print(f"{report['check']}:  {said[0]}{more}")
    if "schema_head" in report:
        current = report.get("schema_revision")
        shown = ", ".join(current) if current else "(unreadable)" if current is None else "(empty)"
        note = f" — {report['schema_note']}" if report.get("schema_note") else ""
        print(f"schema:       {shown} (this llmspend: {', '.join(report['schema_head'])}){note}")
    for table, n in report.get("rows", {}).items():
        print(f"rows:         {table}: " + ("unreadable" if n is None else f"{n:,}"))
    print(f"spool:        {report['spool_pending']} call(s) pending in {report['spool_dir']}")
    if report.get("spool_rejected"):
        print(
            f"              {report['spool_rejected']} file(s) that are no call set aside in "
            f"{report['spool_dir']}/rejected (not replayed; kept for a look)"
        )
    print(f"data dir:     {report['data_dir']}")
    for p in report["problems"]:
        print(f"problem:      {p}")


def run_check(args: argparse.Namespace) -> int:
    from ..config import resolve_database_url

    report = health_report(resolve_database_url(database_url(args)), full=args.full)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0 if report["healthy"] else 1


def run_recover(args: argparse.Namespace) -> int:
    from ..config import resolve_database_url

    summary = recover(resolve_database_url(database_url(args)), force=args.force)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"recovered {summary['database_url']} into a fresh store")
    for table, n in summary["copied"].items():
        print(f"  kept     {table}: {n:,} row(s)")
    for table, n in summary["missing"].items():
        if n:
            print(f"  lost     {table}: {n:,} row(s) on unreadable pages")
    for table, ranges in summary["lost"].items():
        shown = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges[:10])
        more = " ..." if len(ranges) > 10 else ""
        print(f"  lost     {table}: rows with ids {shown}{more} (unreadable)")
    for table, why in summary["unreadable"].items():
        print(f"  lost     {table}: the whole table ({why})")
    print(f"  rebuilt  rollups ({summary['rollups']['hourly']:,} hourly rows); budget periods")
    print("           recount their spend from the kept usage rows when next used")
    print(f"  replayed {summary['replayed']} spooled call(s)")
    print(f"the damaged file is kept as {summary['old_file']}")
    return 0


def recover(url: str, *, force: bool = False) -> dict[str, Any]:
    """Replace the SQLite store at ``url`` by a fresh one holding what is readable of it.
    A store with no damage found is left alone unless ``force``; one migrated by a newer
    llmspend always is (its newer tables and columns would be lost)."""
    from ..errors import ConfigError, StoreError
    from ..store.engine import forget_store, open_store, safe_url
    from ..store.health import _schema_problems, check_file
    from ..store.models import Base
    from ..store.recover import salvage
    from ..store.rollups import rebuild_rollups
    from ..store.sqlite import file_path
    from ..store.urls import normalize_url
    from ..tracker import Tracker

    parsed = normalize_url(url)
    path = file_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None:
        raise ConfigError(
            f"`llmspend db recover` works on a SQLite file store, not {safe_url(url)} "
            "(restore PostgreSQL from its backups)"
        )
    path = str(Path(path).expanduser())
    if not os.path.exists(path):
        raise StoreError(f"there is no store file {path} to recover")
    if not os.path.isfile(path):
        raise StoreError(f"{path} is not a file (a directory?): give the store file's path")
    _refuse_newer(path)
    # integrity_check, as `db check --full`: quick_check misses an index that no longer
    # matches its table (a unique index so damaged lets a replayed call in twice)
    found = check_file(path, full=True)
    if found and _locked(found[0]):  # a sound store in use: copying it would lose it all
        raise _locked_error(path, found[0])
    if not force and not (found or _schema_problems(path)):
        raise StoreError(
            f"the store file {path} passed SQLite's integrity_check: there is no damage to "
            "recover from (`--force` copies it into a fresh store anyway: budget periods "
            "are recounted and holds in flight dropped)"
        )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    fresh, old = f"{path}.recovering-{stamp}", f"{path}.corrupt-{stamp}"
    fresh_url = parsed.set(database=fresh).render_as_string(hide_password=False)
    forget_store(url)
    for leftover in (fresh, fresh + "-wal", fresh + "-shm"):
        Path(leftover).unlink(missing_ok=True)
    forget_store(fresh_url)
    try:
        open_store(fresh_url)  # the current schema, by the migrations
        forget_store(fresh_url)
        tables = [t.name for t in Base.metadata.sorted_tables]
        result = salvage(path, fresh, tables)
        said = next((why for why in result.unreadable.values() if _locked(why)), None)
        if said is not None:  # locked since the check: not damage either
            raise _locked_error(path, said)
        store = open_store(fresh_url)
        rollups = rebuild_rollups(store)
        forget_store(fresh_url)
        _leave_wal(fresh)
    except BaseException:  # the damaged store stays as it was; the fresh copy goes
        forget_store(fresh_url)
        for leftover in (fresh, fresh + "-wal", fresh + "-shm"):
            Path(leftover).unlink(missing_ok=True)
        raise
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, old + suffix)
    os.replace(fresh, path)
    tracker = Tracker(url)
    tracker.replay_spool()
    replayed = _usage_count(tracker) - result.copied.get("llmspend_usage", 0)
    return {
        "database_url": safe_url(url),
        "old_file": old,
        "copied": result.copied,
        "lost": {t: [list(r) for r in rs] for t, rs in result.lost.items()},
        "missing": {t: result.missing(t) for t in result.copied},
        "unreadable": result.unreadable,
        "rollups": rollups,
        "replayed": max(replayed, 0),
    }


def _locked(said: str) -> bool:
    return "database is locked" in said or "database table is locked" in said


def _locked_error(path: str, said: str) -> Exception:
    from ..errors import StoreError

    return StoreError(
        f"the store file {path} is locked by another process ({said}): nothing was changed; "
        "try again when it is free (a kernel writing to it, a `db` command running)"
    )


def _refuse_newer(path: str) -> None:
    """Raise ``SchemaTooNewError`` if the file at ``path`` was migrated by a newer llmspend
    (a damaged file whose revision cannot be read is not refused)."""
    import sqlite3

    from ..errors import SchemaTooNewError
    from ..store.migrate import _script_heads

    try:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            found = {r[0] for r in conn.execute("SELECT version_num FROM llmspend_alembic_version")}
        finally:
            conn.close()
    except sqlite3.Error:
        return
    unknown = found - _script_heads()[1]
    if unknown:
        raise SchemaTooNewError(
            f"the store file {path} has schema revision {', '.join(sorted(unknown))}, which "
            "this llmspend does not know: recover it with the newer llmspend that migrated it "
            "(this one would drop what that one added)"
        )


def _leave_wal(path: str) -> None:
    """Fold the fresh file's write-ahead log into it, so it moves as one file."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
    finally:
        conn.close()


def _usage_count(tracker: Any) -> int:
    from sqlalchemy import text

    with tracker.store.begin() as conn:
        return int(conn.execute(text("SELECT count(*) FROM llmspend_usage")).scalar_one())
