"""Copy what is readable out of a damaged SQLite store file into a fresh one.

:func:`salvage` reads each table of the old file by ranges of rowids, and a range that
fails to read is split in halves until the unreadable rowids are pinned down: a damaged
leaf page loses only the rows on it (tens of rows), a damaged interior page the rows
below it (a page SQLite reads without an error but whose cells are out of range yields
no rows: those are counted against the table's ``count(*)``), and a table whose root
or whose schema entry is unreadable is lost whole (so is everything when the file's
header or schema page is damaged). The rows are written with their ids into a file
already migrated to the current schema. Derived tables are not copied — the rollups,
budget periods (their counters) and holds in flight — the caller rebuilds them from
the usage rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

__all__ = ["DERIVED", "Salvage", "salvage"]

#: Tables rebuilt from the usage rows (or left empty) instead of copied.
DERIVED = ("llmspend_alembic_version", "llmspend_budget_periods", "llmspend_reservations")
DERIVED_PREFIX = "llmspend_rollup"
CHUNK = 512


@dataclass
class Salvage:
    """What :func:`salvage` copied (rows per table) and lost (rowid ranges per table;
    tables not read at all)."""

    copied: dict[str, int] = field(default_factory=dict)
    counted: dict[str, int | None] = field(default_factory=dict)
    lost: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def missing(self, table: str) -> int | None:
        """How many rows the old file's ``count(*)`` (often read from an index, which may
        be intact) has more than were copied; ``None`` if it could not count."""
        n = self.counted.get(table)
        return None if n is None else max(n - self.copied.get(table, 0), 0)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({_quote(table)})")]


def salvage(old_path: str, new_path: str, tables: list[str]) -> Salvage:
    """Copy the rows of ``tables`` (in this order: parents first) readable in
    ``old_path`` into the same tables of ``new_path``, ids kept."""
    out = Salvage()
    src = sqlite3.connect(old_path, isolation_level=None)
    dst = sqlite3.connect(new_path, isolation_level=None)
    try:
        dst.execute("PRAGMA foreign_keys = OFF")  # a parent may be among the rows lost
        try:
            have = {r[0] for r in src.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            out.unreadable = {t: f"schema unreadable: {e}" for t in tables}
            return out
        dst.execute("BEGIN")
        for table in tables:
            if table in DERIVED or table.startswith(DERIVED_PREFIX):
                continue
            if table not in have:
                out.unreadable[table] = "not in the old file"
                continue
            try:
                cols = [c for c in _columns(dst, table) if c in set(_columns(src, table))]
                _copy(src, dst, table, cols, out)
            except sqlite3.DatabaseError as e:
                out.unreadable[table] = str(e)
        dst.execute("COMMIT")
    finally:
        src.close()
        dst.close()
    return out


def _copy(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str, cols: list[str], out: Salvage
) -> None:
    """Copy ``table`` range by range; raises if not even its extent can be read."""
    q = _quote(table)
    names = ", ".join(_quote(c) for c in cols)
    # names from the schema, quoted; values bound
    read = f"SELECT {names} FROM {q} WHERE rowid BETWEEN ? AND ?"  # noqa: S608
    read_one = f"SELECT {names} FROM {q} WHERE rowid = ?"  # noqa: S608
    marks = ", ".join("?" * len(cols))
    write = f"INSERT OR IGNORE INTO {q} ({names}) VALUES ({marks})"  # noqa: S608
    lo, hi = src.execute(f"SELECT min(rowid), max(rowid) FROM {q}").fetchone()  # noqa: S608
    out.copied[table] = 0
    try:
        out.counted[table] = int(src.execute(f"SELECT count(*) FROM {q}").fetchone()[0])  # noqa: S608
    except sqlite3.DatabaseError:
        out.counted[table] = None
    if lo is None:
        return
    lost: list[tuple[int, int]] = []

    def lose(a: int) -> None:
        if lost and lost[-1][1] == a - 1:
            lost[-1] = (lost[-1][0], a)
        else:
            lost.append((a, a))

    def take(a: int, b: int, scan: bool = True) -> None:
        try:
            if scan:
                rows = src.execute(read, (a, b)).fetchall()
            else:  # one row: a damaged page is only reached for its own rowids
                rows = src.execute(read_one, (a,)).fetchall()
        except sqlite3.DatabaseError:
            if a == b:
                lose(a)
                return
            mid = (a + b) // 2
            take(a, mid, scan)
            take(mid + 1, b, scan)
            return
        if scan and len(rows) < b - a + 1 and b > a:
            # a gap: rowids deleted, or a scan that met a damaged page and stopped early
            # without an error (SQLite found a bogus rowid past b there): row by row
            for rowid in range(a, b + 1):
                take(rowid, rowid, scan=False)
            return
        if rows:
            dst.executemany(write, rows)
            out.copied[table] += len(rows)

    counted = out.counted[table]
    if counted is not None:  # a bogus max(rowid) from a damaged last page: stop somewhere
        hi = min(hi, lo + 16 * counted + 16 * CHUNK)
    for start in range(lo, hi + 1, CHUNK):
        take(start, min(start + CHUNK - 1, hi))
    if lost:
        out.lost[table] = lost
