"""``llmspend.records()`` on realistic usage, SQLite and PostgreSQL.

Loads ``--rows`` rows from ``benchmarks/_data.py`` (a few orgs, ~15 projects, ~60 users,
a dozen models, four months, business-hour peaks, caching on a third of chat calls, a
seventh tagged) through ``llmspend.ingest``, then times (best of ``--repeat``):

- ``records()`` — every column, a DataFrame with exact ``Decimal`` money and tag dicts;
- ``records(as_="arrow")`` — the same as a ``pyarrow.Table`` (``decimal128(38, 9)``);
- ``records(as_="pandas-arrow")`` — a DataFrame of Arrow-backed columns over that table;
- ``records(columns=[ts, model, cost_usd])`` and one with an org filter (pushdown);
- the first full read (it reads every row through SQL and writes the columnar copy of
  every complete id range, ``llmspend.store.segments``) and the later ones (from the
  copy), and the same cases without the copy (``LLMSPEND_RECORDS_CACHE=0``); the copy is
  written under a temporary ``XDG_CACHE_HOME``;
- on PostgreSQL with connectorx installed, ``records()`` and ``as_="arrow"`` read by
  COPY as well (the fallback);
- wall time and this process's CPU time for each (the steadier figure on a shared machine);
- a baseline measured in the same run: ``pandas.read_sql`` of the same query
  (every column, ``ORDER BY ts, id``) on the SQLAlchemy engine — raw values, money
  still integer nanodollars, times as stored;
- with ``--parallel``, the raw read split over two readers, against one: on SQLite two
  threads each fetching half the rowid range on its own ``sqlite3`` connection, on
  PostgreSQL connectorx's ``partition_on="id", partition_num=2`` (two connections, Rust
  threads) — the experiments docs/data-access.md reports (neither is used by records()).

Target (DESIGN §10): 1M rows in <= 1.5 s, money exact.

    python benchmarks/records.py [--rows 1000000] [--pg-url URL] [--no-pg] [--repeat 3]
                                 [--parallel]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llmspend
from benchmarks._data import usage_frame
from benchmarks.pgcluster import postgres
from llmspend.store import arrowio
from llmspend.tracker import Tracker, set_tracker

QUERY = (
    "SELECT id, ts, request_id, provider, api, model, requested_model, org_name, "
    "project_name, user_name, input_tokens, cached_input_tokens, cache_write_tokens, "
    "output_tokens, reasoning_tokens, cost_nanos, estimate_nanos, price_status, price_ref, "
    "status, error_type, latency_ms, streamed, usage_estimated, tags, session_id, "
    "notebook_path, service_tier FROM llmspend_usage ORDER BY ts, id"
)


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """The best wall time and the best CPU time of this process (seconds): on a shared
    machine the CPU time is the steadier figure (connectorx's threads count in it; the
    database server's work does not)."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def parallel_readers(store: str, url: str, repeat: int) -> None:
    """The raw read (every column, no order) by one reader and by two on halves of the id
    range: wall and this process's CPU (on PostgreSQL the server's work is not in it)."""
    select = QUERY.removesuffix(" ORDER BY ts, id")
    if store == "sqlite":
        path = url.removeprefix("sqlite:///")

        def fetch(lo: int, hi: int) -> None:
            conn = sqlite3.connect(path, check_same_thread=False)
            try:
                cur = conn.execute(f"{select} WHERE id >= ? AND id < ?", (lo, hi))
                while cur.fetchmany(1 << 16):
                    pass
            finally:
                conn.close()

        with contextlib.closing(sqlite3.connect(path)) as conn:
            lo, hi = conn.execute("SELECT min(id), max(id) + 1 FROM llmspend_usage").fetchone()
        mid = (lo + hi) // 2

        def two() -> None:
            threads = [threading.Thread(target=fetch, args=r) for r in ((lo, mid), (mid, hi))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        cases: dict[str, Callable[[], Any]] = {
            "sqlite3 fetch, 1 thread": lambda: fetch(lo, hi),
            "sqlite3 fetch, 2 threads": two,
        }
    else:
        if not arrowio.have_connectorx():
            return
        import connectorx as cx

        cx_url = url.replace("+psycopg", "", 1)
        cases = {
            "connectorx, 1 connection": lambda: cx.read_sql(cx_url, select, return_type="arrow"),
            "connectorx, partition_on=id, 2": lambda: cx.read_sql(
                cx_url, select, return_type="arrow", partition_on="id", partition_num=2
            ),
        }
    for name, fn in cases.items():
        took, cpu = best(fn, repeat)
        print(f"{store:8} {name:42} {took:7.2f} s  cpu {cpu:6.2f} s")


def uncopied(by_copy: bool = False, **kw: Any) -> Callable[[], Any]:
    """records(**kw) without the columnar copy (and, with ``by_copy``, without connectorx:
    PostgreSQL's COPY fallback)."""

    def read() -> Any:
        real = arrowio.have_connectorx
        os.environ["LLMSPEND_RECORDS_CACHE"] = "0"
        if by_copy:
            arrowio.have_connectorx = lambda: False
        try:
            return llmspend.records(**kw)
        finally:
            del os.environ["LLMSPEND_RECORDS_CACHE"]
            arrowio.have_connectorx = real

    return read


def run(store: str, url: str, rows: int, repeat: int, parallel: bool = False) -> None:
    import pandas as pd

    tracker = Tracker(url)
    tracker.ingest_hooks = []  # records() reads raw rows only: load without the rollups
    set_tracker(tracker)
    frame = usage_frame(rows)
    tags = [{"team": ("red", "blue")[i % 2]} if i % 7 == 0 else None for i in range(rows)]
    frame["tags"] = tags
    t0 = time.perf_counter()
    llmspend.ingest(frame)
    print(f"{store}: loaded {rows:,} rows in {time.perf_counter() - t0:.1f} s")
    engine = tracker.store.engine
    base = best(lambda: pd.read_sql(QUERY, engine), repeat)
    print(f"{store:8} {'pandas.read_sql (baseline)':42} {base[0]:7.2f} s  cpu {base[1]:6.2f} s")
    first = best(lambda: llmspend.records(), 1)
    print(
        f"{store:8} {'records(), first: writes the copy':42} {first[0]:7.2f} s  "
        f"cpu {first[1]:6.2f} s   x{base[0] / first[0]:5.1f} vs baseline"
    )
    cases = {
        "records()": lambda: llmspend.records(),
        "records(as_='arrow')": lambda: llmspend.records(as_="arrow"),
        "records(as_='pandas-arrow')": lambda: llmspend.records(as_="pandas-arrow"),
        "records(columns=[ts, model, cost_usd])": lambda: llmspend.records(
            columns=["ts", "model", "cost_usd"]
        ),
        "records(org='org1')": lambda: llmspend.records(org="org1"),
        "records() without the copy": uncopied(),
        "records(as_='arrow') without the copy": uncopied(as_="arrow"),
        "records(columns=[3]) without the copy": uncopied(columns=["ts", "model", "cost_usd"]),
    }
    if store != "sqlite" and arrowio.have_connectorx():
        cases["records() without the copy, by COPY"] = uncopied(by_copy=True)
        cases["records(as_='arrow') without, by COPY"] = uncopied(by_copy=True, as_="arrow")
    for name, fn in cases.items():
        took, cpu = best(fn, repeat)
        print(
            f"{store:8} {name:42} {took:7.2f} s  cpu {cpu:6.2f} s"
            f"   x{base[0] / took:5.1f} vs baseline"
        )
    whole = best(cases["records()"], 1)[0]
    verdict = "MET" if whole <= 1.5 * rows / 1_000_000 else "NOT MET"
    print(f"{store:8} target <= 1.5 s per 1M rows: {verdict}")
    df = llmspend.records(columns=["cost_usd"])
    with engine.connect() as conn:
        nanos = conn.exec_driver_sql("SELECT sum(cost_nanos) FROM llmspend_usage").scalar()
    exact = sum((c for c in df["cost_usd"] if c is not None), start=0) * 10**9 == nanos
    print(f"{store:8} sum of cost_usd equals the stored nanodollars: {exact}")
    if parallel:
        parallel_readers(store, url, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--parallel", action="store_true", help="time one reader against two")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = f"{tmp}/cache"  # the columnar copy: not the user's
        run("sqlite", f"sqlite:///{tmp}/records.sqlite", args.rows, args.repeat, args.parallel)
        if args.no_pg:
            return
        with postgres(args.pg_url) as (url, note):
            if url is None:
                print(f"postgres skipped: {note}")
                return
            run("postgres", url, args.rows, args.repeat, args.parallel)


if __name__ == "__main__":
    main()
