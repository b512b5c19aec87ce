"""Microseconds per priced call: llmspend's fast path and ``PriceBook.price`` against
``genai_prices.calc_price`` (and litellm's ``completion_cost`` when it is installed).

Run: ``.venv/bin/python benchmarks/pricing.py``
"""

from __future__ import annotations

import datetime as dt
import timeit
from collections.abc import Callable
from functools import partial

from genai_prices import Usage, calc_price

from llmspend.pricing import PriceBook

MODELS = [  # (llmspend provider, model, genai-prices provider id)
    ("openai", "gpt-4o-mini", "openai"),
    ("openai", "o3", "openai"),
    ("google", "gemini-2.5-pro", "google"),
    ("xai", "grok-3", "x-ai"),
    ("deepseek", "deepseek-chat", "deepseek"),
]
USAGE = (250_000, 50_000, 0, 4_000, 1_500)  # input, cached, cache write, output, reasoning
AT = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def per_call_us(fn: Callable[[], object], number: int) -> float:
    fn()  # the first call builds caches; it is not what we measure
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    book = PriceBook()
    epoch = AT.timestamp()
    i, c, w, o, r = USAGE
    usage = Usage(
        input_tokens=i,
        cache_read_tokens=c,
        cache_write_tokens=w,
        output_tokens=o,
        output_reasoning_tokens=r,
    )
    try:
        from litellm import completion_cost
    except ImportError:
        completion_cost = None
    print(f"usage: {USAGE} (input, cached, cache write, output, reasoning)")
    head = f"{'model':<18}{'fast path':>11}{'price()':>11}{'genai':>11}{'ratio':>9}"
    print(head + ("" if completion_cost is None else f"{'litellm':>11}"))
    for provider, model, gp in MODELS:
        fast = per_call_us(partial(book.price_nanos, provider, model, i, c, w, o, r, epoch), 50_000)
        full = per_call_us(
            partial(
                book.price, model, provider=provider, input_tokens=i, cached_input_tokens=c,
                output_tokens=o, reasoning_tokens=r, at=AT,
            ),
            2_000,
        )  # fmt: skip
        genai = per_call_us(
            partial(calc_price, usage, model, provider_id=gp, genai_request_timestamp=AT), 2_000
        )
        line = f"{model:<18}{fast:>9.2f}µs{full:>9.1f}µs{genai:>9.1f}µs{genai / fast:>8.0f}x"
        if completion_cost is not None:
            lite = per_call_us(
                partial(
                    completion_cost, model=model, prompt="", completion="", prompt_tokens=i,
                    completion_tokens=o,
                ),
                500,
            )  # fmt: skip
            line += f"{lite:>9.1f}µs"
        print(line)
    print("ratio = genai_prices.calc_price / llmspend fast path (price_nanos)")


if __name__ == "__main__":
    main()
