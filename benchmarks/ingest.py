"""Bulk ingest throughput on SQLite and PostgreSQL, realistic rows with costs given.

Rows come from ``benchmarks/_data.py`` (a few orgs, ~15 projects, ~60 users, a dozen
models, four months, business-hour peaks, caching on a third of chat calls; a seventh
tagged). For each store it prints rows/s for

- ``llmspend.ingest`` — the column path (``llmspend.bulkload``): validation, hierarchy
  rows, one executemany (SQLite) or COPY (PostgreSQL), every rollup table summed from
  the batch's columns by ``llmspend.store.rollup_batch`` (SQLite: in an ingest hook, an
  upsert per table; PostgreSQL: by the writer, each table's groups COPY'd to a temporary
  table and added with one INSERT ... ON CONFLICT, the queue trigger skipping the
  batch's rows), the budget periods of three budgets; wall and CPU time (the machine
  may be shared; the CPU is this process's only — on PostgreSQL the server's work shows
  in the wall time alone). "Without the ingest hooks" leaves out the budget periods and,
  on SQLite, the rollups (on PostgreSQL the writer sums them still);
- the row path it replaced (``llmspend.usage.ingest_rows``), same hooks;
- a baseline in the same run: a raw DBAPI ``executemany`` of the same rows, already
  validated, into a table of the same columns and index (no checks, no hooks);
- SQLite: its own writing, what ``ingest()`` with its rollups cannot beat however little
  Python it runs — the same rows by raw multi-row VALUES (64 rows a statement, as the
  column path writes), then the rows the batch made in each rollup table (read back,
  upserted again into empty tables) the same way.

Targets (DESIGN §10): SQLite >= 100,000 rows/s, PostgreSQL >= 30,000 rows/s.

    python benchmarks/ingest.py [--rows 200000] [--pg-url postgresql://...] [--no-pg|--no-sqlite]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llmspend
from benchmarks._data import usage_dicts
from benchmarks.pgcluster import postgres
from llmspend.store.engine import forget_store
from llmspend.store.rollup_batch import insert_values
from llmspend.tracker import Tracker, set_tracker
from llmspend.usage import _INSERT_COLUMNS, ingest_rows, validate_row

TARGET = {"sqlite": 100_000, "postgres": 30_000}


def rows_for(n: int) -> list[dict[str, Any]]:
    rows = usage_dicts(n)
    for i in range(0, n, 7):
        rows[i]["tags"] = {"team": ("red", "blue")[i % 2], "exp": str(i % 5)}
    keys = {k for r in rows for k in r}
    return [{k: r.get(k) for k in keys} for r in rows]


def bench_column_path(
    url: str, rows: list[dict[str, Any]], *, hooks: bool = True
) -> tuple[float, float]:
    """(rows/s wall, rows/s CPU) of ``llmspend.ingest``."""
    tracker = Tracker(url)
    set_tracker(tracker)
    if hooks:  # budget periods for the count hook to fill
        llmspend.set_budget("org", "org0", 10**6, period="month")
        llmspend.set_budget("project", "org1/proj1", 10**6, period="week")
        llmspend.set_budget("user", "org2/user2", 10**6, period="day")
    else:
        tracker.ingest_hooks = []
    t0, c0 = time.perf_counter(), time.process_time()
    llmspend.ingest(rows)
    return len(rows) / (time.perf_counter() - t0), len(rows) / (time.process_time() - c0)


def bench_row_path(url: str, rows: list[dict[str, Any]]) -> float:
    tracker = Tracker(url)

    def on_write(conn: Any, clean: list[dict[str, Any]]) -> None:
        for hook in tracker.ingest_hooks:
            hook(conn, clean)

    t0 = time.perf_counter()
    ingest_rows(tracker.store, rows, defaults=tracker.defaults, pricer=tracker, on_write=on_write)
    return len(rows) / (time.perf_counter() - t0)


def validated(rows: list[dict[str, Any]], sqlite: bool) -> list[tuple[Any, ...]]:
    tracker_defaults = ("default", "default", "default")
    out = []
    for i, r in enumerate(rows):
        v = validate_row(i, r, tracker_defaults, pricer=None)  # type: ignore[arg-type]
        if sqlite:
            v["ts"] = v["ts"].isoformat(sep=" ", timespec="microseconds")
        out.append(tuple(v[c] for c in _INSERT_COLUMNS))
    return out


def bench_raw_sqlite(path: Path, params: list[tuple[Any, ...]], *, values: bool = False) -> float:
    """rows/s of a raw executemany of validated rows (one row an execution), or with
    ``values`` of the multi-row VALUES the column path writes with."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    cols = ", ".join(_INSERT_COLUMNS)
    con.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {cols})")
    con.execute("CREATE UNIQUE INDEX t_ts ON t(ts, record_uid)")
    marks = "?" * len(_INSERT_COLUMNS)
    t0 = time.perf_counter()
    with con:
        if values:
            insert_values(con.cursor(), f"INSERT INTO t ({cols})", params, len(params), len(marks))
        else:
            con.executemany(f"INSERT INTO t ({cols}) VALUES ({', '.join(marks)})", params)
    return len(params) / (time.perf_counter() - t0)


def bench_raw_rollups(src: Path, dst: Path) -> tuple[int, float]:
    """(rollup rows, seconds) of SQLite's own work on the rollups: the rows the batch made
    in every rollup table (read back from the store it was ingested into) upserted again,
    in key order, by one raw executemany per table into a fresh store's empty tables."""
    from llmspend.store.rollups import MEASURES, ROLLUPS

    Tracker(f"sqlite:///{dst}")  # the schema
    src_con, con = sqlite3.connect(src), sqlite3.connect(dst)
    tables = []
    for r in ROLLUPS:
        name, cols = r.table.name, ", ".join(r.columns)
        key = ", ".join(("bucket", *r.key))
        got = src_con.execute(f"SELECT {cols} FROM {name} ORDER BY {key}").fetchall()
        sets = ", ".join(f"{m} = {name}.{m} + excluded.{m}" for m in MEASURES)
        head, tail = f"INSERT INTO {name} ({cols})", f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
        tables.append((head, tail, len(r.columns), got))
    t0 = time.perf_counter()
    with con:
        for head, tail, width, got in tables:
            insert_values(con.cursor(), head, got, len(got), width, tail)
    return sum(len(got) for *_, got in tables), time.perf_counter() - t0


def bench_raw_pg(url: str, params: list[tuple[Any, ...]]) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as con:
        con.execute("DROP TABLE IF EXISTS bench_raw")
        con.execute(
            "CREATE TABLE bench_raw (LIKE llmspend_usage INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        con.commit()
        cols = ", ".join(_INSERT_COLUMNS)
        marks = ", ".join(["%s"] * len(_INSERT_COLUMNS))
        t0 = time.perf_counter()
        with con.cursor() as cur:
            cur.executemany(f"INSERT INTO bench_raw ({cols}) VALUES ({marks})", params)
        con.commit()
        rate = len(params) / (time.perf_counter() - t0)
        con.execute("DROP TABLE bench_raw")
    return rate


def report(
    store: str,
    column: tuple[float, float],
    bare: tuple[float, float],
    row: float,
    base: float,
    floor: tuple[int, float, int, float] | None = None,
) -> None:
    target = TARGET[store]
    print(f"{store:8} raw executemany (validated rows, no hooks): {base:>10,.0f} rows/s wall")
    if floor is not None:
        n, values, rollup_rows, seconds = floor
        print(f"{store:8} raw multi-row VALUES of the same rows:      {values:>10,.0f} rows/s wall")
        print(
            f"{store:8} ... and of the {rollup_rows:,} rollup rows ({seconds:.2f} s):"
            f"{n / (n / values + seconds):>10,.0f} rows/s wall (SQLite's own writing)"
        )
    print(
        f"{store:8} column path without the ingest hooks:       {bare[0]:>10,.0f} rows/s wall"
        f" {bare[1]:>10,.0f} rows/s CPU"
    )
    print(
        f"{store:8} llmspend.ingest (column path, hooks):       {column[0]:>10,.0f} rows/s wall"
        f" {column[1]:>10,.0f} rows/s CPU"
    )
    print(f"{store:8} row path (before):                         {row:>10,.0f} rows/s wall")
    print(
        f"{store:8} column/raw {column[0] / base:.2f}   column/row {column[0] / row:.2f}   "
        f"target >= {target:,} rows/s: {'MET' if column[0] >= target else 'NOT MET'} (wall), "
        f"{'MET' if column[1] >= target else 'NOT MET'} (CPU)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-sqlite", action="store_true")
    args = ap.parse_args()
    rows = rows_for(args.rows)
    print(f"{args.rows:,} rows")
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            params = validated(rows, sqlite=True)
            base = bench_raw_sqlite(Path(tmp) / "raw.sqlite", params)
            values = bench_raw_sqlite(Path(tmp) / "values.sqlite", params, values=True)
            bare = bench_column_path(f"sqlite:///{tmp}/bare.sqlite", rows, hooks=False)
            column = bench_column_path(f"sqlite:///{tmp}/column.sqlite", rows)
            rollup_rows, seconds = bench_raw_rollups(
                Path(tmp) / "column.sqlite", Path(tmp) / "rollups.sqlite"
            )
            row = bench_row_path(f"sqlite:///{tmp}/row.sqlite", rows)
            floor = (len(rows), values, rollup_rows, seconds)
            report("sqlite", column, bare, row, base, floor)
    if args.no_pg:
        return
    with postgres(args.pg_url) as (url, note):
        if url is None:
            print(f"postgres skipped: {note}")
            return
        column = bench_column_path(url, rows)
        base = bench_raw_pg(url, validated(rows, sqlite=False))
        forget_store(url)
        with postgres(None) as (url2, _):  # fresh databases for the others
            nan = float("nan")
            bare = bench_column_path(url2, rows, hooks=False) if url2 else (nan, nan)
        with postgres(None) as (url3, _):
            row = bench_row_path(url3, rows) if url3 else float("nan")
        report("postgres", column, bare, row, base)


if __name__ == "__main__":
    main()
