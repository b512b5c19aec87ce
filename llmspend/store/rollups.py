"""Rollups: usage pre-aggregated per hour, day and week, in three families.

The *full* family (``llmspend_rollup_hourly``, ``_daily``, ``_weekly``) holds one row per
UTC bucket × org × project × user × provider × model with the sums of :data:`MEASURES`;
the *team* family (``llmspend_rollup_*_team``) leaves out the user and the *model* family
(``llmspend_rollup_*_model``) keeps only provider × model × api × service tier (two more
key columns its tables have; a NULL tier is stored as ``""``) — a left-out dimension is
stored as ``""`` — so questions that do not need the user (or the org and project) read far fewer
rows however many users there are (:data:`ROLLUPS`). Rows are added with ``INSERT ... ON
CONFLICT (key) DO UPDATE SET col = col + excluded.col``, so concurrent writers add up
instead of overwriting each other. Because the sums are integers (nanodollars, tokens,
counts), a rollup equals the raw rows it covers, exactly.

How rows reach them: **after** the write, on both stores, so a live call pays for no
upsert. The rows not yet summed in are found differently per store:

* **SQLite**: writers take turns there, so usage ids are committed in ascending order,
  and ``llmspend_rollup_state.rolled_through`` marks how far the rollups go.
* **PostgreSQL**: ids are committed out of order, so a statement-level trigger on
  ``llmspend_usage`` (migration 0013) queues every inserted row's id in
  ``llmspend_rollup_pending``, in the inserting transaction — except the rows of a bulk
  writer that sums its batch into the rollups itself in that transaction
  (:func:`fold_pg_batch`; migration 0014).

:func:`catch_up` sums the pending rows into every rollup table (one set-based statement
per table on SQLite; on PostgreSQL one statement for all of them that also deletes the
queued ids) and moves the mark, in one write transaction. It runs before every read of
the rollups (``aggregate`` calls :func:`up_to_date`), with every ``ingest()`` and spool
replay, and in :func:`rebuild_rollups`. Two kernels or replicas catching up at once on
PostgreSQL take turns on a lock of the queue table (``SHARE UPDATE EXCLUSIVE``: writers
are not held up), and a queued id is deleted by the statement that sums its row, so no
row is counted twice.

:func:`rebuild_rollups` recomputes every table from the raw rows and gives identical
tables (use it after deleting or editing raw rows by hand).

Code that inserts into ``llmspend_usage`` needs to do nothing more: the next catch-up sums
its rows (calling :func:`add_rows` too would count them twice).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import add, itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, case, func, insert, literal_column, select, text

from .fastsql import SQL, Tx, db_time_for
from .models import (
    RollupDaily,
    RollupHourly,
    RollupModelDaily,
    RollupModelHourly,
    RollupModelQuarter,
    RollupModelWeekly,
    RollupTeamDaily,
    RollupTeamHourly,
    RollupTeamQuarter,
    RollupTeamWeekly,
    RollupWeekly,
    UsageRecord,
)

if TYPE_CHECKING:
    from ..call import Call
    from .engine import Store

__all__ = [
    "DIMENSION_COLUMNS",
    "FAMILIES",
    "KEY_COLUMNS",
    "MEASURES",
    "PG_BATCH_COLUMNS",
    "PG_BATCH_TABLE",
    "ROLLUPS",
    "Rollup",
    "add_rows",
    "catch_up",
    "fold_pg_batch",
    "rebuild_rollups",
    "record_hook",
    "up_to_date",
]

#: Store columns of the full family's key, after the bucket.
DIMENSION_COLUMNS: tuple[str, ...] = ("org_name", "project_name", "user_name", "provider", "model")
#: Every dimension some rollup keeps (the model family's tables also have the last two).
KEY_COLUMNS: tuple[str, ...] = (*DIMENSION_COLUMNS, "api", "service_tier")

#: The summed columns of both rollup tables, in table order.
MEASURES: tuple[str, ...] = (
    "calls", "error_calls", "refused_calls", "unpriced_calls", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "cost_nanos",
)  # fmt: skip

#: Rollup families: the dimensions each one keeps (the others are stored as "").
FAMILIES: dict[str, tuple[str, ...]] = {
    "full": DIMENSION_COLUMNS,
    "team": ("org_name", "project_name", "provider", "model"),
    "model": ("provider", "model", "api", "service_tier"),
}


@dataclass(frozen=True, slots=True)
class Rollup:
    """One rollup table: its family's dimensions and its time grain."""

    table: Table
    family: str
    grain: str  # "quarter" (hour), "hour", "day" or "week" (weeks start on Monday, UTC)

    @property
    def dims(self) -> tuple[str, ...]:
        return FAMILIES[self.family]

    @property
    def key(self) -> tuple[str, ...]:
        """The table's dimension columns (kept or stored as ""), in key order."""
        return tuple(c for c in KEY_COLUMNS if c in self.table.c)

    @property
    def columns(self) -> tuple[str, ...]:
        return ("bucket", *self.key, *MEASURES)


def _r(model: Any, family: str, grain: str) -> Rollup:
    return Rollup(model.__table__, family, grain)


#: Every rollup table; the full hourly table first (the others can be summed from it).
ROLLUPS: tuple[Rollup, ...] = (
    _r(RollupHourly, "full", "hour"),
    _r(RollupDaily, "full", "day"),
    _r(RollupWeekly, "full", "week"),
    _r(RollupTeamHourly, "team", "hour"),
    _r(RollupTeamDaily, "team", "day"),
    _r(RollupTeamWeekly, "team", "week"),
    _r(RollupModelHourly, "model", "hour"),
    _r(RollupModelDaily, "model", "day"),
    _r(RollupModelWeekly, "model", "week"),
    _r(RollupTeamQuarter, "team", "quarter"),
    _r(RollupModelQuarter, "model", "quarter"),
)
_TABLES: tuple[Table, Table] = (RollupHourly.__table__, RollupDaily.__table__)  # type: ignore[assignment]
_COLUMNS = ("bucket", *DIMENSION_COLUMNS, *MEASURES)
#: Per rollup, for each of its key columns: (position in KEY_COLUMNS, kept).
_PICK = [tuple((KEY_COLUMNS.index(c), c in r.dims) for c in r.key) for r in ROLLUPS]
_BATCH = 5000


class _Upsert:
    """One table's upsert, compiled once per dialect to the DBAPI's own SQL and params."""

    __slots__ = ("columns", "names", "order", "positional", "sql")

    def __init__(self, rollup: Rollup, conn: Connection | Tx) -> None:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported stores
            raise NotImplementedError(f"rollups need SQLite or PostgreSQL, not {conn.dialect.name}")
        table = rollup.table
        self.columns = rollup.columns
        ins = dialect_insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=[table.c[c] for c in ("bucket", *rollup.key)],
            set_={m: table.c[m] + ins.excluded[m] for m in MEASURES},
        )
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(self.columns))
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        if self.positional and set(self.names) != set(self.columns):  # pragma: no cover
            raise RuntimeError(f"unexpected parameters in the rollup upsert: {self.names}")
        # Positional parameters come in the table's column order; ours are key first.
        order = [self.columns.index(n) for n in self.names]
        self.order = None if order == list(range(len(order))) else itemgetter(*order)

    def run(self, conn: Connection | Tx, params: list[tuple[Any, ...]]) -> None:
        if not params:
            return
        tx = Tx.of(conn)
        if self.positional:
            args: Any = params if self.order is None else [self.order(p) for p in params]
        else:
            args = [dict(zip(self.columns, p, strict=True)) for p in params]
        if len(args) == 1:
            tx.execute(self.sql, args[0])
            return
        for start in range(0, len(args), _BATCH):
            tx.executemany(self.sql, args[start : start + _BATCH])


_upserts: dict[tuple[str, str, str], _Upsert] = {}


def _upsert(conn: Connection | Tx, rollup: Rollup) -> _Upsert:
    key = (conn.dialect.name, conn.dialect.driver, rollup.table.name)
    up = _upserts.get(key)
    if up is None:
        up = _upserts[key] = _Upsert(rollup, conn)
    return up


def _week(t: dt.datetime) -> dt.datetime:
    """The Monday 00:00 starting ``t``'s week (naive UTC)."""
    return (t - dt.timedelta(days=t.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)


def _bucket_of(t: dt.datetime, grain: str) -> dt.datetime:
    if grain == "quarter":
        return t.replace(minute=t.minute // 15 * 15, second=0, microsecond=0)
    if grain == "hour":
        return t.replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        return t.replace(hour=0, minute=0, second=0, microsecond=0)
    return _week(t)


def record_hook(tx: Tx, call: Call | None, row: Mapping[str, Any]) -> None:
    """``in_record_hooks`` entry: nothing to do on the call path any more. A call's row is
    summed into the rollups by the next :func:`catch_up` (SQLite: the rows past the mark;
    PostgreSQL: the ids the insert trigger queued)."""


_ROW_FIELDS = itemgetter(
    "ts", "org_name", "project_name", "user_name", "provider", "model", "api", "status",
    "cost_nanos", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens",
)  # fmt: skip
_HOUR = dt.timedelta(hours=1)


def add_rows(conn: Connection | Tx, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add usage rows (dicts with store column names) to the rollups, on ``conn``'s
    transaction: summed per bucket in Python first, then one upsert per bucket."""
    hourly: dict[tuple[Any, ...], list[int]] = {}
    quarters: dict[tuple[Any, ...], list[int]] = {}
    start = end = None
    for row in rows:
        ts, org, project, user, provider, model, api, status, cost, i, c, w, o, r = _ROW_FIELDS(row)
        if start is None or not start <= ts < end:  # rows mostly come in time order
            start = ts.replace(minute=0, second=0, microsecond=0)
            end = start + _HOUR
        tier = row.get("service_tier") or ""
        key = (start, org, project, user, provider, model, api, tier)
        sums = [
            1,
            1 if status == "error" else 0,
            1 if status == "refused" else 0,
            1 if cost is None else 0,
            i, c, w, o, r,
            cost or 0,
        ]  # fmt: skip
        acc = hourly.get(key)
        hourly[key] = sums if acc is None else list(map(add, acc, sums))
        qkey = (ts.replace(minute=ts.minute // 15 * 15, second=0, microsecond=0), *key[1:])
        acc = quarters.get(qkey)
        quarters[qkey] = sums if acc is None else list(map(add, acc, sums))
    if not hourly:
        return
    sqlite = conn.dialect.name == "sqlite"
    text: dict[dt.datetime, str] = {}
    for r, pick in zip(ROLLUPS, _PICK, strict=True):
        sums_by_key: dict[tuple[Any, ...], list[int]] = {}
        buckets: dict[dt.datetime, dt.datetime] = {}
        for key, sums in (quarters if r.grain == "quarter" else hourly).items():
            b = buckets.get(key[0])
            if b is None:
                b = buckets[key[0]] = _bucket_of(key[0], r.grain)
            rkey = (b, *(key[1 + i] if kept else "" for i, kept in pick))
            acc = sums_by_key.get(rkey)
            sums_by_key[rkey] = sums if acc is None else list(map(add, acc, sums))
        items: Iterable[tuple[tuple[Any, ...], list[int]]] = sums_by_key.items()
        if sqlite:  # one writer at a time: no lock order to keep; buckets as SQLite text
            params = []
            for k, v in items:
                t = text.get(k[0])
                if t is None:
                    t = text[k[0]] = db_time_for(True, k[0])
                params.append((t, *k[1:], *v))
        else:  # upsert in key order, so concurrent writers lock rows in the same order
            params = [(*k, *v) for k, v in sorted(items)]
        _upsert(conn, r).run(conn, params)


def ingest_hook(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """``ingest_hooks`` entry: sum an ingested batch (just inserted) into the rollups,
    with the rows pending before it."""
    catch_up(conn, inserted=rows)


# -- catching up with the rows past the mark (SQLite) or queued (PostgreSQL) ------------------

_PENDING = SQL(
    "SELECT rolled_through, (SELECT max(id) FROM llmspend_usage) AS last "
    "FROM llmspend_rollup_state WHERE id = 1"
)
_MARK = SQL("UPDATE llmspend_rollup_state SET rolled_through = :last WHERE id = 1")
_QUEUED = SQL("SELECT EXISTS (SELECT 1 FROM llmspend_rollup_pending) AS queued")
#: Folders take turns (writers, which take ROW EXCLUSIVE, are not held up).
_PG_TURN = "LOCK TABLE llmspend_rollup_pending IN SHARE UPDATE EXCLUSIVE MODE"


_SQLITE_BUCKET = {
    "quarter": "substr(ts, 1, 14) || CASE WHEN substr(ts, 15, 2) < '15' THEN '00' "
    "WHEN substr(ts, 15, 2) < '30' THEN '15' WHEN substr(ts, 15, 2) < '45' THEN '30' "
    "ELSE '45' END || ':00.000000'",
    "hour": "substr(ts, 1, 13) || ':00:00.000000'",
    "day": "substr(ts, 1, 10) || ' 00:00:00.000000'",
    "week": "date(substr(ts, 1, 10), '-6 days', 'weekday 1') || ' 00:00:00.000000'",
}
_PG_BUCKET = {
    "quarter": "bucket",
    "hour": "date_trunc('hour', bucket)",
    "day": "date_trunc('day', bucket)",
    "week": "date_trunc('week', bucket)",
}
_RAW_SUM_LIST = (
    "count(*)",
    "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END)",
    "sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END)",
    "sum(CASE WHEN cost_nanos IS NULL THEN 1 ELSE 0 END)",
    *(f"coalesce(sum({m}), 0)" for m in MEASURES[4:]),
)
_RAW_SUMS = ", ".join(_RAW_SUM_LIST)


def _dim_exprs(r: Rollup) -> str:
    """The rollup's key columns over usage rows: kept, "" when left out; a NULL tier ""."""
    return ", ".join(
        ("coalesce(service_tier, '')" if d == "service_tier" else d) if d in r.dims else "''"
        for d in r.key
    )


def _conflict(r: Rollup) -> str:
    """``ON CONFLICT (key) DO UPDATE`` adding the excluded sums (constant names only)."""
    table = r.table.name
    key = ", ".join(("bucket", *r.key))
    sets = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)
    return f"ON CONFLICT ({key}) DO UPDATE SET {sets}"


def _fold(r: Rollup) -> SQL:
    """SQLite: sum the usage rows in ``(mark, last]`` into one rollup table."""
    table = r.table.name
    columns = ", ".join(r.columns)
    groups = ", ".join(str(i) for i in range(1, len(r.key) + 2))
    return SQL(
        f"INSERT INTO {table} ({columns}) "  # noqa: S608  (constant names and expressions)
        f"SELECT {_SQLITE_BUCKET[r.grain]}, {_dim_exprs(r)}, {_RAW_SUMS} "
        f"FROM llmspend_usage WHERE id > :mark AND id <= :last GROUP BY {groups} " + _conflict(r)
    )


_FOLDS = tuple(_fold(r) for r in ROLLUPS)


def _pg_fold_sql() -> str:
    """PostgreSQL: one statement deleting the queued ids, summing their rows once per
    quarter hour and every key column, then into every rollup table in key order
    (data-modifying CTEs, so the ids and the sums go together; rows in key order are
    appended to the index's pages instead of scattered, and locked in one order)."""
    quarter = "date_bin(interval '15 minutes', ts, timestamp '2000-01-01')"
    keys = ", ".join(f"coalesce({k}, '') AS {k}" if k == "service_tier" else k for k in KEY_COLUMNS)
    sums = ", ".join(f"{e} AS m{j}" for j, e in enumerate(_RAW_SUM_LIST))
    groups = ", ".join(str(j) for j in range(1, len(KEY_COLUMNS) + 2))
    parts = [
        "d AS (DELETE FROM llmspend_rollup_pending RETURNING usage_id)",
        f"q AS MATERIALIZED (SELECT {quarter} AS bucket, {keys}, {sums} "  # noqa: S608
        f"FROM llmspend_usage JOIN d ON id = usage_id GROUP BY {groups})",
    ]
    totals = ", ".join(f"sum(m{j})" for j in range(len(MEASURES)))
    for i, r in enumerate(ROLLUPS):
        table = r.table.name
        dims = ", ".join(d if d in r.dims else "''" for d in r.key)
        by = ", ".join(str(j) for j in range(1, len(r.key) + 2))
        parts.append(
            f"u{i} AS (INSERT INTO {table} ({', '.join(r.columns)}) "  # noqa: S608
            f"SELECT {_PG_BUCKET[r.grain]}, {dims}, {totals} FROM q GROUP BY {by} "
            f"ORDER BY {by} {_conflict(r)})"
        )
    return "WITH " + ", ".join(parts) + " SELECT count(*) FROM d"  # noqa: S608


_PG_FOLD = _pg_fold_sql()

#: PostgreSQL: one rollup table's groups of a bulk writer's batch, already summed and in
#: key order (:func:`fold_pg_batch`); every key column, "" for one the table leaves out.
PG_BATCH_TABLE = "llmspend_rollup_batch"
PG_BATCH_COLUMNS: tuple[str, ...] = ("bucket", *KEY_COLUMNS, *MEASURES)
_PG_BATCH_CREATE = (  # the model family's tables have every key column, NOT NULL
    "CREATE TEMPORARY TABLE IF NOT EXISTS llmspend_rollup_batch "
    "(LIKE llmspend_rollup_hourly_model) ON COMMIT DROP"
)


def _pg_batch_upsert(r: Rollup) -> str:
    """Add the batch table's groups to one rollup table (they are final)."""
    table = r.table.name
    columns = ", ".join(r.columns)
    return (
        f"INSERT INTO {table} ({columns}) "  # noqa: S608
        f"SELECT {columns} FROM llmspend_rollup_batch " + _conflict(r)
    )


_PG_BATCH_UPSERTS = {r: _pg_batch_upsert(r) for r in ROLLUPS}
_PG_BATCH_EMPTY = "TRUNCATE llmspend_rollup_batch"
#: The queue trigger (migration 0014) skips the rows of a statement run while this is on.
_PG_QUEUE_OFF = "SELECT set_config('llmspend.rollups_folded', 'on', true)"
_PG_QUEUE_ON = "SELECT set_config('llmspend.rollups_folded', 'off', true)"


def _pg_catch_up(tx: Tx) -> int:
    """PostgreSQL: fold the queued rows into the rollups (on ``tx``); how many rows."""
    tx.execute(_PG_TURN)
    return int(tx.execute(_PG_FOLD).fetchone()[0])


def fold_pg_batch(
    tx: Tx, insert: Callable[[], None], groups: Iterable[tuple[Rollup, Callable[[], None]]]
) -> None:
    """PostgreSQL, on ``tx``: ``insert`` (usage rows) with the queue trigger off, then per
    ``(rollup, fill)`` of ``groups`` (every table): ``fill`` puts the table's groups of
    those rows in :data:`PG_BATCH_TABLE`, which are added to it. Summed once: not queued."""
    # turns with the folders (no rollup row one of them holds is upserted here), and a
    # rebuild (EXCLUSIVE) sees the batch's rows and sums together or neither
    tx.execute(_PG_TURN)
    tx.execute(_PG_QUEUE_OFF)  # for this transaction only: gone with a rollback too
    insert()
    tx.execute(_PG_QUEUE_ON)
    tx.execute(_PG_BATCH_CREATE)
    for r, fill in groups:
        fill()
        tx.execute(_PG_BATCH_UPSERTS[r])
        tx.execute(_PG_BATCH_EMPTY)  # not DELETE: no dead rows for the next scan to pass


def catch_up(conn: Connection | Tx, *, inserted: Sequence[Mapping[str, Any]] = ()) -> int:
    """Sum the usage rows not yet in the rollups into them, on ``conn``'s write
    transaction (SQLite: the rows past the mark, then the mark moves; PostgreSQL: the
    queued rows, whose ids are deleted). Returns how many rows it covered.

    ``inserted``: rows this transaction has just inserted (on SQLite the highest ids, as
    SQLite gives a new row the highest id plus one); SQLite sums them in Python, which is
    faster for a large batch than reading them back. PostgreSQL reads them from the queue.
    """
    tx = Tx.of(conn)
    if not tx.sqlite:
        return _pg_catch_up(tx)
    mark, last = tx.run(_PENDING).one()
    if last is None or last <= mark:
        return 0
    before = {"mark": mark, "last": last - len(inserted)}
    if before["last"] > mark:
        for fold in _FOLDS:
            tx.run(fold, before)
    if inserted:
        add_rows(conn, inserted)
    tx.run(_MARK, {"last": last})
    return int(last - mark)


def up_to_date(store: Store) -> Store:
    """``store`` with its rollups covering every stored row (what analytics reads first).

    One read when nothing is pending; else one short write transaction.
    """
    with store.tx() as tx:
        if store.is_sqlite:
            mark, last = tx.run(_PENDING).one()
            pending = last is not None and last > mark
        else:
            pending = bool(tx.run(_QUEUED).one()[0])
    if pending:
        with store.tx(write=True) as tx:
            catch_up(tx)
    return store


# -- rebuilding ------------------------------------------------------------------------------


def _bucket_expr(conn: Connection, column: Any, unit: str) -> Any:
    if conn.dialect.name == "postgresql":
        if unit == "quarter":
            return func.date_bin(
                literal_column("interval '15 minutes'"),
                column,
                literal_column("timestamp '2000-01-01'"),
            )
        return func.date_trunc(unit, column)
    if unit == "quarter":
        return literal_column(_SQLITE_BUCKET["quarter"])  # over the usage table only
    # SQLite keeps DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text: cut and pad it.
    if unit == "week":
        day = func.date(func.substr(column, 1, 10), "-6 days", "weekday 1")
        return day.op("||")(literal_column("' 00:00:00.000000'"))
    width, pad = (13, ":00:00.000000") if unit == "hour" else (10, " 00:00:00.000000")
    return func.substr(column, 1, width).op("||")(literal_column(f"'{pad}'"))


def _sums_from_usage() -> list[Any]:
    u = UsageRecord
    one: Any = literal_column("1")
    zero: Any = literal_column("0")
    return [
        func.count(),
        func.coalesce(func.sum(case((u.status == "error", one), else_=zero)), zero),
        func.coalesce(func.sum(case((u.status == "refused", one), else_=zero)), zero),
        func.coalesce(func.sum(case((u.cost_nanos.is_(None), one), else_=zero)), zero),
        *(func.coalesce(func.sum(getattr(u, m)), zero) for m in MEASURES[4:]),
    ]


def _fill_from_usage(conn: Connection, r: Rollup) -> None:
    """Fill one (empty) rollup table by summing every usage row."""
    empty: Any = literal_column("''")
    dims: list[Any] = []
    for d in r.key:
        col: Any = getattr(UsageRecord, d)
        if d == "service_tier":
            col = func.coalesce(col, empty)
        dims.append(col if d in r.dims else empty)
    by: list[Any] = [literal_column(str(i)) for i in range(1, len(r.key) + 2)]
    bucket = _bucket_expr(conn, UsageRecord.ts, r.grain)
    conn.execute(
        insert(r.table).from_select(
            list(r.columns), select(bucket, *dims, *_sums_from_usage()).group_by(*by)
        )
    )


def rebuild_in(conn: Connection) -> tuple[int, int]:
    """Recompute every rollup table from the raw rows on ``conn``'s (write) transaction.
    Returns the row counts of the full hourly and daily tables."""
    if conn.dialect.name == "postgresql":
        # Writers (their insert trigger) and folders wait until we commit: every row is
        # counted exactly once, by us, or by a catch-up of its queued id afterwards.
        conn.execute(text("LOCK TABLE llmspend_rollup_pending IN EXCLUSIVE MODE"))
        conn.execute(text("DELETE FROM llmspend_rollup_pending"))
    for r in ROLLUPS:
        conn.execute(r.table.delete())
    from_usage = [r for r in ROLLUPS if r.grain == "quarter" or (r.grain, r.family) in (
        ("hour", "full"), ("hour", "model"))]  # fmt: skip
    for r in from_usage:
        _fill_from_usage(conn, r)
    fill_from_hourly(conn, [r for r in ROLLUPS if r not in from_usage])
    if conn.dialect.name == "sqlite":  # every row is in them now
        last = conn.execute(select(func.max(UsageRecord.id))).scalar() or 0
        Tx.of(conn).run(_MARK, {"last": last})
    hourly = ROLLUPS[0].table
    n_hourly = conn.execute(select(func.count()).select_from(hourly)).scalar_one()
    n_daily = conn.execute(select(func.count()).select_from(ROLLUPS[1].table)).scalar_one()
    return int(n_hourly), int(n_daily)


def fill_from_hourly(conn: Connection, rollups: Sequence[Rollup]) -> None:
    """Fill (empty) rollup tables by summing their family's hourly table (the full one
    for the full and team families)."""
    for r in rollups:
        source = ROLLUPS[6] if r.family == "model" else ROLLUPS[0]
        src = source.table
        by: list[Any] = [literal_column(str(i)) for i in range(1, len(r.key) + 2)]
        empty: Any = literal_column("''")
        bucket = _bucket_expr(conn, src.c.bucket, r.grain)
        dims = [src.c[d] if d in r.dims else empty for d in r.key]
        conn.execute(
            insert(r.table).from_select(
                list(r.columns),
                select(bucket, *dims, *(func.sum(src.c[m]) for m in MEASURES)).group_by(*by),
            )
        )


def rebuild_rollups(store: Store) -> dict[str, int]:
    """Recreate the rollups from the raw usage rows, in one write transaction.

    Returns ``{"hourly": rows, "daily": rows}``. The result is identical to the tables the
    catch-ups maintain; run it after changing raw rows by hand.
    """
    with store.begin(write=True) as conn:
        n_hourly, n_daily = rebuild_in(conn)
    return {"hourly": n_hourly, "daily": n_daily}


def rollup_rows(conn: Connection, table: str = "hourly") -> Sequence[tuple[Any, ...]]:
    """Every row of one full-family rollup table in key order, as stored (for checks and
    tests; the rows not yet caught up are not in them until :func:`up_to_date` or
    :func:`catch_up` runs)."""
    t = _TABLES[0] if table == "hourly" else _TABLES[1]
    cols = [t.c[c] for c in _COLUMNS]
    return [tuple(r) for r in conn.execute(select(*cols).order_by(*cols[:6])).all()]
