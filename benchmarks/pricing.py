"""Microseconds per priced call through the public API, against baselines measured in the
same run, and the first ``llmspend.price()`` of a fresh process.

Per call (after a model's first call): ``llmspend.price`` (the public API, no store),
the same reading ``.total_usd`` (the Decimals are made when first read), the tracker's
integer fast path ``price_nanos``; baselines: ``genai_prices.calc_price`` and a floor of
one dict look-up (what any cached price costs at least). The first call is timed in fresh
subprocesses (median of a few): ``import llmspend`` (timed on its own), then the first
price, once with genai-prices' table cached on disk (the usual case: every process after
the first) and once with an empty cache directory (the full path: genai-prices' data
imported and validated, then the table saved).

Per-call figures are CPU time of the measuring thread (``time.thread_time``), so they hold
on a machine other work shares; the first call is shown as wall and CPU time.

Run: ``.venv/bin/python benchmarks/pricing.py``
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from genai_prices import Usage, calc_price

import llmspend
from llmspend.pricing import default_pricebook

MODELS = [  # (llmspend provider, model, genai-prices provider id)
    ("openai", "gpt-4o-mini", "openai"),
    ("openai", "o3", "openai"),
    ("google", "gemini-2.5-pro", "google"),
    ("xai", "grok-3", "x-ai"),
    ("deepseek", "deepseek-chat", "deepseek"),
]
USAGE = (250_000, 50_000, 0, 4_000, 1_500)  # input, cached, cache write, output, reasoning
AT = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
FIRST_CALL = """
import time
t, c = time.perf_counter(), time.process_time()
import llmspend
t1, c1 = time.perf_counter(), time.process_time()
llmspend.price("gpt-4o", input_tokens=1, output_tokens=1)
t2, c2 = time.perf_counter(), time.process_time()
print((t2 - t1) * 1e3, (c2 - c1) * 1e3, (t1 - t) * 1e3, (c1 - c) * 1e3)
"""


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """CPU µs per call of this thread (best of 7): steady on a machine others load too."""
    fn()  # the first call builds caches; it is not what we measure
    timer = timeit.Timer(fn, timer=time.thread_time)
    return min(timer.repeat(number=number, repeat=7)) / number * 1e6


def first_call_ms(runs: int = 5, cold: bool = False) -> tuple[float, float, float, float]:
    """The median first ``llmspend.price()`` after ``import llmspend`` in fresh processes:
    wall-clock and CPU milliseconds, then the same for ``import llmspend``. ``cold``: each
    process with an empty cache directory (no table of genai-prices' data on disk)."""
    rows = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as empty:
            env = {**os.environ, "XDG_CACHE_HOME": empty} if cold else None
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True,
                                 text=True, check=True, env=env)  # fmt: skip
        rows.append([float(x) for x in out.stdout.split()])
    return tuple(statistics.median(col) for col in zip(*rows, strict=True))


def main() -> None:
    book = default_pricebook()
    epoch = AT.timestamp()
    i, c, w, o, r = USAGE
    usage = Usage(
        input_tokens=i,
        cache_read_tokens=c,
        cache_write_tokens=w,
        output_tokens=o,
        output_reasoning_tokens=r,
    )
    cache = {(p, m): (1, "priced", None) for p, m, _ in MODELS}
    print(f"usage: {USAGE} (input, cached, cache write, output, reasoning); µs per call")
    head = (
        f"{'model':<16}{'price()':>9}{'at=':>9}{'+total':>9}{'nanos':>9}{'genai':>9}"
        f"{'floor':>9}{'vs genai':>10}"
    )
    print(head)
    for provider, model, gp in MODELS:
        now = partial(
            llmspend.price, model, provider=provider, input_tokens=i, cached_input_tokens=c,
            output_tokens=o, reasoning_tokens=r,
        )  # fmt: skip
        public = per_call_us(now, 20_000)
        at = per_call_us(partial(now, at=AT), 20_000)

        def with_total(now: Callable[[], Any] = now) -> object:
            return now().total_usd

        total = per_call_us(with_total, 20_000)
        fast = per_call_us(partial(book.price_nanos, provider, model, i, c, w, o, r, epoch), 50_000)
        genai = per_call_us(
            partial(calc_price, usage, model, provider_id=gp, genai_request_timestamp=AT), 2_000
        )
        floor = per_call_us(partial(cache.get, (provider, model)), 200_000)
        line = (
            f"{model:<16}{public:>9.2f}{at:>9.2f}{total:>9.2f}{fast:>9.2f}{genai:>9.1f}{floor:>9.3f}"
            f"{genai / public:>9.0f}x"
        )
        print(line)
    print("price() = llmspend.price (public API, no store), priced now; at= the same as of a")
    print("datetime; +total = price() and reading .total_usd;")
    print("nanos = PriceBook.price_nanos (the tracker's path); genai = genai_prices.calc_price;")
    print("floor = one dict look-up; vs genai = genai / price()")
    first_call_ms(1)  # the table of genai-prices' data saved, if it was not yet
    for label, cold in (("table cached on disk", False), ("empty cache, full path", True)):
        wall, cpu, iwall, icpu = first_call_ms(cold=cold)
        print(f"first llmspend.price() after import llmspend ({label}): {wall:.0f} ms wall, "
              f"{cpu:.0f} ms CPU; import llmspend {iwall:.0f} ms wall, {icpu:.0f} ms CPU "
              "(median of 5 fresh processes)")  # fmt: skip


if __name__ == "__main__":
    main()
