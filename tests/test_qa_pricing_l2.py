"""Exploratory QA of pricing (helper L2): what providers bill above the text rates.

Real SDK clients against the simulator on 127.0.0.1 where it can produce the usage; the
pricing functions where it cannot.
"""

from __future__ import annotations

import dataclasses
import warnings
from decimal import Decimal
from typing import Any

import anthropic
import pytest

import llmspend
from llmspend.call import Usage
from llmspend.dialects import anthropic as anthropic_dialect
from llmspend.errors import PricingError
from llmspend.pricing import default_pricebook
from llmspend.pricing.rates import EXTRA
from llmspend.sim import SimServer

MODEL = "claude-sonnet-4-5"
ONE_HOUR = [{"type": "text", "text": "a long shared context " * 20,
             "cache_control": {"type": "ephemeral", "ttl": "1h"}}]  # fmt: skip


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore", llmspend.UnknownModelWarning)


def _client(sim: SimServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)


def _only_row(tracker: Any) -> dict[str, Any]:
    rows = list(tracker.recent)
    assert len(rows) == 1, rows
    return rows[0]


# -- 1. Anthropic's 1-hour cache writes: 2x input, not the 5-minute 1.25x ------------------


def test_one_hour_cache_writes_are_recorded_at_their_rate(
    installed: Any, fresh_sim: SimServer
) -> None:
    """The brief's repro: 20 tokens written to the 1-hour cache on Sonnet 4.5 are billed at
    $6/MTok; they were recorded at the 5-minute $3.75 ($0.00058275 instead of $0.000609)."""
    msg = _client(fresh_sim).messages.create(
        model=MODEL, max_tokens=50, system=ONE_HOUR,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi #sim:cache_write=20"}],
    )  # fmt: skip
    u = msg.usage
    assert u.cache_creation is not None and u.cache_creation.ephemeral_1h_input_tokens == 20
    row = _only_row(installed)
    assert row["cache_write_tokens"] == 20
    # Anthropic's bill: uncached input at $3, 1-hour writes at $6, output at $15 per MTok
    billed = (Decimal(3) * u.input_tokens + Decimal(6) * 20 + Decimal(15) * u.output_tokens) / 10**6
    assert Decimal(row["cost_nanos"]) / 10**9 == billed
    assert llmspend.records()["cost_usd"][0] == billed


def test_one_hour_cache_writes_in_a_stream(installed: Any, fresh_sim: SimServer) -> None:
    with _client(fresh_sim).messages.stream(
        model=MODEL, max_tokens=50, system=ONE_HOUR,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi #sim:cache_write=20"}],
    ) as stream:  # fmt: skip
        final = stream.get_final_message()
    u = final.usage
    row = _only_row(installed)
    assert row["streamed"] is True and row["cache_write_tokens"] == 20
    billed = (Decimal(3) * u.input_tokens + Decimal(6) * 20 + Decimal(15) * u.output_tokens) / 10**6
    assert Decimal(row["cost_nanos"]) / 10**9 == billed


def test_five_minute_cache_writes_keep_their_rate(installed: Any, fresh_sim: SimServer) -> None:
    msg = _client(fresh_sim).messages.create(
        model=MODEL, max_tokens=50, system=[{"type": "text", "text": "a long context " * 20}],
        messages=[{"role": "user", "content": "hi #sim:cache_write=20"}],
    )  # fmt: skip
    u = msg.usage
    assert u.cache_creation_input_tokens == 20
    row = _only_row(installed)
    billed = (
        Decimal(3) * u.input_tokens + Decimal("3.75") * 20 + Decimal(15) * u.output_tokens
    ) / 10**6
    assert Decimal(row["cost_nanos"]) / 10**9 == billed


def test_the_dialect_reads_the_one_hour_part() -> None:
    usage = {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3,
             "cache_creation_input_tokens": 30,
             "cache_creation": {"ephemeral_5m_input_tokens": 10,
                                "ephemeral_1h_input_tokens": 20}}  # fmt: skip
    assert anthropic_dialect.normalize_usage(usage) == Usage(38, 3, 30, 7, 0, 20)
    del usage["cache_creation"]  # an older API version: no breakdown, all at 5 minutes
    assert anthropic_dialect.normalize_usage(usage) == Usage(38, 3, 30, 7, 0, 0)


def test_usage_keeps_the_one_hour_part_within_the_cache_writes() -> None:
    assert Usage(10, 0, 4, 0, 0, 9).clamp() == Usage(10, 0, 4, 0, 0, 4)
    assert Usage(10, 0, 4, 0, 0, -1).clamp() == Usage(10, 0, 4, 0, 0, 0)
    assert Usage(10, 0, 4, 0, 0, 3).extra() == (3,)
    assert Usage(10, 0, 4).extra() is None
    # Usage.extra() and the pricing's EXTRA name the same counts, in the same order
    names = {f.name for f in dataclasses.fields(Usage)}
    assert set(EXTRA) <= names


def test_price_takes_one_hour_cache_writes() -> None:
    p = llmspend.price(MODEL, provider="anthropic", input_tokens=1_000,
                       cache_write_tokens=1_000, cache_write_1h_tokens=400)  # fmt: skip
    assert p.total_usd == Decimal("0.00465")  # 600 x $3.75 + 400 x $6 per MTok
    assert p.input_usd == p.total_usd and p.note is None
    # above 200k input tokens Sonnet 4.5's long-context rates apply to 1-hour writes too
    long = llmspend.price(MODEL, provider="anthropic", input_tokens=300_000,
                          cache_write_tokens=1_000, cache_write_1h_tokens=400)  # fmt: skip
    assert long.total_usd == Decimal("1.8033")  # 299k x $6 + 600 x $7.50 + 400 x $12


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("claude-sonnet-4-5", (1_000, 0, 1_000, 10, 0, 1_000)),
        ("claude-sonnet-4-5", (300_000, 5_000, 1_000, 100, 0, 400)),  # long-context tier
        ("claude-opus-4-1", (12_345, 678, 9_000, 321, 0, 8_999)),
        ("claude-haiku-4-5", (7, 0, 7, 1, 0, 3)),
    ],
)
def test_one_hour_prices_equal_genai_prices(model: str, usage: tuple[int, ...]) -> None:
    """Exact to the nanodollar: the same as genai-prices' own calculation."""
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    i, c, w, o, r, w1h = usage
    calc = calc_price(
        GenaiUsage(input_tokens=i, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o,
                   cache_write_1h_tokens=w1h),
        model, provider_id="anthropic",
    )  # fmt: skip
    ours = llmspend.price(model, provider="anthropic", input_tokens=i, cached_input_tokens=c,
                          cache_write_tokens=w, output_tokens=o, reasoning_tokens=r,
                          cache_write_1h_tokens=w1h)  # fmt: skip
    assert ours.total_usd == calc.total_price.quantize(Decimal("1e-9")).normalize()
    nanos = default_pricebook().price_nanos("anthropic", model, i, c, w, o, r, 0.0,
                                            extra=(w1h,))  # fmt: skip
    assert ours.total_usd is not None and nanos[0] == int(ours.total_usd * 10**9)


@pytest.mark.parametrize("bad", [-1, 1_001, 1.5, True])
def test_price_refuses_an_impossible_one_hour_count(bad: Any) -> None:
    with pytest.raises(PricingError, match="cache_write_1h_tokens"):
        llmspend.price(MODEL, provider="anthropic", input_tokens=2_000,
                       cache_write_tokens=1_000, cache_write_1h_tokens=bad)  # fmt: skip


def test_a_model_without_a_one_hour_rate_keeps_the_five_minute_rate_and_says_so() -> None:
    name = "us.anthropic.claude-sonnet-4-20250514-v1:0"  # Bedrock lists no 1h rate for it
    with_1h = llmspend.price(name, provider="aws", input_tokens=1_000, cache_write_tokens=1_000,
                             cache_write_1h_tokens=1_000)  # fmt: skip
    plain = llmspend.price(name, provider="aws", input_tokens=1_000, cache_write_tokens=1_000)
    assert with_1h.status == "priced" and with_1h.total_usd == plain.total_usd
    assert with_1h.note and "1-hour cache writes at the 5-minute rate" in with_1h.note


def test_the_worst_case_covers_one_hour_writes() -> None:
    """A reservation must bound the call whatever the cache does: every input token may be
    a 1-hour write (2x input), the dearest input rate."""
    book = default_pricebook()
    bound = book.worst_case_nanos("anthropic", MODEL, 1_000, 100, 0)
    assert bound is not None
    worst = book.price_nanos("anthropic", MODEL, 1_000, 0, 1_000, 100, 0, 0, extra=(1_000,))
    assert worst[0] == bound == 1_000 * 6_000 + 100 * 15_000


def test_a_budget_reservation_bounds_a_one_hour_write(installed: Any, fresh_sim: SimServer) -> None:
    _client(fresh_sim).messages.create(
        model=MODEL, max_tokens=50, system=ONE_HOUR,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "hi #sim:cache_write=20"}],
    )  # fmt: skip
    row = _only_row(installed)
    book = default_pricebook()
    bound = book.worst_case_nanos("anthropic", MODEL, row["input_tokens"], 50, 0)
    assert bound is not None and row["cost_nanos"] <= bound
