"""Analytics at scale: every ``llmspend.analytics`` function, 100k to 10M rows, SQLite and
PostgreSQL, next to a baseline measured in the same run.

Data comes from ``benchmarks/_data.py`` (realistic, high-cardinality by default: 3 orgs,
15 projects, 60 users on one to three projects each, 12 models over 3 providers used by
everyone, 120 days with business-hour and weekday peaks, caching on a third of chat calls,
costs given), loaded through ``llmspend.ingest`` (which maintains every rollup as the write
path does). SQLite files are generated once into ``--data-dir`` and reused; PostgreSQL is
loaded into a throwaway cluster (``benchmarks/pgcluster.py``) or ``--pg-url`` (a database
there that already holds rows is timed again, not loaded). The
cardinalities found in the store are printed with each table.

Each function's time is the median of ``--repeat`` runs after a warm-up, wall clock, and
the CPU time of this process beside it (the whole query on SQLite; on a shared machine the
wall clock also counts waiting for a core). The baseline is a plain
``SELECT model, count(*), sum(...) FROM llmspend_usage GROUP BY model`` over the raw table.
Targets (issue 23): each function <= 100 ms at up to 2M rows and <= 200 ms at 10M,
``dashboard_data()`` <= 300 ms.

    python benchmarks/analytics.py                                   # SQLite, 100k and 1M
    python benchmarks/analytics.py --rows 100000,1000000,10000000 --stores sqlite,postgres
    python benchmarks/analytics.py --rows 1000000 --stores postgres --pg-url postgresql://...
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llmspend
from llmspend import analytics
from llmspend.timeutil import utcnow
from llmspend.tracker import Tracker, set_tracker


def load(tracker: Tracker, rows: int, card: dict[str, int]) -> float:
    """Generate ``rows`` rows (benchmarks/_data.py) into ``tracker`` through ingest."""
    import warnings

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._data import _usd, usage_columns

    days = card["days"]
    start = (utcnow() - dt.timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    cols = usage_columns(rows, start=start, **card)
    nanos = cols.pop("cost_nanos")
    cols["ts"] = cols["ts"].astype(dt.datetime)
    keys = [*cols, "cost_usd"]
    done = 0
    step = 200_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(0, rows, step):
            lists = [cols[k][i : i + step].tolist() for k in keys[:-1]]
            lists.append(_usd(nanos[i : i + step]))
            done += tracker.ingest(
                [dict(zip(keys, v, strict=True)) for v in zip(*lists, strict=True)]
            )
            print(f"\r  ingested {done:,} rows", end="", flush=True)
    seconds = time.perf_counter() - t0
    print(f"\r  generated and ingested {done:,} rows in {seconds:.1f} s")
    return seconds


def bulk_load(tracker: Tracker, rows: int, card: dict[str, int]) -> float:
    """SQLite only, for 10M rows: the same generated rows inserted straight into the usage
    table, then ``rebuild_rollups()`` (which gives the tables the write path keeps; a test
    checks this: tests/test_analytics_exact.py)."""
    import sqlite3

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._data import usage_columns

    path = tracker.store.engine.url.database
    assert path, "bulk loading needs a SQLite file"
    days = card["days"]
    start = (utcnow() - dt.timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    t0 = time.perf_counter()
    step = 1_000_000
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous = OFF")
    sql = (
        "INSERT INTO llmspend_usage (ts, provider, api, model, org_name, project_name, "
        "user_name, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
        "reasoning_tokens, cost_nanos, price_status, status, latency_ms, streamed, "
        "usage_estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, 'imported', ?, ?, 0, 0)"
    )
    # One generation (one set of people and time order), inserted in slices.
    cols = usage_columns(rows, start=start, **card)
    ts = cols["ts"].astype("datetime64[us]").astype(str)
    for i in range(0, rows, step):
        sl = slice(i, i + step)
        stamps = [t.replace("T", " ") for t in ts[sl].tolist()]
        stamps = [t if len(t) == 26 else t + ".000000"[: 26 - len(t)] for t in stamps]
        parts = [stamps] + [
            cols[k][sl].tolist()
            for k in ("provider", "api", "model", "org", "project", "user", "input_tokens",
                      "cached_input_tokens", "output_tokens", "reasoning_tokens", "cost_nanos",
                      "status", "latency_ms")
        ]  # fmt: skip
        with con:
            con.executemany(sql, zip(*parts, strict=True))
        print(f"\r  inserted {min(i + step, rows):,} rows", end="", flush=True)
    con.close()
    counts = analytics.rebuild_rollups(store=tracker.store)
    seconds = time.perf_counter() - t0
    print(f"\r  bulk-loaded {rows:,} rows and rebuilt the rollups {counts} in {seconds:.1f} s")
    return seconds


def per_call_overhead(calls: int = 3000) -> tuple[float, float]:
    """Median µs of one call through the real pipeline (price, record, budgets), with and
    without the rollup hook, interleaved in rounds on a fresh SQLite store."""
    from llmspend.call import Usage
    from llmspend.pipeline import begin_call
    from llmspend.store.rollups import record_hook

    tracker = Tracker(f"sqlite:///{Path(tempfile.mkdtemp()) / 'calls.sqlite'}")
    old = set_tracker(tracker, installed=True)
    samples: dict[bool, list[float]] = {True: [], False: []}
    try:
        for rnd in range(10):
            with_hook = rnd % 2 == 0
            if not with_hook:
                tracker.in_record_hooks.remove(record_hook)
            for _ in range(calls // 10):
                t0 = time.perf_counter()
                call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1200,
                                  max_output_tokens=400)  # fmt: skip
                assert call is not None
                call.finish(Usage(1200, 512, 0, 350, 0))
                samples[with_hook].append((time.perf_counter() - t0) * 1e6)
            if not with_hook:
                tracker.in_record_hooks.append(record_hook)
    finally:
        set_tracker(old, installed=False)
    return statistics.median(samples[True]), statistics.median(samples[False])


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this process) after one warm-up run."""
    fn()  # warm-up: caches, compiled statements
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def baseline(tracker: Tracker) -> Callable[[], Any]:
    def run() -> Any:
        with tracker.store.begin() as conn:
            return conn.exec_driver_sql(
                "SELECT model, count(*), sum(cost_nanos), sum(input_tokens), sum(output_tokens) "
                "FROM llmspend_usage GROUP BY model"
            ).all()

    return run


def cases(now: dt.datetime) -> list[tuple[str, Callable[[], Any], float | None]]:
    """(label, call, target ms or None: a raw-row fallback, shown for information)."""
    a = now - dt.timedelta(days=61, hours=7, minutes=13, seconds=5)
    b = now - dt.timedelta(days=3, hours=2, minutes=41)
    ny = "America/New_York"
    return [
        ("spending_trends() day, all time", lambda: analytics.spending_trends(), 100),
        ("spending_trends('hour', since='7d')",
         lambda: analytics.spending_trends("hour", since="7d"), 100),
        ("spending_trends(tz=New_York, by=model)",
         lambda: analytics.spending_trends(tz=ny, by="model"), 100),
        ("spending_trends(tz=Kolkata) (+5:30)",
         lambda: analytics.spending_trends(tz="Asia/Kolkata"), 100),
        ("spending_trends('week', unaligned, org)",
         lambda: analytics.spending_trends("week", a, b, org="org0"), 100),
        ("cost_breakdown() by model", lambda: analytics.cost_breakdown(), 100),
        ("cost_breakdown(org+project, '30d')",
         lambda: analytics.cost_breakdown(["org", "project"], since="30d"), 100),
        ("cost_breakdown(user, unaligned, filters)",
         lambda: analytics.cost_breakdown("user", a, b, org="org0", model=["gpt-4o", "o4-mini"]),
         100),
        ("usage_comparison('7d')", lambda: analytics.usage_comparison(), 100),
        ("usage_comparison('30d', by=user)",
         lambda: analytics.usage_comparison("30d", by="user"), 100),
        ("realtime_metrics('15m')", lambda: analytics.realtime_metrics(), 100),
        ("usage_report() all time", lambda: analytics.usage_report(), 100),
        ("aggregated_spending('project')", lambda: analytics.aggregated_spending(), 100),
        ("budget_utilization()", lambda: analytics.budget_utilization(), 100),
        ("budget_recommendations()", lambda: analytics.budget_recommendations(), 100),
        ("alerts_summary()", lambda: analytics.alerts_summary(), 100),
        ("dashboard_data()", lambda: analytics.dashboard_data(), 300),
        ("cost_breakdown('api', '7d')",
         lambda: analytics.cost_breakdown("api", since="7d"), 100),
        ("cost_breakdown(['model', 'service_tier'])",
         lambda: analytics.cost_breakdown(["model", "service_tier"]), 100),
        ("cost_breakdown(['user', 'api'], '7d') [raw rows]",
         lambda: analytics.cost_breakdown(["user", "api"], since="7d"), None),
    ]  # fmt: skip


def cardinalities(tracker: Tracker) -> str:
    with tracker.store.begin() as conn:
        q = conn.exec_driver_sql
        n = q("SELECT count(*) FROM llmspend_usage").scalar()
        orgs = q("SELECT count(DISTINCT org_name) FROM llmspend_rollup_weekly").scalar()
        projects = q(
            "SELECT count(*) FROM (SELECT DISTINCT org_name, project_name "
            "FROM llmspend_rollup_weekly) p"
        ).scalar()
        users = q("SELECT count(DISTINCT user_name) FROM llmspend_rollup_weekly").scalar()
        models = q(
            "SELECT count(*) FROM (SELECT DISTINCT provider, model FROM llmspend_rollup_weekly) m"
        ).scalar()
        providers = q("SELECT count(DISTINCT provider) FROM llmspend_rollup_weekly").scalar()
        days = q("SELECT count(DISTINCT bucket) FROM llmspend_rollup_daily").scalar()
        combos = q(
            "SELECT count(*) FROM (SELECT DISTINCT org_name, project_name, user_name, provider, "
            "model FROM llmspend_rollup_weekly) c"
        ).scalar()
        sizes = {
            name: q(f"SELECT count(*) FROM {name}").scalar()
            for name in ("llmspend_rollup_hourly", "llmspend_rollup_daily",
                         "llmspend_rollup_weekly", "llmspend_rollup_hourly_model")
        }  # fmt: skip
    return (
        f"{n:,} rows; {orgs} orgs, {projects} projects, {users} users, {models} models / "
        f"{providers} providers, {days} days; "
        f"{combos:,} org x project x user x model combinations; "
        f"{sizes['llmspend_rollup_hourly']:,} distinct (combination, hour) = hourly rollup rows, "
        f"{sizes['llmspend_rollup_daily']:,} daily, {sizes['llmspend_rollup_weekly']:,} weekly, "
        f"{sizes['llmspend_rollup_hourly_model']:,} hourly per model"
    )


def _has_rows(url: str) -> bool:
    from llmspend.store.engine import open_store

    try:
        with open_store(url).begin() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM llmspend_usage").scalar() != 0
    except Exception:  # a new, empty database: not migrated yet
        return False


def set_budgets() -> None:
    llmspend.set_budget("org", "org0", "5000", "month")
    llmspend.set_budget("project", "org0/proj0", "800", "month", mode="soft")
    llmspend.set_budget("project", "org1/*", "500", "month")
    llmspend.set_budget("user", "org0/user0", "40", "day", mode="soft")
    llmspend.set_budget("user", "org2/*", "300", "week")


def run_one(
    url: str, rows: int, card: dict[str, int], repeat: int, reuse: bool, bulk: bool = False
) -> list[Any]:
    tracker = Tracker(url, org="org0", project="proj0", user="user0")
    set_tracker(tracker)
    print(f"\n== {tracker.store.dialect}, {rows:,} rows ({tracker.store})")
    if not reuse:
        if bulk and tracker.store.dialect == "sqlite":
            bulk_load(tracker, rows, card)
        else:
            load(tracker, rows, card)
        set_budgets()
    if tracker.store.dialect == "postgresql":
        with tracker.store.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    print(f"  {cardinalities(tracker)}")
    base, _ = median_ms(baseline(tracker), repeat)
    print(f"  baseline (plain GROUP BY model over the raw table): {base:,.1f} ms\n")
    print(f"  {'function':<44}{'ms':>9}{'cpu ms':>9}{'x base':>9}{'target':>8}")
    out = []
    for label, fn, target in cases(utcnow()):
        ms, cpu = median_ms(fn, repeat)
        if target is None:
            verdict = "-"
        else:
            limit = target if rows <= 2_000_000 or target >= 300 else 2 * target
            verdict = "ok" if ms <= limit else "SLOW"
        print(f"  {label:<44}{ms:>9.1f}{cpu:>9.1f}{ms / base:>9.3f}{verdict:>8}")
        out.append((label, ms, cpu, verdict))
    set_tracker(None)
    return [tracker.store.dialect, rows, base, out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--stores", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL (an empty database)")
    parser.add_argument("--data-dir", default="/tmp/bench-data", help="where SQLite data lives")
    parser.add_argument("--orgs", type=int, default=3)
    parser.add_argument("--projects", type=int, default=15)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--bulk-from",
        type=int,
        default=5_000_000,
        help="SQLite sizes from this many rows load in bulk (then rebuild_rollups)",
    )
    parser.add_argument("--per-call", action="store_true", help="also time the write path")
    args = parser.parse_args()
    if args.per_call:
        with_us, without_us = per_call_overhead()
        print(
            f"per call (SQLite, full pipeline): {with_us:.0f} µs with rollups, {without_us:.0f} µs "
            f"without: +{with_us - without_us:.0f} µs"
        )
    card = {k: getattr(args, k) for k in ("orgs", "projects", "users", "days")}
    sizes = [int(x) for x in args.rows.split(",")]
    stores = args.stores.split(",")
    results = []
    tag = "-".join(str(card[k]) for k in ("orgs", "projects", "users", "days"))
    if "sqlite" in stores:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
        for n in sizes:
            path = Path(args.data_dir) / f"analytics-{n}-{tag}.sqlite"
            bulk = n >= args.bulk_from
            results.append(run_one(f"sqlite:///{path}", n, card, args.repeat, path.exists(), bulk))
    if "postgres" in stores:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from benchmarks.pgcluster import postgres

        for n in sizes:
            with postgres(args.pg_url) as (url, note):
                if url is None:
                    print(f"PostgreSQL skipped: {note}")
                    break
                reuse = note == "given" and _has_rows(url)  # a loaded --pg-url: time it again
                results.append(run_one(url, n, card, args.repeat, reuse))
    print("\nscaling table (median wall ms; * = above target)\n")
    head = [f"{d} {n // 1000:,}k" if n < 1_000_000 else f"{d} {n // 1_000_000}M"
            for d, n, _, _ in results]  # fmt: skip
    print(f"{'function':<44}" + "".join(f"{h:>15}" for h in head))
    print(
        f"{'baseline: GROUP BY model, raw table':<44}" + "".join(f"{r[2]:>15.1f}" for r in results)
    )
    for i, (label, _, _) in enumerate(cases(utcnow())):
        cells = []
        for r in results:
            _, ms, _, verdict = r[3][i]
            cells.append(f"{ms:.1f}{'*' if verdict == 'SLOW' else ''}")
        print(f"{label:<44}" + "".join(f"{c:>15}" for c in cells))


if __name__ == "__main__":
    main()
