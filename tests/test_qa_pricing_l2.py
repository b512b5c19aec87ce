"""Exploratory QA of pricing (helper L2): what providers bill above the text rates.

Real SDK clients against the simulator on 127.0.0.1 where it can produce the usage; the
pricing functions where it cannot.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

import llmspend
from llmspend.call import Usage
from llmspend.dialects import anthropic as anthropic_dialect
from llmspend.dialects import gemini as gemini_dialect
from llmspend.dialects import openai as openai_dialect
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
    assert Usage(10, 0, 4, 0, 0, 3).extra() == (3, 0, 0, 0, 0, 0, 0)
    assert Usage(10, 0, 4).extra() is None
    # Usage.extra() and the pricing's EXTRA name the same counts, in the same order
    assert tuple(f.name for f in dataclasses.fields(Usage))[5:] == EXTRA
    parts = Usage(0, 0, 0, 0, 0, *range(1, len(EXTRA) + 1))
    assert parts.extra() == tuple(getattr(parts, name) for name in EXTRA)


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
                                            extra=(w1h, 0, 0, 0, 0, 0, 0))  # fmt: skip
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
    worst = book.price_nanos(
        "anthropic", MODEL, 1_000, 0, 1_000, 100, 0, 0, extra=(1_000, 0, 0, 0, 0, 0, 0)
    )
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


# -- 2. audio and image tokens at their own rates --------------------------------------------

AUDIO = b"RIFF" + bytes(range(256)) * 8  # 2,052 bytes: the simulator bills 65 audio tokens


def test_transcription_audio_tokens_are_recorded_at_the_audio_rate(
    installed: Any, fresh_sim: SimServer
) -> None:
    """gpt-4o-transcribe bills audio input at $6/MTok, text input at $2.50: every token
    was recorded at $2.50."""
    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    tr = c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", AUDIO), prompt="names"
    )
    usage: Any = tr.usage
    audio = usage.input_token_details.audio_tokens
    assert audio > 0 and usage.input_tokens > audio  # the prompt's text tokens besides
    row = _only_row(installed)
    billed = (Decimal(6) * audio + Decimal("2.5") * (usage.input_tokens - audio)
              + Decimal(10) * usage.output_tokens) / 10**6  # fmt: skip
    assert Decimal(row["cost_nanos"]) / 10**9 == billed


def test_streamed_transcription_audio_tokens(installed: Any, fresh_sim: SimServer) -> None:
    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    stream = c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", b"x" * 640), stream=True
    )
    events: list[Any] = list(stream)
    usage: Any = events[-1].usage
    audio = usage.input_token_details.audio_tokens
    assert audio == 20
    row = _only_row(installed)
    billed = (Decimal(6) * audio + Decimal("2.5") * (usage.input_tokens - audio)
              + Decimal(10) * usage.output_tokens) / 10**6  # fmt: skip
    assert Decimal(row["cost_nanos"]) / 10**9 == billed


def test_openai_usage_parts() -> None:
    chat = {"prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 60,
                                      "cached_tokens_details": {"audio_tokens": 30}},
            "completion_tokens_details": {"audio_tokens": 45, "reasoning_tokens": 0}}  # fmt: skip
    u = openai_dialect.normalize_usage(chat)
    assert u == Usage(100, 40, 0, 50, 0, input_audio_tokens=60, cache_audio_read_tokens=30,
                      output_audio_tokens=45)  # fmt: skip
    image = {"input_tokens": 70, "output_tokens": 1056, "total_tokens": 1126,
             "input_tokens_details": {"text_tokens": 20, "image_tokens": 50},
             "output_tokens_details": {"image_tokens": 1056, "text_tokens": 0}}  # fmt: skip
    u = openai_dialect.normalize_usage(image, "images.edits")
    assert u == Usage(70, 0, 0, 1056, 0, input_image_tokens=50, output_image_tokens=1056)


def test_gemini_usage_parts_dict_and_sdk() -> None:
    from google.genai import types

    rest = {"promptTokenCount": 100, "candidatesTokenCount": 1300,
            "cachedContentTokenCount": 30, "thoughtsTokenCount": 10,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 40},
                                    {"modality": "AUDIO", "tokenCount": 60}],
            "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 30}],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 10},
                                        {"modality": "IMAGE", "tokenCount": 1290}]}  # fmt: skip
    expected = Usage(100, 30, 0, 1310, 10, input_audio_tokens=60, cache_audio_read_tokens=30,
                     output_image_tokens=1290)  # fmt: skip
    assert gemini_dialect.parse_usage(rest) == expected
    sdk = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=100, candidates_token_count=1300, cached_content_token_count=30,
        thoughts_token_count=10,
        prompt_tokens_details=[types.ModalityTokenCount(modality=types.MediaModality.AUDIO,
                                                        token_count=60)],
        cache_tokens_details=[types.ModalityTokenCount(modality=types.MediaModality.AUDIO,
                                                       token_count=30)],
        candidates_tokens_details=[types.ModalityTokenCount(modality=types.MediaModality.IMAGE,
                                                            token_count=1290)],
    )  # fmt: skip
    assert gemini_dialect.parse_usage(sdk) == expected
    # malformed details: the text rates, never an error
    broken = {**rest, "promptTokensDetails": [{"modality": 3, "tokenCount": "x"}, None]}
    assert gemini_dialect.parse_usage(broken) == Usage(
        100, 30, 0, 1310, 10, cache_audio_read_tokens=0, output_image_tokens=1290
    )


def test_usage_keeps_modality_parts_within_their_counts() -> None:
    u = Usage(10, 4, 0, 8, 3, input_audio_tokens=7, input_image_tokens=9,
              cache_audio_read_tokens=6, cache_image_read_tokens=5,
              output_audio_tokens=4, output_image_tokens=4).clamp()  # fmt: skip
    assert u == Usage(10, 4, 0, 8, 3, 0, 7, 4, 4, 3, 0, 1)


@pytest.mark.parametrize(
    ("provider", "model", "usage", "parts"),
    [
        ("openai", "gpt-4o-transcribe", (1_000, 0, 0, 37, 0), {"input_audio_tokens": 900}),
        ("openai", "gpt-image-1", (500, 200, 0, 4_160, 0),
         {"input_image_tokens": 400, "cache_image_read_tokens": 150}),
        ("openai", "gpt-realtime", (2_000, 1_000, 0, 700, 0),
         {"input_audio_tokens": 1_500, "cache_audio_read_tokens": 900,
          "input_image_tokens": 300, "cache_image_read_tokens": 50,
          "output_audio_tokens": 600}),
        ("google", "gemini-2.5-flash-image", (120, 0, 0, 1_300, 0),
         {"output_image_tokens": 1_290, "input_image_tokens": 100}),
        ("google", "gemini-2.5-flash", (5_000, 2_000, 0, 100, 40),
         {"input_audio_tokens": 3_000, "cache_audio_read_tokens": 1_500}),
        ("google", "gemini-2.0-flash", (5_000, 2_000, 0, 100, 0),
         {"input_audio_tokens": 2_500, "cache_audio_read_tokens": 0}),
    ],
)  # fmt: skip
def test_modality_prices_equal_genai_prices(
    provider: str, model: str, usage: tuple[int, ...], parts: dict[str, int]
) -> None:
    """Exact to the nanodollar: the same as genai-prices' own calculation."""
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    i, c, w, o, r = usage
    calc = calc_price(
        GenaiUsage(input_tokens=i, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o,
                   output_reasoning_tokens=r, **parts),
        model, provider_id=provider,
    )  # fmt: skip
    ours = llmspend.price(model, provider=provider, input_tokens=i, cached_input_tokens=c,
                          cache_write_tokens=w, output_tokens=o, reasoning_tokens=r,
                          **parts)  # type: ignore[arg-type]  # fmt: skip
    assert ours.total_usd == calc.total_price.quantize(Decimal("1e-9")).normalize()
    text = llmspend.price(model, provider=provider, input_tokens=i, cached_input_tokens=c,
                          cache_write_tokens=w, output_tokens=o, reasoning_tokens=r)  # fmt: skip
    assert ours.total_usd is not None and text.total_usd is not None
    assert ours.total_usd > text.total_usd  # the parts were billed above the text rates


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-4o-transcribe"), ("openai", "gpt-realtime"), ("openai", "gpt-image-1"),
     ("google", "gemini-2.5-flash-image"), ("google", "gemini-2.5-flash")],
)  # fmt: skip
def test_the_worst_case_covers_audio_and_image_tokens(provider: str, model: str) -> None:
    """Every input token may be audio or image (cached or not), every output token audio
    or image: the reservation bounds each."""
    book = default_pricebook()
    i, o = 10_000, 2_000
    bound = book.worst_case_nanos(provider, model, i, o, 0)
    assert bound is not None
    inputs: list[dict[str, Any]] = [
        {}, {"input_audio_tokens": i}, {"input_image_tokens": i},
        {"input_audio_tokens": i, "cache_audio_read_tokens": i},
        {"input_image_tokens": i, "cache_image_read_tokens": i},
    ]  # fmt: skip
    outputs: list[dict[str, Any]] = [{}, {"output_audio_tokens": o}, {"output_image_tokens": o}]
    for inp in inputs:
        for out in outputs:
            cached = i if any(k.startswith("cache") for k in inp) else 0
            p = book.price(model, provider=provider, input_tokens=i, cached_input_tokens=cached,
                           output_tokens=o, at=dt.datetime(1970, 1, 1), **inp, **out)  # fmt: skip
            assert p.total_nanos is not None and p.total_nanos <= bound


def test_price_refuses_inconsistent_parts() -> None:
    with pytest.raises(PricingError, match="cache_audio_read_tokens"):
        llmspend.price("gemini-2.0-flash", input_tokens=100, cached_input_tokens=50,
                       input_audio_tokens=10, cache_audio_read_tokens=20)  # fmt: skip
    with pytest.raises(PricingError, match="output_image_tokens"):
        llmspend.price("gemini-2.5-flash-image", output_tokens=10, output_image_tokens=11)


# -- 3. AnthropicAWS is Anthropic's own API: Anthropic's prices ------------------------------


def test_anthropic_on_aws_is_labelled_anthropic_and_bedrock_stays_aws() -> None:
    from llmspend.providers.anthropic_sdk import detect_provider

    aws = anthropic.AnthropicAWS(api_key="x", aws_region="us-east-1", workspace_id="w")
    assert detect_provider(aws) == "anthropic"
    assert detect_provider(
        anthropic.AsyncAnthropicAWS(api_key="x", aws_region="us-east-1", workspace_id="w")
    ) == ("anthropic")
    for cls in (anthropic.AnthropicBedrock, anthropic.AsyncAnthropicBedrock):
        bedrock = cls(aws_access_key="a", aws_secret_key="b", aws_region="us-east-1")
        assert detect_provider(bedrock) == "aws"
    for mantle_cls in (anthropic.AnthropicBedrockMantle, anthropic.AsyncAnthropicBedrockMantle):
        mantle = mantle_cls(api_key="x", aws_region="us-east-1")
        assert detect_provider(mantle) == "aws"


def test_a_call_through_anthropic_on_aws_costs_anthropics_price(
    installed: Any, fresh_sim: SimServer
) -> None:
    """It was recorded as provider ``aws`` and priced at Bedrock's regional +10%."""
    client = anthropic.AnthropicAWS(api_key="x", workspace_id="w", base_url=fresh_sim.url,
                                   max_retries=0)  # fmt: skip
    msg = client.messages.create(model=MODEL, max_tokens=20,
                                 messages=[{"role": "user", "content": "hi"}])  # fmt: skip
    row = _only_row(installed)
    assert row["provider"] == "anthropic"
    billed = (Decimal(3) * msg.usage.input_tokens + Decimal(15) * msg.usage.output_tokens) / 10**6
    assert Decimal(row["cost_nanos"]) / 10**9 == billed


def test_an_override_file_prices_the_parts(tmp_path: Any) -> None:
    """A negotiated Claude price can name its 1-hour cache-write rate, an audio model its
    audio rates; a part without its own price costs the price of what it is part of."""
    from llmspend.pricing import PriceBook

    path = tmp_path / "prices.toml"
    path.write_text(
        '[[model]]\nid = "claude-house"\ninput_mtok = "2"\noutput_mtok = "10"\n'
        'cache_write_mtok = "2.5"\ncache_write_1h_mtok = "4"\n'
        '[[model]]\nid = "voice-house"\ninput_mtok = "1"\noutput_mtok = "4"\n'
        'input_audio_mtok = "8"\ncached_audio_input_mtok = "0.5"\noutput_image_mtok = "30"\n'
        '[[model]]\nid = "claude-plain"\ninput_mtok = "2"\noutput_mtok = "10"\n'
        'cache_write_mtok = "2.5"\n'
    )  # fmt: skip
    book = PriceBook(path)
    m = 1_000_000
    claude = book.price("claude-house", input_tokens=m, cache_write_tokens=m,
                        cache_write_1h_tokens=m // 2)  # fmt: skip
    assert claude.total_usd == Decimal("3.25") and claude.note is None
    voice = book.price("voice-house", input_tokens=m, cached_input_tokens=m // 2,
                       input_audio_tokens=m, cache_audio_read_tokens=m // 2, output_tokens=m,
                       output_image_tokens=m // 4)  # fmt: skip
    assert voice.total_usd == Decimal("4.25") + Decimal("10.5")  # input; output 3/4 x 4 + 1/4 x 30
    plain = book.price("claude-plain", input_tokens=m, cache_write_tokens=m,
                       cache_write_1h_tokens=m)  # fmt: skip
    assert plain.total_usd == Decimal("2.5")  # no 1-hour price: the cache-write price, noted
    assert plain.note and "1-hour cache writes at the 5-minute rate" in plain.note
