"""The audit log, hash-chained: appending, verifying and exporting ``llmspend_audit``.

Each entry carries ``seq`` (1, 2, 3... with no gaps), ``prev_hash`` (the hash of entry
``seq - 1``, empty for the first) and ``hash``: sha256 over a canonical JSON of its fields and
``prev_hash``. :func:`verify` walks the log in ``seq`` order and names the first entry that
was changed (its hash no longer matches its fields), removed (a gap in ``seq``) or reordered
(its ``prev_hash`` is not the hash before it).

What this proves, plainly: an edit by someone who cannot recompute the chain afterwards.
Anyone with write access to the table can rewrite the whole chain from the edited entry
on; an exported copy kept elsewhere (:func:`export_entries`, checked with
``verify(..., against=...)``) catches that. Removing the newest entries leaves a valid
shorter chain, which the export catches too.

Appends are serialized so two writers cannot fork the chain: on PostgreSQL by a
transaction-scoped advisory lock taken before the newest entry is read; on SQLite the
write transaction (``BEGIN IMMEDIATE``) already holds the database's one writer lock. A
unique index on ``seq`` backs both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, text

from ..timeutil import utcnow
from .models import AuditEntry

__all__ = ["FIELDS", "AuditCheck", "append_entry", "entry_hash", "export_entries", "verify"]

#: pg_advisory_xact_lock key of audit appends (any constant the other locks do not use).
_PG_LOCK_KEY = 0x6C6D_6175_6474  # "lmaudt"
#: The fields an entry's hash covers (with ``prev_hash``).
FIELDS = ("seq", "ts", "actor", "action", "budget_key", "budget_id", "old", "new")


def _ts_text(ts: dt.datetime) -> str:
    return ts.replace(tzinfo=None).isoformat(timespec="microseconds")


def entry_hash(fields: dict[str, Any], prev_hash: str) -> str:
    """sha256 (hex) of the canonical JSON of an entry's fields and the hash before it."""
    doc = {k: fields[k] for k in FIELDS}
    doc["ts"] = _ts_text(doc["ts"]) if isinstance(doc["ts"], dt.datetime) else doc["ts"]
    doc["prev_hash"] = prev_hash
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canon.encode()).hexdigest()


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def append_entry(
    conn: Connection,
    *,
    actor: str,
    action: str,
    budget_key: str,
    budget_id: int | None,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
) -> int:
    """Append one entry to the chain inside the caller's write transaction; its ``seq``."""
    _lock(conn)
    last = conn.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq = 1 if last is None or last.seq is None else int(last.seq) + 1
    prev = "" if last is None else (last.hash or "")
    fields = {
        "seq": seq,
        "ts": utcnow(),  # naive UTC, microseconds: what both stores give back
        "actor": actor[:200],
        "action": action,
        "budget_key": budget_key[:600],
        "budget_id": budget_id,
        "old": None if old is None else json.dumps(old, sort_keys=True),
        "new": None if new is None else json.dumps(new, sort_keys=True),
    }
    conn.execute(insert(AuditEntry).values(**fields, prev_hash=prev, hash=entry_hash(fields, prev)))
    return seq


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of :func:`verify`: ``ok``, how many entries, and what was found first."""

    ok: bool
    entries: int
    problem: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"ok: {self.entries} entries" if self.ok else f"tampered: {self.problem}"


_COLUMNS = (
    AuditEntry.id,
    AuditEntry.seq,
    AuditEntry.ts,
    AuditEntry.actor,
    AuditEntry.action,
    AuditEntry.budget_key,
    AuditEntry.budget_id,
    AuditEntry.old,
    AuditEntry.new,
    AuditEntry.prev_hash,
    AuditEntry.hash,
)


def _rows(conn: Connection) -> Iterator[dict[str, Any]]:
    order = (AuditEntry.seq.asc().nulls_first(), AuditEntry.id)  # a lost seq: named first
    for r in conn.execute(select(*_COLUMNS).order_by(*order)):
        d = dict(r._mapping)
        d["ts"] = _ts_text(d["ts"])
        yield d


def export_entries(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every entry in chain order, as plain JSON-able dicts (hashes included)."""
    yield from _rows(conn)


def _name(row: dict[str, Any]) -> str:
    return f"entry #{row['seq']} (id {row['id']}, {row['action']} {row['budget_key']})"


def _walk(rows: Iterable[dict[str, Any]]) -> tuple[int, str | None, int | None]:
    """(entries, first problem, its seq) of a chain in seq order."""
    prev, expected, count = "", 1, 0
    for row in rows:
        count += 1
        seq = row["seq"]
        if seq is None:
            what = f"entry id {row['id']} ({row['action']} {row['budget_key']})"
            return count, f"{what} has no sequence number (expected #{expected})", expected
        if int(seq) != expected:
            if int(seq) > expected:
                missing = f"#{expected}" + ("" if seq == expected + 1 else f"-#{int(seq) - 1}")
                return (
                    count,
                    f"entry {missing} was removed (the log jumps to {_name(row)})",
                    expected,
                )
            return count, f"{_name(row)} is out of sequence (expected #{expected})", expected
        if row["prev_hash"] != prev:
            return (
                count,
                f"{_name(row)} does not follow entry #{expected - 1}: an entry was "
                "removed or the entries were reordered",
                expected,
            )
        if entry_hash(row, prev) != row["hash"]:
            return count, f"{_name(row)} was changed after it was written", expected
        prev, expected = row["hash"], expected + 1
    return count, None, None


def verify(conn: Connection, against: Iterable[dict[str, Any]] | None = None) -> AuditCheck:
    """Check the chain; with ``against`` (an export), also that the log still holds it."""
    rows = list(_rows(conn))
    count, problem, seq = _walk(rows)
    if problem is not None:
        return AuditCheck(False, count, problem, seq)
    if against is not None:
        saved_rows = list(against)
        _, bad, _ = _walk(saved_rows)
        if bad is not None:
            return AuditCheck(False, count, f"the export itself is not a valid chain: {bad}")
        live = {int(r["seq"]): r for r in rows}
        for saved in saved_rows:
            n = int(saved["seq"])
            row = live.get(n)
            if row is None:
                return AuditCheck(
                    False, count, f"entry #{n} of the export is missing from the log", n
                )
            if row["hash"] != saved["hash"]:
                return AuditCheck(
                    False,
                    count,
                    f"{_name(row)} differs from the export: the chain was rewritten",
                    n,
                )
    return AuditCheck(True, count)
