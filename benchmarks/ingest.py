"""Bulk ingest throughput on SQLite (and PostgreSQL when --pg-url is given).

Prints rows/s for ``llmspend.ingest`` (validation, pricing at each row's time, hierarchy
rows, batched insert in one transaction) next to a baseline measured in the same run: a
raw ``sqlite3`` executemany of the same rows, already validated (the floor). Target
(DESIGN §10): >= 50,000 rows/s.

    python benchmarks/ingest.py [--rows 200000] [--pg-url postgresql://...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import llmspend
from llmspend.tracker import Tracker, set_tracker
from llmspend.usage import _INSERT_COLUMNS

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("google", "gemini-2.5-flash"),
    ("openai", "o3-mini"),
]


def make_rows(n: int) -> list[dict]:
    rnd = random.Random(1)
    start = dt.datetime(2026, 1, 1)
    rows = []
    for i in range(n):
        provider, model = MODELS[i % len(MODELS)]
        inp = rnd.randint(50, 5000)
        out = rnd.randint(10, 1500)
        rows.append(
            {
                "ts": start + dt.timedelta(seconds=i * 7),
                "provider": provider,
                "api": "chat.completions",
                "model": model,
                "org": f"org{i % 3}",
                "project": f"p{i % 10}",
                "user": f"u{i % 50}",
                "input_tokens": inp,
                "cached_input_tokens": inp // 4,
                "output_tokens": out,
                "latency_ms": 300.0 + i % 700,
            }
        )
    return rows


def bench_llmspend(url: str, rows: list[dict]) -> float:
    tracker = Tracker(url)
    set_tracker(tracker)
    t0 = time.perf_counter()
    llmspend.ingest(rows)
    return len(rows) / (time.perf_counter() - t0)


def bench_raw_sqlite(path: Path, rows: list[dict]) -> float:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    cols = ", ".join(_INSERT_COLUMNS)
    con.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {cols})")
    con.execute("CREATE INDEX t_ts ON t(ts)")
    params = [
        tuple(str(r.get(c)) if c == "ts" else r.get(c) for c in _INSERT_COLUMNS) for r in rows
    ]
    marks = ", ".join("?" * len(_INSERT_COLUMNS))
    t0 = time.perf_counter()
    with con:
        con.executemany(f"INSERT INTO t ({cols}) VALUES ({marks})", params)
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg-url", default=None)
    args = ap.parse_args()
    rows = make_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        base = bench_raw_sqlite(Path(tmp) / "raw.sqlite", rows)
        ours = bench_llmspend(f"sqlite:///{tmp}/llmspend.sqlite", rows)
        print(f"sqlite  raw executemany (pre-validated floor): {base:>10,.0f} rows/s")
        print(f"sqlite  llmspend.ingest (validate+price+write): {ours:>10,.0f} rows/s")
        print(
            f"sqlite  ratio llmspend/floor: {ours / base:.2f}   target >= 50,000 rows/s: "
            f"{'MET' if ours >= 50_000 else 'NOT MET'}"
        )
    if args.pg_url:
        ours = bench_llmspend(args.pg_url, rows)
        print(f"postgres llmspend.ingest: {ours:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
