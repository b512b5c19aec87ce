"""Budget reservations from 8 processes against one hard budget (SQLite and PostgreSQL).

Each process runs the real pipeline stage — the budget lookup and the reservation
(conditional UPDATE on every applicable budget and the hold rows, in one transaction)
and, in the second run, the settle-and-record transaction too — as fast as it can until
the budget refuses. Prints reservations/s, the baseline measured in the same run (one
bare conditional UPDATE per transaction straight on the driver, the floor from
notes/performance.md) and the final spent vs limit (overspend must be 0). Targets
(DESIGN §10): SQLite >= 5,000/s, PostgreSQL >= 1,000/s, zero overspend.

    python benchmarks/reservations.py [--procs 8] [--calls 16000] [--pg-url URL | --no-pg]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from decimal import Decimal
from typing import Any

from pgcluster import postgres  # benchmarks/pgcluster.py (run as a script)

PER_CALL = 1000  # input tokens; 0 output: gpt-4o-mini input = $0.00015 per call


def _worker(url: str, start: float, cycle: bool, out: mp.Queue) -> None:
    import llmspend
    from llmspend.call import Usage
    from llmspend.errors import BudgetExceeded
    from llmspend.pipeline import begin_call

    tracker = llmspend.install(url, org="bench", project="p", user="u")
    # Load the price data before the clock starts (a kernel has it from its first call).
    tracker.pricebook.worst_case_nanos("openai", "gpt-4o-mini", 1, 1, time.time())
    n = 0
    while time.time() < start:
        time.sleep(0.0005)
    t0 = last = time.perf_counter()
    while True:
        try:
            call = begin_call(
                "openai",
                "chat.completions",
                "gpt-4o-mini",
                input_tokens=PER_CALL,
                max_output_tokens=0,
            )
        except BudgetExceeded:
            break
        assert call is not None
        if cycle:
            call.finish(Usage(input_tokens=PER_CALL))
        else:
            call.reservation = None  # keep the hold: measure reservations only
        n += 1
        last = time.perf_counter()
    # Up to the last reservation granted: the final refusal is not one (with the holds of
    # reserve-only runs never settling, it waits for them before it is made).
    out.put((n, last - t0))


def _baseline_worker(url: str, start: float, limit: int, out: mp.Queue) -> None:
    """The floor: one bare conditional UPDATE per transaction, straight on the driver
    (SQLite: WAL, synchronous=NORMAL, BEGIN IMMEDIATE, as llmspend's store)."""
    sql = "UPDATE bench SET spent = spent + 150000 WHERE id = 1 AND spent + 150000 <= {}"
    if url.startswith("sqlite"):
        import sqlite3

        conn: Any = sqlite3.connect(url.split("///", 1)[1], timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous = NORMAL")
        stmt = sql.format("?")

        def once() -> bool:
            conn.execute("BEGIN IMMEDIATE")
            granted = conn.execute(stmt, (limit,)).rowcount == 1
            conn.execute("COMMIT")
            return granted
    else:
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        stmt = sql.format("%s")

        def once() -> bool:
            granted = conn.execute(stmt, (limit,)).rowcount == 1
            conn.commit()
            return granted

    n = 0
    while time.time() < start:
        time.sleep(0.0005)
    t0 = time.perf_counter()
    while once():
        n += 1
    out.put((n, time.perf_counter() - t0))
    conn.close()


def _run(target, args_for, procs: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    start = time.time() + 3
    ps = [ctx.Process(target=target, args=(*args_for(start), q)) for _ in range(procs)]
    for p in ps:
        p.start()
    results = [q.get(timeout=600) for _ in ps]
    for p in ps:
        p.join()
    total = sum(n for n, _ in results)
    elapsed = max(t for _, t in results)
    return total, total / elapsed


def bench(url: str, label: str, procs: int, calls: int) -> None:
    from sqlalchemy import create_engine

    import llmspend

    one = llmspend.price("gpt-4o-mini", input_tokens=PER_CALL).total_usd
    assert one is not None
    limit = one * calls
    # baseline: one bare conditional UPDATE per transaction
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with eng.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bench")
        conn.exec_driver_sql("CREATE TABLE bench (id INTEGER PRIMARY KEY, spent BIGINT)")
        conn.exec_driver_sql("INSERT INTO bench VALUES (1, 0)")
    if eng.dialect.name == "sqlite":  # (the journal mode cannot change inside a transaction)
        with eng.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        assert mode == "wal", mode
    limit_nanos = int(limit * 10**9)
    n_base, rate_base = _run(_baseline_worker, lambda s: (url, s, limit_nanos), procs)
    with eng.connect() as conn:
        spent_base = conn.exec_driver_sql("SELECT spent FROM bench").scalar()
    eng.dispose()
    for cycle in (False, True):
        llmspend.install(url, org="bench", project="p", user="u")
        llmspend.set_budget("project", "bench/p", limit, "total")
        n, rate = _run(_worker, lambda s, cycle=cycle: (url, s, cycle), procs)
        (st,) = llmspend.budget_status("project", "bench/p")
        used = st.spent_usd + st.reserved_usd
        over = max(used - st.limit_usd, Decimal(0))
        what = "reserve+settle+record" if cycle else "reserve"
        print(
            f"{label:8} {what:22} {procs} procs: {rate:>8,.0f}/s  ({rate / rate_base:.2f}x the "
            f"baseline; {n} granted, limit {calls}); spent+reserved ${used} of "
            f"${st.limit_usd}; overspend ${over}",
            flush=True,
        )
        llmspend.delete_budget("project", "bench/p")
        llmspend.uninstall()
    base = "baseline bare UPDATE"
    print(
        f"{label:8} {base:22} {procs} procs: {rate_base:>8,.0f}/s  ({n_base} granted; "
        f"spent {spent_base} of {limit_nanos} nanodollars)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--calls", type=int, default=16000, help="the budget allows this many calls")
    ap.add_argument("--pg-url", default=None, help="default: a throwaway cluster")
    ap.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench(f"sqlite:///{tmp}/bench.sqlite", "sqlite", args.procs, args.calls)
    if not args.no_pg:
        with postgres(args.pg_url) as (url, note):
            if url is None:
                print(f"postgres: not measured ({note})")
            else:
                bench(url, "postgres", args.procs, args.calls)
    print("targets: SQLite >= 5,000/s, PostgreSQL >= 1,000/s, overspend $0")


if __name__ == "__main__":
    main()
