"""Rollups: usage pre-aggregated per hour, day and week, in three families.

The *full* family (``llmspend_rollup_hourly``, ``_daily``, ``_weekly``) holds one row per
UTC bucket × org × project × user × provider × model with the sums of :data:`MEASURES`;
the *team* family (``llmspend_rollup_*_team``) leaves out the user and the *model* family
(``llmspend_rollup_*_model``) keeps only provider × model — a left-out dimension is stored
as ``""`` — so questions that do not need the user (or the org and project) read far fewer
rows however many users there are (:data:`ROLLUPS`). Rows are added with ``INSERT ... ON
CONFLICT (key) DO UPDATE SET col = col + excluded.col``, so concurrent writers add up
instead of overwriting each other. Because the sums are integers (nanodollars, tokens,
counts), a rollup equals the raw rows it covers, exactly.

How rows reach them depends on the store:

* **PostgreSQL**: in the transaction that writes the rows — a live call upserts one row
  per table in one statement (:func:`record_hook`, a stage of the record transaction); ``ingest()``
  sums its batch in Python first, then upserts each (bucket, dimensions) once, in sorted
  order (a consistent lock order).
* **SQLite**: after it. Writers take turns there, so usage ids are committed in ascending
  order, and ``llmspend_rollup_state.rolled_through`` marks how far the rollups go: a live
  call only appends its row (the two upserts were the costliest statements of a call),
  and :func:`catch_up` sums the rows past the mark into both tables and moves the mark,
  in one write transaction. It runs before every read of the rollups (``aggregate``
  calls :func:`up_to_date`), with every ``ingest()`` and spool replay, and in
  :func:`rebuild_rollups`.

:func:`rebuild_rollups` recomputes every table from the raw rows and gives identical
tables (use it after deleting or editing raw rows by hand).

Any other code that inserts into ``llmspend_usage`` must call :func:`add_rows` in the same
transaction on PostgreSQL; on SQLite nothing (the next catch-up sums its rows; add_rows
would count them twice).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
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
    "MEASURES",
    "ROLLUPS",
    "Rollup",
    "add_rows",
    "catch_up",
    "rebuild_rollups",
    "record_hook",
    "up_to_date",
]

#: Store columns of the rollup key, after the bucket.
DIMENSION_COLUMNS: tuple[str, ...] = ("org_name", "project_name", "user_name", "provider", "model")

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
    "model": ("provider", "model"),
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
#: Per rollup, which of the five dimension positions it keeps.
_KEEP = [tuple(d in r.dims for d in DIMENSION_COLUMNS) for r in ROLLUPS]
_BATCH = 5000


class _Upsert:
    """One table's upsert, compiled once per dialect to the DBAPI's own SQL and params."""

    __slots__ = ("names", "positional", "sql")

    def __init__(self, table: Table, conn: Connection | Tx) -> None:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported stores
            raise NotImplementedError(f"rollups need SQLite or PostgreSQL, not {conn.dialect.name}")
        ins = dialect_insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=[table.c[c] for c in ("bucket", *DIMENSION_COLUMNS)],
            set_={m: table.c[m] + ins.excluded[m] for m in MEASURES},
        )
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(_COLUMNS))
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        if self.positional and self.names != _COLUMNS:  # pragma: no cover - a SQLAlchemy change
            raise RuntimeError(f"unexpected parameter order in the rollup upsert: {self.names}")

    def run(self, conn: Connection | Tx, params: list[tuple[Any, ...]]) -> None:
        if not params:
            return
        tx = Tx.of(conn)
        if self.positional:
            args: Any = params
        else:
            args = [dict(zip(_COLUMNS, p, strict=True)) for p in params]
        if len(args) == 1:
            tx.execute(self.sql, args[0])
            return
        for start in range(0, len(args), _BATCH):
            tx.executemany(self.sql, args[start : start + _BATCH])


_upserts: dict[tuple[str, str, str], _Upsert] = {}


def _upsert(conn: Connection | Tx, table: Table) -> _Upsert:
    key = (conn.dialect.name, conn.dialect.driver, table.name)
    up = _upserts.get(key)
    if up is None:
        up = _upserts[key] = _Upsert(table, conn)
    return up


def _measures(row: Mapping[str, Any]) -> list[int]:
    status = row["status"]
    cost = row["cost_nanos"]
    return [
        1,
        1 if status == "error" else 0,
        1 if status == "refused" else 0,
        1 if cost is None else 0,
        row["input_tokens"],
        row["cached_input_tokens"],
        row["cache_write_tokens"],
        row["output_tokens"],
        row["reasoning_tokens"],
        cost or 0,
    ]


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


def _masked(dims: tuple[Any, ...], keep: tuple[bool, ...]) -> tuple[Any, ...]:
    return tuple(d if k else "" for d, k in zip(dims, keep, strict=True))


_pg_hook_sql: str | None = None


def _pg_hook() -> str:
    """PostgreSQL: one statement upserting one row into every rollup table (data-modifying
    CTEs), so a live call pays one round trip for all of them."""
    global _pg_hook_sql
    if _pg_hook_sql is None:
        marks = ", ".join(["%s"] * len(_COLUMNS))
        key = ", ".join(("bucket", *DIMENSION_COLUMNS))
        parts = []
        for r in ROLLUPS:
            t = r.table.name
            sets = ", ".join(f"{m} = {t}.{m} + excluded.{m}" for m in MEASURES)
            parts.append(
                f"INSERT INTO {t} ({', '.join(_COLUMNS)}) VALUES ({marks}) "  # noqa: S608
                f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
            )
        ctes = ", ".join(f"u{i} AS ({p})" for i, p in enumerate(parts[:-1]))
        _pg_hook_sql = f"WITH {ctes} {parts[-1]}"
    return _pg_hook_sql


def record_hook(tx: Tx, call: Call | None, row: Mapping[str, Any]) -> None:
    """``in_record_hooks`` entry: add one call's row to its bucket in every rollup table
    (PostgreSQL; on SQLite the row is summed in later by :func:`catch_up`)."""
    if tx.sqlite:
        return
    ts: dt.datetime = row["ts"]
    dims = (row["org_name"], row["project_name"], row["user_name"], row["provider"], row["model"])
    sums = _measures(row)
    params: list[Any] = []
    for r, keep in zip(ROLLUPS, _KEEP, strict=True):
        params.append(_bucket_of(ts, r.grain))
        params.extend(_masked(dims, keep))
        params.extend(sums)
    # One statement straight on the DBAPI connection, inside the caller's transaction:
    # the cheapest path (the per-call latency budget is a fraction of a ms).
    tx.execute(_pg_hook(), params)


_ROW_FIELDS = itemgetter(
    "ts", "org_name", "project_name", "user_name", "provider", "model", "status", "cost_nanos",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens",
)  # fmt: skip
_HOUR = dt.timedelta(hours=1)


def add_rows(conn: Connection | Tx, rows: Iterable[Mapping[str, Any]]) -> None:
    """Add usage rows (dicts with store column names) to the rollups, on ``conn``'s
    transaction: summed per bucket in Python first, then one upsert per bucket."""
    hourly: dict[tuple[Any, ...], list[int]] = {}
    quarters: dict[tuple[Any, ...], list[int]] = {}
    start = end = None
    for row in rows:
        ts, org, project, user, provider, model, status, cost, i, c, w, o, r = _ROW_FIELDS(row)
        if start is None or not start <= ts < end:  # rows mostly come in time order
            start = ts.replace(minute=0, second=0, microsecond=0)
            end = start + _HOUR
        key = (start, org, project, user, provider, model)
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
    for r, keep in zip(ROLLUPS, _KEEP, strict=True):
        sums_by_key: dict[tuple[Any, ...], list[int]]
        if r.grain == "hour" and r.family == "full":
            sums_by_key = hourly
        else:
            sums_by_key = {}
            buckets: dict[dt.datetime, dt.datetime] = {}
            for key, sums in (quarters if r.grain == "quarter" else hourly).items():
                b = buckets.get(key[0])
                if b is None:
                    b = buckets[key[0]] = _bucket_of(key[0], r.grain)
                rkey = (b, *_masked(key[1:], keep))
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
        _upsert(conn, r.table).run(conn, params)


def ingest_hook(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """``ingest_hooks`` entry: add an ingested batch (just inserted) to the rollups; on
    SQLite, with the rows past the mark before it."""
    if conn.dialect.name == "sqlite":
        catch_up(conn, inserted=rows)
    else:
        add_rows(conn, rows)


# -- SQLite: catching up with the rows past the mark -----------------------------------------

_PENDING = SQL(
    "SELECT rolled_through, (SELECT max(id) FROM llmspend_usage) AS last "
    "FROM llmspend_rollup_state WHERE id = 1"
)
_MARK = SQL("UPDATE llmspend_rollup_state SET rolled_through = :last WHERE id = 1")


_SQLITE_BUCKET = {
    "quarter": "substr(ts, 1, 14) || CASE WHEN substr(ts, 15, 2) < '15' THEN '00' "
    "WHEN substr(ts, 15, 2) < '30' THEN '15' WHEN substr(ts, 15, 2) < '45' THEN '30' "
    "ELSE '45' END || ':00.000000'",
    "hour": "substr(ts, 1, 13) || ':00:00.000000'",
    "day": "substr(ts, 1, 10) || ' 00:00:00.000000'",
    "week": "date(substr(ts, 1, 10), '-6 days', 'weekday 1') || ' 00:00:00.000000'",
}


def _fold(r: Rollup) -> SQL:
    """Sum the usage rows in ``(mark, last]`` into one rollup table (constant text only)."""
    table = r.table.name
    key = f"bucket, {', '.join(DIMENSION_COLUMNS)}"
    dims = ", ".join(d if d in r.dims else "''" for d in DIMENSION_COLUMNS)
    return SQL(
        f"INSERT INTO {table} ({', '.join(_COLUMNS)}) "  # noqa: S608
        f"SELECT {_SQLITE_BUCKET[r.grain]}, {dims}, count(*), "
        "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'refused' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN cost_nanos IS NULL THEN 1 ELSE 0 END), "
        + ", ".join(f"coalesce(sum({m}), 0)" for m in MEASURES[4:])
        + " FROM llmspend_usage WHERE id > :mark AND id <= :last GROUP BY 1, 2, 3, 4, 5, 6 "
        f"ON CONFLICT ({key}) DO UPDATE SET "
        + ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in MEASURES)
    )


_FOLDS = tuple(_fold(r) for r in ROLLUPS)


def catch_up(conn: Connection | Tx, *, inserted: Sequence[Mapping[str, Any]] = ()) -> int:
    """On SQLite, sum the usage rows past the mark into the rollups and move the mark, on
    ``conn``'s write transaction. Returns how many ids it covered (0 on PostgreSQL).

    ``inserted``: rows this transaction has just inserted (the highest ids, as SQLite
    gives a new row the highest id plus one); they are summed in Python, which is faster
    for a large batch than reading them back.
    """
    tx = Tx.of(conn)
    if not tx.sqlite:
        return 0
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

    One read when nothing is pending; else one short write transaction on SQLite.
    """
    if store.is_sqlite:
        with store.tx() as tx:
            mark, last = tx.run(_PENDING).one()
        if last is not None and last > mark:
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


def rebuild_in(conn: Connection) -> tuple[int, int]:
    """Recompute every rollup table from the raw rows on ``conn``'s (write) transaction.
    Returns the row counts of the full hourly and daily tables."""
    hourly = ROLLUPS[0].table
    if conn.dialect.name == "postgresql":
        # Writers upsert after inserting their usage row: hold them off until we commit,
        # so every row is counted exactly once (by us, or by its own upsert afterwards).
        names = ", ".join(r.table.name for r in ROLLUPS)
        conn.execute(text(f"LOCK TABLE {names} IN EXCLUSIVE MODE"))
    for r in ROLLUPS:
        conn.execute(r.table.delete())
    u = UsageRecord
    hour = _bucket_expr(conn, u.ts, "hour")
    dims = [u.org_name, u.project_name, u.user_name, u.provider, u.model]
    by: list[Any] = [literal_column(str(i)) for i in range(1, 7)]
    conn.execute(
        insert(hourly).from_select(
            list(_COLUMNS), select(hour, *dims, *_sums_from_usage()).group_by(*by)
        )
    )
    fill_from_hourly(conn, [r for r in ROLLUPS[1:] if r.grain != "quarter"])
    for r in ROLLUPS:
        if r.grain == "quarter":
            bucket = _bucket_expr(conn, u.ts, "quarter")
            kept = [d if d.key in r.dims else literal_column("''") for d in dims]
            conn.execute(
                insert(r.table).from_select(
                    list(_COLUMNS), select(bucket, *kept, *_sums_from_usage()).group_by(*by)
                )
            )
    if conn.dialect.name == "sqlite":  # every row is in them now
        Tx.of(conn).run(_MARK, {"last": conn.execute(select(func.max(u.id))).scalar() or 0})
    n_hourly = conn.execute(select(func.count()).select_from(hourly)).scalar_one()
    n_daily = conn.execute(select(func.count()).select_from(ROLLUPS[1].table)).scalar_one()
    return int(n_hourly), int(n_daily)


def fill_from_hourly(conn: Connection, rollups: Sequence[Rollup]) -> None:
    """Fill (empty) rollup tables by summing the full hourly table (rebuilds, migrations)."""
    hourly = ROLLUPS[0].table
    by: list[Any] = [literal_column(str(i)) for i in range(1, 7)]
    empty: Any = literal_column("''")
    for r in rollups:
        bucket = _bucket_expr(conn, hourly.c.bucket, r.grain)
        dims = [hourly.c[d] if d in r.dims else empty for d in DIMENSION_COLUMNS]
        conn.execute(
            insert(r.table).from_select(
                list(_COLUMNS),
                select(bucket, *dims, *(func.sum(hourly.c[m]) for m in MEASURES)).group_by(*by),
            )
        )


def rebuild_rollups(store: Store) -> dict[str, int]:
    """Recreate the rollups from the raw usage rows, in one write transaction.

    Returns ``{"hourly": rows, "daily": rows}``. The result is identical to the tables the
    write hooks maintain; run it after changing raw rows by hand.
    """
    with store.begin(write=True) as conn:
        n_hourly, n_daily = rebuild_in(conn)
    return {"hourly": n_hourly, "daily": n_daily}


def rollup_rows(conn: Connection, table: str = "hourly") -> Sequence[tuple[Any, ...]]:
    """Every row of one rollup table in key order, as stored (for checks and tests; on
    SQLite the rows past the mark are not in them until :func:`up_to_date` or
    :func:`catch_up` runs)."""
    t = _TABLES[0] if table == "hourly" else _TABLES[1]
    cols = [t.c[c] for c in _COLUMNS]
    return [tuple(r) for r in conn.execute(select(*cols).order_by(*cols[:6])).all()]
