"""Holds: what a call in flight has reserved on its budgets' periods, and its lease.

A reservation adds the call's worst case to ``reserved_nanos`` of every period it charges
(conditionally on the hard ones: ``spent + reserved + x <= limit``) and writes one hold row
naming those periods, keyed by the call's token, with a lease. Settling deletes the hold
and moves the actual cost into ``spent_nanos``; a hold whose kernel died is given back by
whoever next finds its lease expired (one ``DELETE ... RETURNING``: exactly once). While
its call runs, the lease is renewed (:mod:`.heartbeat`). A budget whose period changes
while calls are in flight adds its new current period to their holds, with what they
reserve (:func:`carry_holds`), so they are charged where they are recorded.

Lease times: on PostgreSQL, a store many hosts share, ``lease_expires_at`` is set from the
database's own clock (``statement_timestamp()`` plus the lease, in the statement that
writes the hold, and in each renewal) and the reclaim compares it with that clock: a host
whose clock is ahead cannot reclaim another host's live hold. On SQLite (one machine's
file) every process reads the same clock, this one's. The statements are constant text;
only integer period ids read from the store are formatted into them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import Connection

from ..store.fastsql import SQL, Tx, db_time, py_time
from ..timeutil import clock_shift
from .heartbeat import HEARTBEAT, lease_seconds
from .ledger import Statements, Target, id_list

__all__ = [
    "BUDGET_VERSION",
    "HOLD",
    "KEEP",
    "KEEP_KNOWN",
    "KEPT",
    "OTHERS_HOLDS",
    "REFUSAL",
    "RESERVE_PG",
    "RESERVE_PG_CHECKED",
    "RESERVE_SQLITE",
    "SETTLE",
    "SETTLE_PG",
    "UNHOLD",
    "Held",
    "Keeping",
    "Mirror",
    "carry_holds",
    "forget_periods",
    "give_back",
    "lease_seconds",
    "open_holds",
    "reclaim_expired",
]


class Mirror(NamedTuple):
    """The periods' rows as the settlement that kept a hold standing left them."""

    serial: int  # that settlement's transaction number on its connection
    rows: list[Any]  # (period id, spent, limit, reserved), in period id order


class Keeping(NamedTuple):
    """What settling a standing hold sends, made once per hold (see :mod:`.settle`)."""

    keep_sql: str  # add the cost if the hold row still names these periods; read back
    known_sql: str  # add the cost, when nothing was written since the last settlement
    read_sql: str  # read the periods' rows back
    period_ids: str  # the hold row's period_ids
    hard: frozenset[int]  # the periods of hard budgets


@dataclass
class Held:
    """What one call holds: the token of its hold row and the periods charged."""

    token: str
    periods: list[int] = field(default_factory=list)  # period ids to charge at settle
    amount: int = 0
    lease: float = 0.0  # seconds: its lease, renewed while its call runs (heartbeat)
    # Per period id: its budget and start, for the alert decision at settle.
    targets: dict[int, Target] = field(default_factory=dict)
    # Set when it was made on a thread's SQLite connection (``memo`` is that connection's)
    # with no other commit since the budgets were read (that ``data_version``): it may
    # then stand for the thread's next call (see standing.py) until ``until`` (half its
    # lease, or the period's end).
    version: int | None = None
    until: dt.datetime | None = None
    memo: Any = None
    source: Any = None  # the remembered targets it was made for (``is`` tells them apart)
    # The settlement that last kept it standing, and what settling it again sends.
    mirror: Mirror | None = None
    keeping: Keeping | None = None


_EXPIRED = SQL(
    "DELETE FROM llmspend_reservations WHERE lease_expires_at < :now "
    "RETURNING period_ids, amount_nanos"
)
# PostgreSQL: against the database's clock (moved by shift_clock, as llmspend's is).
_EXPIRED_DB_CLOCK = SQL(
    "DELETE FROM llmspend_reservations WHERE lease_expires_at < "
    "(statement_timestamp() AT TIME ZONE 'UTC') + CAST(:shift AS double precision) "
    "* interval '1 second' RETURNING period_ids, amount_nanos"
)
_RELEASE = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = CASE WHEN reserved_nanos > :amount "
    "THEN reserved_nanos - :amount ELSE 0 END WHERE id = :id"
)


def reclaim_expired(conn: Connection | Tx, now: dt.datetime) -> int:
    """Give back what the calls whose lease has expired held. Returns how many calls.

    One ``DELETE ... RETURNING``: each expired hold is given back by exactly one
    transaction, however many reclaim at once. ``now`` is the time on SQLite; PostgreSQL
    reads its own clock.
    """
    tx = Tx.of(conn)
    if tx.sqlite:
        expired = tx.run(_EXPIRED, {"now": db_time(tx, now)}).all()
    else:
        expired = tx.run(_EXPIRED_DB_CLOCK, {"shift": clock_shift().total_seconds()}).all()
    _release(tx, expired)
    return len(expired)


def give_back(tx: Tx, holds: list[Held]) -> None:
    """Delete these holds and give back what each still holds (nothing if its lease ran
    out and it was reclaimed; only on the periods it still names). They are no longer
    renewed."""
    HEARTBEAT.forget(holds)
    _release(tx, [row for h in holds for row in tx.run(UNHOLD, {"token": h.token}).all()])


def _release(tx: Tx, deleted: list[Any]) -> None:
    """Take deleted holds' ``(period_ids, amount_nanos)`` off the periods' reserved."""
    per_period: dict[int, int] = {}
    for period_ids, amount in deleted:
        for pid in period_ids.split(","):
            per_period[int(pid)] = per_period.get(int(pid), 0) + amount
    for pid, amount in sorted(per_period.items()):  # in id order: the consistent lock order
        tx.run(_RELEASE, {"amount": amount, "id": pid})


def _reserve_sqlite(hard: tuple[int, ...], soft: tuple[int, ...]) -> SQL:
    ids = id_list(hard + soft)
    fits = "spent_nanos + reserved_nanos + :amount <= limit_nanos"
    if not hard:
        cond = ""
    elif not soft:
        cond = f" AND {fits}"
    else:
        cond = f" AND (id IN ({id_list(soft)}) OR {fits})"
    return SQL(
        "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount, "  # noqa: S608
        f"updated_at = :now WHERE id IN ({ids}){cond}"
    )


RESERVE_SQLITE = Statements(_reserve_sqlite)


# PostgreSQL: the budgets' version (migration 0016) as ``version:xmin``. The row's
# ``xmin`` (the transaction that last wrote it) tells a version row made again apart —
# the table dropped and made anew by a downgrade and upgrade, or restored from a backup,
# counts up again from an older number — from the one remembered.
_STAMP = (
    "SELECT CAST(version AS text) || ':' || CAST(xmin AS text) AS stamp "
    "FROM llmspend_budget_config WHERE id = 1"
)
#: PostgreSQL: the budgets' version stamp, read before budgets are looked up.
BUDGET_VERSION = SQL(_STAMP)
_CURRENT = f"({_STAMP})"


def _reserve_pg(ids: tuple[int, ...], checked: bool = False) -> SQL:
    """PostgreSQL: the whole reservation in one statement (atomic on its own). The periods
    are locked in id order (the lock order of every transaction that changes them) and read
    as they are then; only if every hard one has room (``:soft``: the soft budgets' period
    ids; ``:n``: how many periods) are all of them reserved on and the hold written (its
    lease on the database's clock), else nothing changes. ``checked``: also only while the
    budgets' version is still ``:version`` (remembered budgets); the answer's ``version``
    column says which it is."""
    fits = f"COUNT(*) = :n AND {_CURRENT} = :version" if checked else "COUNT(*) = :n"
    return SQL(
        "WITH l AS (SELECT id, spent_nanos, reserved_nanos, limit_nanos "  # noqa: S608
        f"FROM llmspend_budget_periods WHERE id IN ({id_list(ids)}) ORDER BY id FOR UPDATE), "
        f"ok AS (SELECT {fits} AS fits FROM l WHERE l.id = ANY(CAST(:soft AS bigint[])) "
        "OR l.spent_nanos + l.reserved_nanos + :amount <= l.limit_nanos), "
        "u AS (UPDATE llmspend_budget_periods p SET reserved_nanos = p.reserved_nanos + :amount, "
        "updated_at = :now FROM l, ok WHERE p.id = l.id AND ok.fits RETURNING p.id), "
        "h AS (INSERT INTO llmspend_reservations (token, period_ids, amount_nanos, created_at, "
        "lease_expires_at, owner) SELECT :token, :period_ids, :amount, :now, "
        "(statement_timestamp() AT TIME ZONE 'UTC') + CAST(:lease AS double precision) "
        "* interval '1 second', :owner FROM ok WHERE ok.fits RETURNING 1) "
        "SELECT ok.fits, (SELECT COUNT(*) FROM u) AS reserved, (SELECT COUNT(*) FROM h) AS held"
        + (f", {_CURRENT} AS version" if checked else "")
        + " FROM ok"
    )


#: Keyed by the period ids, ascending.
RESERVE_PG = Statements(_reserve_pg)
#: The same for remembered budgets: also checks the budgets' version.
RESERVE_PG_CHECKED = Statements(lambda ids: _reserve_pg(ids, checked=True))
HOLD = SQL(
    "INSERT INTO llmspend_reservations (token, period_ids, amount_nanos, created_at, "
    "lease_expires_at, owner) VALUES (:token, :period_ids, :amount, :now, :lease, :owner)"
)
UNHOLD = SQL(
    "DELETE FROM llmspend_reservations WHERE token = :token RETURNING period_ids, amount_nanos"
)
_HOLDS = SQL("SELECT token, period_ids FROM llmspend_reservations")
_REHOLD = SQL("UPDATE llmspend_reservations SET period_ids = :period_ids WHERE token = :token")
_DROP_HOLD = SQL("DELETE FROM llmspend_reservations WHERE token = :token")


_OPEN = SQL("SELECT token, period_ids, amount_nanos, created_at FROM llmspend_reservations")
# PostgreSQL: locked first, in token order, as a settlement locks its hold before its periods.
_OPEN_LOCKED = SQL(_OPEN.text + " ORDER BY token FOR UPDATE")
_CARRY = SQL(
    "UPDATE llmspend_reservations SET period_ids = :new WHERE token = :token AND period_ids = :old"
)
_ADD_RESERVED = SQL(
    "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos + :amount WHERE id = :id"
)


def open_holds(conn: Connection | Tx) -> list[Any]:
    """Every hold of a call in flight (or standing): ``(token, period_ids, amount_nanos,
    created_at)``. On PostgreSQL they are locked until the transaction ends: a budget change
    takes them before any period row (the lock order of settlement and reclaim), so no hold
    is settled or given back while the change decides where it goes."""
    tx = Tx.of(conn)
    return list(tx.run(_OPEN if tx.sqlite else _OPEN_LOCKED).all())


def carry_holds(
    conn: Connection | Tx, holds: list[Any], old: set[int], current: int, start: dt.datetime
) -> int:
    """Make the holds on a budget's earlier periods ``old`` also name its ``current``
    period (id), with what they reserve counted there, when their call began in it (at or
    after ``start``): a budget whose period changed while calls were in flight then has them
    reserved, and charged at settlement, on the period they are recorded in. Returns the
    amount carried. The earlier period keeps them too (its spent stays the cost of the
    calls in it)."""
    tx = Tx.of(conn)
    carried = 0
    for token, ids, amount, created_at in holds:
        named = [int(i) for i in ids.split(",")]
        if current in named or old.isdisjoint(named):
            continue
        made = py_time(created_at)
        if made is not None and made < start:  # began in an earlier period of the new kind
            continue
        new = ",".join(map(str, sorted([*named, current])))
        if tx.run(_CARRY, {"token": token, "old": ids, "new": new}).rowcount:
            carried += amount
    if carried:
        tx.run(_ADD_RESERVED, {"amount": carried, "id": current})
    return carried


def forget_periods(conn: Connection | Tx, period_ids: set[int]) -> None:
    """Take periods being deleted out of the holds that name them, in the deleting
    transaction: SQLite may give a later period the same id, which a hold must not charge."""
    if not period_ids:
        return
    tx = Tx.of(conn)
    for token, ids in tx.run(_HOLDS).all():
        named = ids.split(",")
        kept = [i for i in named if int(i) not in period_ids]
        if len(kept) == len(named):
            continue
        if kept:
            tx.run(_REHOLD, {"token": token, "period_ids": ",".join(kept)})
        else:
            tx.run(_DROP_HOLD, {"token": token})


SETTLE = Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET reserved_nanos = reserved_nanos - :held, "  # noqa: S608
        "spent_nanos = spent_nanos + :cost, calls = calls + 1, updated_at = :now "
        f"WHERE id IN ({id_list(ids)}) RETURNING id, spent_nanos, limit_nanos"
    )
)
# PostgreSQL: the settlement in one statement. The hold row is deleted first (the lock
# order of reclaim and give_back: the hold, then the periods by id; the ``l`` scan waits for
# ``h`` through the periods it names), then every period the hold row names (a budget
# changed since may have added its new period: ``carry_holds``) — or, if its lease expired
# and it was reclaimed, every period it was made on — is charged the cost and given back
# what the hold still held on it.
SETTLE_PG = Statements(
    lambda ids: SQL(
        "WITH h AS (DELETE FROM llmspend_reservations WHERE token = :token "  # noqa: S608
        "RETURNING period_ids, amount_nanos), "
        "l AS (SELECT id FROM llmspend_budget_periods WHERE id = ANY(COALESCE((SELECT "
        "CAST(string_to_array(h.period_ids, ',') AS bigint[]) FROM h), "
        f"ARRAY[{id_list(ids)}]::bigint[])) ORDER BY id FOR UPDATE), "
        "u AS (UPDATE llmspend_budget_periods p SET reserved_nanos = p.reserved_nanos - "
        "COALESCE((SELECT h.amount_nanos FROM h WHERE CAST(p.id AS text) = "
        "ANY(string_to_array(h.period_ids, ','))), 0), spent_nanos = p.spent_nanos + :cost, "
        "calls = p.calls + 1, updated_at = :now FROM l WHERE p.id = l.id "
        "RETURNING p.id, p.spent_nanos, p.limit_nanos) "
        "SELECT id, spent_nanos, limit_nanos FROM u ORDER BY id"
    )
)
# A standing hold's settlement (SQLite): the cost is added and the hold stays reserved,
# only if the hold row is still there naming the same periods (else nothing changes).
KEEP = Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET spent_nanos = spent_nanos + :cost, "  # noqa: S608
        "calls = calls + 1, updated_at = :now "
        f"WHERE id IN ({id_list(ids)}) AND (SELECT period_ids FROM llmspend_reservations "
        "WHERE token = :token) = :period_ids "
        "RETURNING id, spent_nanos, limit_nanos, reserved_nanos"
    )
)
# The same when the periods' rows and the hold row are known to be as the last settlement
# left them (see _settle_keeping), and reading the periods' rows back.
KEEP_KNOWN = Statements(
    lambda ids: SQL(
        "UPDATE llmspend_budget_periods SET spent_nanos = spent_nanos + :cost, "  # noqa: S608
        f"calls = calls + 1, updated_at = :now WHERE id IN ({id_list(ids)})"
    )
)
KEPT = Statements(
    lambda ids: SQL(
        "SELECT id, spent_nanos, limit_nanos, reserved_nanos "  # noqa: S608
        f"FROM llmspend_budget_periods WHERE id IN ({id_list(ids)}) ORDER BY id"
    )
)
REFUSAL = SQL(
    "SELECT spent_nanos, reserved_nanos, limit_nanos, period_end FROM llmspend_budget_periods "
    "WHERE id = :id"
)
OTHERS_HOLDS = SQL(
    "SELECT period_ids FROM llmspend_reservations WHERE owner IS NULL OR owner != :owner"
)
