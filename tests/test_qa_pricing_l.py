"""Exploratory QA of pricing (helper L): what the price data prices that llmspend does not."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend.pricing.rates import unsplit_note
from llmspend.pricing.snapshot import PriceSpec


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.simplefilter("ignore", llmspend.pricing.UnknownModelWarning)


def test_one_hour_cache_writes_are_priced_at_their_rate() -> None:
    # Anthropic bills 1-hour cache writes at 2x input ($6/MTok on Sonnet 4.5), 5-minute ones
    # at 1.25x ($3.75). (They were priced at the 5-minute rate, with a note saying so; helper
    # L2 applies the 1-hour rate: tests/test_qa_pricing_l2.py.)
    p = llmspend.price("claude-sonnet-4-5", provider="anthropic", input_tokens=1_000,
                       cache_write_tokens=1_000)  # fmt: skip
    assert p.total_usd == Decimal("0.00375")
    one_hour = llmspend.price("claude-sonnet-4-5", provider="anthropic", input_tokens=1_000,
                              cache_write_tokens=1_000, cache_write_1h_tokens=1_000)  # fmt: skip
    assert one_hour.total_usd == Decimal("0.006")
    assert p.note is None and one_hour.note is None


@pytest.mark.parametrize(
    ("model", "part", "rate", "text_rate"),
    [
        ("gpt-4o-transcribe", "input_audio_tokens", "6", "2.5"),
        ("gemini-2.5-flash-image", "output_image_tokens", "30", "2.5"),
        ("gpt-realtime", "output_audio_tokens", "64", "16"),
    ],
)
def test_modality_rates_are_applied(model: str, part: str, rate: str, text_rate: str) -> None:
    # (They were priced at the text rates, with a note saying so; helper L2 prices the
    # parts the usage names at their own rates: tests/test_qa_pricing_l2.py.)
    whole = "input_tokens" if part.startswith("input") else "output_tokens"
    p = llmspend.price(model, **{whole: 1_000_000, part: 1_000_000})  # type: ignore[arg-type]
    text = llmspend.price(model, **{whole: 1_000_000})  # type: ignore[arg-type]
    assert p.status == "priced" and p.note is None
    assert (p.total_usd, text.total_usd) == (Decimal(rate), Decimal(text_rate))


def test_text_only_models_carry_no_note() -> None:
    assert llmspend.price("gpt-4o", input_tokens=1_000).note is None
    assert llmspend.price("o3", input_tokens=1, output_tokens=2, reasoning_tokens=1).note is None


def test_unsplit_note_wording() -> None:
    assert unsplit_note([{"input_mtok": Decimal(1)}]) is None
    spec: PriceSpec = {"input_mtok": Decimal(1), "cache_write_mtok": Decimal(2)}
    video: PriceSpec = {"input_video_mtok": Decimal(1)}
    note = unsplit_note([video, spec], "claude-x")
    assert note == (
        "priced below the provider's bill when the call has them: video input tokens at the "
        "text rates; 1-hour cache writes at the 5-minute rate (no 1-hour rate in the price data)"
    )
    audio: PriceSpec = {"input_audio_mtok": Decimal(1)}
    assert unsplit_note([audio]) is None  # applied (helper L2)
    one_hour: PriceSpec = {"cache_write_1h_mtok": Decimal(2)}
    assert unsplit_note([spec, one_hour], "claude-x") is None


def test_ingest_prices_a_row_at_the_tier_and_endpoint_it_names(installed: object) -> None:
    """A backfilled row without ``cost_usd`` is priced as a live call with the same
    ``service_tier`` and ``api`` would be: batch and flex at their prices, not standard."""
    book = llmspend.pricing.default_pricebook()
    base = {"ts": "2026-12-01T00:00:00", "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 1_000_000, "output_tokens": 1_000_000}  # fmt: skip
    rows = [
        base,
        {**base, "service_tier": "batch"},
        {**base, "model": "o3", "service_tier": "flex"},
        {**base, "service_tier": "default"},
        {**base, "api": "fine_tuning.jobs"},  # cannot be priced from tokens, live or not
    ]
    assert llmspend.ingest(rows) == len(rows)
    frame = llmspend.records()

    def listed(model: str, tier: str | None) -> Decimal:
        p = book.price(model, provider="openai", input_tokens=1_000_000,
                       output_tokens=1_000_000, at="2026-12-01", tier=tier)  # fmt: skip
        assert p.total_usd is not None
        return p.total_usd

    standard = listed("gpt-4o-mini", None)
    assert standard == Decimal("0.75")
    assert list(frame["cost_usd"])[:4] == [
        standard, standard / 2, listed("o3", "flex"), standard
    ]  # fmt: skip
    assert listed("o3", "flex") == Decimal(5)
    assert "tier=batch" in frame["price_ref"][1]
    assert frame["price_status"][4] == "unknown" and frame["cost_usd"][4] is None


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-haiku-4-5"])
def test_a_cloud_provider_without_the_model_prices_it_at_its_makers_list_price(model: str) -> None:
    """The anthropic SDK's AWS clients are recorded as provider ``aws``; a plain Claude name
    (AnthropicAWS takes them) that genai-prices' aws provider does not list is priced at
    Anthropic's list price, with a note, not left unknown (which a hard budget refuses)."""
    usage: dict[str, Any] = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    listed = llmspend.price(model, provider="anthropic", **usage)
    via_aws = llmspend.price(model, provider="aws", **usage)
    assert listed.status == via_aws.status == "priced"
    assert via_aws.total_usd == listed.total_usd
    assert via_aws.note and "anthropic's list price (no aws price" in via_aws.note


def test_the_makers_price_is_not_used_where_the_provider_lists_the_model() -> None:
    bedrock = llmspend.price("us.anthropic.claude-sonnet-4-5-20250929-v1:0", provider="aws",
                             input_tokens=1_000_000)  # fmt: skip
    assert bedrock.ref is not None and bedrock.ref.provider == "aws"
    assert bedrock.total_usd == Decimal("3.3")  # Bedrock's regional endpoints: +10%
    assert llmspend.price("my-deployment", provider="azure").status == "unknown"


@pytest.mark.parametrize(
    ("provider", "model"),
    [("together", "deepseek-r1"), ("fireworks", "deepseek-r1"), ("groq", "gpt-oss-120b"),
     ("together", "gpt-oss-120b"), ("mistral", "gpt-4o"), ("aws", "deepseek-r1")],
)  # fmt: skip
def test_a_host_that_sets_its_own_prices_does_not_get_the_makers(provider: str, model: str) -> None:
    """Only clouds that resell a maker's models at its list price get the maker's price for
    a name they do not list: Together, Fireworks or Bedrock bill DeepSeek-R1 at several
    times DeepSeek's price, and Groq gpt-oss-120b at ~4x what the price data lists as
    OpenAI's, so a hard budget would let calls through at a fraction of their cost."""
    assert llmspend.price(model, provider=provider, input_tokens=1000).status == "unknown"


@pytest.mark.parametrize("suffix", [":nitro", ":floor", ":online", ":exacto"])
@pytest.mark.parametrize("provider", ["openrouter", None])
def test_openrouter_routing_variants_are_priced_as_their_model(
    suffix: str, provider: str | None
) -> None:
    """OpenRouter's routing shortcuts (``openai/gpt-4o:nitro``...) name the same model; the
    request's name was unknown, so a hard budget refused the call before it was sent."""
    usage: dict[str, Any] = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    plain = llmspend.price("openai/gpt-4o", provider=provider, **usage)
    routed = llmspend.price(f"openai/gpt-4o{suffix}", provider=provider, **usage)
    assert routed.status == plain.status == "priced"
    assert routed.total_usd == plain.total_usd
    assert routed.note and f"openai/gpt-4o{suffix} priced as openai/gpt-4o" in routed.note
    if suffix == ":online":
        assert "web search" in routed.note


def test_free_openrouter_variants_stay_free() -> None:
    p = llmspend.price("deepseek/deepseek-r1:free", provider="openrouter", input_tokens=1000)
    assert (p.status, p.total_usd) == ("priced", Decimal(0))


@pytest.mark.parametrize("provider", [None, "openai-compatible"])
def test_a_free_openrouter_model_is_free_without_naming_openrouter(provider: str | None) -> None:
    """``deepseek/deepseek-r1:free`` through a proxy (or ``price()`` without a provider)
    was priced as DeepSeek's paid model."""
    p = llmspend.price("deepseek/deepseek-r1:free", provider=provider, input_tokens=1000)
    assert (p.status, p.total_usd) == ("priced", Decimal(0))
    assert p.ref is not None and p.ref.provider == "openrouter"
