"""Analytics at scale: every ``llmspend.analytics`` function on 1,000,000 usage rows.

Generates realistic history (90 days, 3 orgs, 10 projects, ~50 users each in one org
and one to three of its projects, 20 models with per-user favourites, working-hours and
weekday rhythm, log-normal token counts, a few errors, refusals and unpriced calls) and
loads it through ``llmspend.ingest`` (which maintains the rollups), sets a few budgets,
then times each function (median of ``--repeat`` runs after a warm-up) and prints the
time next to a baseline measured in the same run: a plain SQL ``GROUP BY model`` over the
raw usage table (what analytics would cost without rollups). Targets (DESIGN §10): each
query <= 100 ms at 1M rows (<= 200 ms at 10M), ``dashboard_data()`` <= 300 ms.

    python benchmarks/analytics.py                       # SQLite, 1M rows, temp file
    python benchmarks/analytics.py --rows 10000000
    python benchmarks/analytics.py --pg-url postgresql://postgres@127.0.0.1:5432/bench
    python benchmarks/analytics.py --db /tmp/bench.sqlite --reuse   # skip loading
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llmspend
from llmspend import analytics
from llmspend.timeutil import utcnow
from llmspend.tracker import Tracker, set_tracker

MODELS = [  # (provider, model, api, weight)
    ("openai", "gpt-4o-mini", "chat.completions", 30),
    ("openai", "gpt-4o", "chat.completions", 12),
    ("openai", "gpt-4.1", "responses", 6),
    ("openai", "gpt-4.1-mini", "responses", 10),
    ("openai", "gpt-4.1-nano", "responses", 4),
    ("openai", "o3", "responses", 2),
    ("openai", "o4-mini", "responses", 5),
    ("openai", "gpt-5", "responses", 3),
    ("openai", "gpt-5-mini", "responses", 6),
    ("openai", "text-embedding-3-small", "embeddings", 8),
    ("azure", "gpt-4o", "chat.completions", 5),
    ("azure", "gpt-4o-mini", "chat.completions", 6),
    ("google", "gemini-2.5-flash", "generate_content", 14),
    ("google", "gemini-2.5-pro", "generate_content", 5),
    ("google", "gemini-2.5-flash-lite", "generate_content", 6),
    ("google", "gemini-2.0-flash", "generate_content", 4),
    ("xai", "grok-3-mini", "chat.completions", 3),
    ("xai", "grok-3", "chat.completions", 1),
    ("openrouter", "anthropic/claude-sonnet-4", "chat.completions", 2),
    ("openai-compatible", "llama-house-70b", "chat.completions", 2),  # unpriced
]
HOUR_WEIGHT = [1, 1, 1, 1, 1, 2, 3, 6, 10, 12, 12, 11, 9, 11, 12, 12, 11, 9, 6, 4, 3, 2, 2, 1]


def people(rnd: random.Random) -> list[dict[str, Any]]:
    """~50 users in 3 orgs, each on 1-3 of the org's projects, with favourite models."""
    orgs = {"acme": ["churn", "search", "support", "ads"], "globex": ["risk", "ops", "lab"],
            "initech": ["tps", "billing", "infra"]}  # fmt: skip
    users = []
    for i in range(50):
        org = ("acme", "globex", "initech")[0 if i < 22 else 1 if i < 38 else 2]
        favs = rnd.sample(range(len(MODELS)), rnd.randint(2, 5))
        users.append({
            "org": org, "user": f"user{i:02d}",
            "projects": rnd.sample(orgs[org], rnd.randint(1, 3)),
            "models": favs, "model_w": [MODELS[m][3] * rnd.random() + 0.1 for m in favs],
            "weight": 1 / (i + 3),  # a few heavy users, a long tail
        })  # fmt: skip
    return users


def generate(n: int, end: dt.datetime, days: int = 90, seed: int = 1) -> Iterator[list[dict]]:
    """``n`` rows over ``days`` ending at ``end``, in time order, in batches of 100,000."""
    rnd = random.Random(seed)
    users = people(rnd)
    user_w = [u["weight"] for u in users]
    start = end - dt.timedelta(days=days)
    day_w = [(0.35 if (start + dt.timedelta(days=d)).weekday() >= 5 else 1.0) for d in range(days)]
    day_of = rnd.choices(range(days), day_w, k=n)
    hour_of = rnd.choices(range(24), HOUR_WEIGHT, k=n)
    # Calls are recorded as they happen: the rows arrive in time order.
    offsets = sorted(
        d * 86400 + h * 3600 + rnd.random() * 3600 for d, h in zip(day_of, hour_of, strict=True)
    )
    del day_of, hour_of
    batch: list[dict] = []
    for offset in offsets:
        u = rnd.choices(users, user_w)[0]
        m = MODELS[rnd.choices(u["models"], u["model_w"])[0]]
        ts = min(start + dt.timedelta(seconds=offset), end - dt.timedelta(microseconds=1))
        embed = m[2] == "embeddings"
        inp = max(1, int(rnd.lognormvariate(7.0, 1.1)))
        out = 0 if embed else max(1, int(rnd.lognormvariate(5.5, 1.0)))
        r = rnd.random()
        status = (
            "ok" if r < 0.975 else "error" if r < 0.99 else "refused" if r < 0.995 else "partial"
        )
        refused = status == "refused"
        row = {
            "ts": ts, "provider": m[0], "api": m[2], "model": m[1], "org": u["org"],
            "project": rnd.choice(u["projects"]), "user": u["user"],
            "input_tokens": 0 if refused else inp,
            "cached_input_tokens": 0 if refused or rnd.random() < 0.7 else inp // 3,
            "output_tokens": 0 if refused else out,
            "reasoning_tokens": out // 2 if m[1] in ("o3", "o4-mini", "gpt-5") and not refused
            else 0,
            "status": status, "latency_ms": float(int(200 + out * 8 * rnd.random())),
        }  # fmt: skip
        batch.append(row)
        if len(batch) == 100_000:
            yield batch
            batch = []
    if batch:
        yield batch


def load(tracker: Tracker, rows: int) -> float:
    t0 = time.perf_counter()
    done = 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unpriced model warns once
        for batch in generate(rows, utcnow()):
            done += llmspend.ingest(batch)
            print(f"\r  ingested {done:,} rows", end="", flush=True)
    seconds = time.perf_counter() - t0
    print(f"\r  ingested {done:,} rows in {seconds:.1f} s ({done / seconds:,.0f} rows/s)")
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


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up: caches, compiled statements
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


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
         lambda: analytics.spending_trends("week", a, b, org="acme"), 100),
        ("cost_breakdown() by model", lambda: analytics.cost_breakdown(), 100),
        ("cost_breakdown(org+project, '30d')",
         lambda: analytics.cost_breakdown(["org", "project"], since="30d"), 100),
        ("cost_breakdown(user, unaligned, filters)",
         lambda: analytics.cost_breakdown("user", a, b, org="acme", model=["gpt-4o", "o3"]), 100),
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
        ("cost_breakdown('api', '7d') [raw rows]",
         lambda: analytics.cost_breakdown("api", since="7d"), None),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=None, help="PostgreSQL URL (an empty database)")
    parser.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="use the data already there")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-per-call", action="store_true")
    args = parser.parse_args()
    if not args.skip_per_call:
        with_us, without_us = per_call_overhead()
        print(
            f"per call (SQLite, full pipeline): {with_us:.0f} µs with rollups, {without_us:.0f} µs "
            f"without: +{with_us - without_us:.0f} µs"
        )
    if args.pg_url:
        url = args.pg_url
    else:
        path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "bench.sqlite"
        url = f"sqlite:///{path}"
    tracker = Tracker(url, org="acme", project="churn", user="user00")
    set_tracker(tracker)
    print(f"store: {tracker.store}")
    if not args.reuse:
        load(tracker, args.rows)
        llmspend.set_budget("org", "acme", "5000", "month")
        llmspend.set_budget("project", "acme/churn", "800", "month", mode="soft")
        llmspend.set_budget("project", "globex/*", "500", "month")
        llmspend.set_budget("user", "acme/user01", "40", "day", mode="soft")
        llmspend.set_budget("user", "initech/*", "300", "week")
    with tracker.store.begin() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM llmspend_usage").scalar()
        hourly = conn.exec_driver_sql("SELECT count(*) FROM llmspend_rollup_hourly").scalar()
        daily = conn.exec_driver_sql("SELECT count(*) FROM llmspend_rollup_daily").scalar()
        if tracker.store.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE")
    print(f"  {n:,} usage rows; rollups: {hourly:,} hourly, {daily:,} daily rows")
    base = median_ms(baseline(tracker), args.repeat)
    print(f"baseline: plain GROUP BY model over the raw table: {base:,.1f} ms\n")
    now = utcnow()
    print(f"{'function':<44}{'ms':>9}{'x baseline':>12}{'target':>9}")
    worst = True
    for label, fn, target in cases(now):
        ms = median_ms(fn, args.repeat)
        if target is None:
            verdict = "-"
        else:
            ok = ms <= (target if n <= 2_000_000 else 2 * target)
            worst &= ok
            verdict = "ok" if ok else "SLOW"
        print(f"{label:<44}{ms:>9.1f}{ms / base:>12.3f}{verdict:>9}")
    print("\nall within target" if worst else "\nsome functions above target")
    t0 = time.perf_counter()
    counts = analytics.rebuild_rollups()
    print(f"rebuild_rollups(): {counts} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
