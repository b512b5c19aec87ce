"""What was written into a SQLite store file after it was deleted or replaced.

A process keeps writing into the file its connections opened, also after that file was
deleted (its inode lives on, unlinked, until the last connection closes) or replaced by
another at its path. :func:`marks` notes how far each carried table went while the file
was still there (its largest rowid); :func:`stranded` reads what lies past those marks
through a connection still open on the old file, and :func:`carry_budgets` writes the
budgets among it into the new file. Usage rows go through the spool instead (the
caller's: each inserted once, counted in budgets and rollups as it is replayed).

Only explicit budgets are carried (one materialized from a parent's default is made
again when needed); budget counters, holds and rollups are derived from the usage rows;
alerts, audit entries and webhook deliveries written meanwhile are not carried.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.dialects import sqlite

from .fastsql import py_time
from .models import Budget, UsageRecord

__all__ = ["CARRIED", "Stranded", "carry_budgets", "marks", "not_stored", "stranded"]

USAGE, BUDGETS = UsageRecord.__tablename__, Budget.__tablename__
#: The tables whose new rows are carried to the new file.
CARRIED = (USAGE, BUDGETS)
_USAGE_COLUMNS = [c.name for c in UsageRecord.__table__.columns if c.name != "id"]
_BUDGET_COLUMNS = [c.name for c in Budget.__table__.columns if c.name not in ("id", "derived_from")]
_DIALECT = sqlite.dialect(paramstyle="qmark")


def _compiled(stmt: Any) -> str:
    """SQLAlchemy's SQLite text for ``stmt`` (positional ``?`` parameters)."""
    return str(stmt.compile(dialect=_DIALECT))


_ROWID: Any = literal_column("rowid")
_TOP = {
    USAGE: _compiled(select(func.max(_ROWID)).select_from(UsageRecord)),
    BUDGETS: _compiled(select(func.max(_ROWID)).select_from(Budget)),
}
_READ_USAGE = _compiled(
    select(*(UsageRecord.__table__.c[n] for n in _USAGE_COLUMNS))
    .where(bindparam("mark") < _ROWID)
    .order_by(_ROWID)
)
_READ_BUDGETS = _compiled(
    select(*(Budget.__table__.c[n] for n in _BUDGET_COLUMNS))
    .where(bindparam("mark") < _ROWID, Budget.__table__.c.derived_from.is_(None))
    .order_by(_ROWID)
)
_WRITE_BUDGET = _compiled(
    sqlite.insert(Budget)
    .values({n: bindparam(n) for n in _BUDGET_COLUMNS})
    .on_conflict_do_nothing(index_elements=["scope", "name", "default_for"])
)


@dataclass
class Stranded:
    """Rows written into the old file past the marks: usage rows as the spool keeps them
    (``ts`` a datetime, each with a ``record_uid``), budgets as stored."""

    usage: list[dict[str, Any]] = field(default_factory=list)
    budgets: list[dict[str, Any]] = field(default_factory=list)


def marks(conn: Any) -> dict[str, int]:
    """The largest rowid of each carried table, on a sqlite3 connection."""
    out = {}
    for table, sql in _TOP.items():
        out[table] = int(conn.execute(sql).fetchone()[0] or 0)
    return out


def stranded(conn: Any, since: dict[str, int]) -> Stranded:
    """The rows of the carried tables past ``since`` (:func:`marks`), on a sqlite3
    connection to the old file."""
    out = Stranded()
    for values in conn.execute(_READ_USAGE, (since.get(USAGE, 0),)).fetchall():
        row = dict(zip(_USAGE_COLUMNS, values, strict=True))
        row["ts"] = py_time(row["ts"])
        row["streamed"], row["usage_estimated"] = (
            bool(row["streamed"]),
            bool(row["usage_estimated"]),
        )
        out.usage.append(row)
    for values in conn.execute(_READ_BUDGETS, (since.get(BUDGETS, 0),)).fetchall():
        out.budgets.append(dict(zip(_BUDGET_COLUMNS, values, strict=True)))
    return out


def not_stored(conn: Any, rows: list[dict[str, Any]], *, fresh: bool) -> list[dict[str, Any]]:
    """The ``rows`` (from :func:`stranded`) to carry into the file ``conn`` is open on.

    Into a ``fresh`` file (made because the old one was deleted) every row, an ingested one
    given a ``record_uid`` so that its replay is exactly once. Into a file put in the old
    one's place (a backup restored, another store copied over), which may hold some of them
    already, only the calls it does not have (by ``record_uid``): ingested rows have none to
    tell them by and are not carried (they can be ingested again)."""
    if fresh:
        return [r if r.get("record_uid") else {**r, "record_uid": uuid.uuid4().hex} for r in rows]
    uids = [r["record_uid"] for r in rows if r.get("record_uid")]
    have = {uid for (uid,) in conn.execute(_HAVE, (json.dumps(uids),))} if uids else set()
    return [r for r in rows if r.get("record_uid") and r["record_uid"] not in have]


_HAVE = "SELECT record_uid FROM llmspend_usage WHERE record_uid IN (SELECT value FROM json_each(?))"


def carry_budgets(conn: Any, budgets: list[dict[str, Any]]) -> int:
    """Insert ``budgets`` (from :func:`stranded`) on a sqlite3 connection in a
    transaction, unless the new file has a budget with the same key; returns how many."""
    n = 0
    for b in budgets:
        n += conn.execute(_WRITE_BUDGET, [b[c] for c in _BUDGET_COLUMNS]).rowcount
    return n
