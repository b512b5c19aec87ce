"""llmspend.pricing against genai-prices' own ``calc_price``, to the nanodollar."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import subprocess
import sys
import warnings
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from genai_prices import Usage, calc_price
from genai_prices.types import PriceCalculation
from hypothesis import given, settings
from hypothesis import strategies as st

from llmspend.errors import LLMSpendError, PricingError
from llmspend.money import nanos_to_usd
from llmspend.pricing import (
    PriceBook,
    PriceRef,
    UnknownModelWarning,
    default_pricebook,
    history,
    model_output_cap,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def genai_calc(model: str, provider: str, *usage: int, at: dt.datetime = NOW) -> PriceCalculation:
    i, c, w, o, r = (*usage, 0, 0, 0, 0, 0)[:5]
    u = Usage(
        input_tokens=i,
        cache_read_tokens=c,
        cache_write_tokens=w,
        output_tokens=o,
        output_reasoning_tokens=r,
    )
    return calc_price(u, model, provider_id=provider, genai_request_timestamp=at)


def to_nanos(usd: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = 200
        return int(usd.scaleb(9).to_integral_value(rounding=ROUND_HALF_EVEN))


def genai_nanos(model: str, provider: str, *usage: int, at: dt.datetime = NOW) -> int:
    return to_nanos(genai_calc(model, provider, *usage, at=at).total_price)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


# (llmspend provider, model, genai provider id, genai model ref, usage (i, c, w, o, r), at)
CASES = [
    ("openai", "gpt-4o-mini", "openai", "gpt-4o-mini", (12_345, 4_096, 0, 777, 0), NOW),
    ("openai", "o3", "openai", "o3", (50_000, 10_000, 0, 9_000, 7_500), NOW),
    # o3's price fell 80% on 2025-06-10: the day before uses the old price
    ("openai", "o3", "openai", "o3", (50_000, 10_000, 0, 9_000, 7_500), dt.datetime(2025, 6, 9)),
    ("google", "gemini-2.5-pro", "google", "gemini-2.5-pro", (199_999, 50_000, 0, 3_000, 0), NOW),
    ("google", "gemini-2.5-pro", "google", "gemini-2.5-pro", (200_000, 0, 0, 1, 0), NOW),
    ("google", "gemini-2.5-pro", "google", "gemini-2.5-pro", (200_001, 70_000, 0, 4_321, 0), NOW),
    ("google", "gemini-2.5-flash", "google", "gemini-2.5-flash", (8_000, 0, 0, 5_000, 4_200), NOW),
    (
        "openai",
        "text-embedding-3-small",
        "openai",
        "text-embedding-3-small",
        (9_999, 0, 0, 0, 0),
        NOW,
    ),
    ("xai", "grok-3", "x-ai", "grok-3", (20_000, 5_000, 0, 1_500, 0), NOW),
    ("xai", "grok-4", "x-ai", "grok-4", (20_000, 5_000, 0, 1_500, 900), NOW),
    (
        "openrouter",
        "google/gemini-2.5-pro",
        "openrouter",
        "google/gemini-2.5-pro",
        (250_000, 10_000, 5_000, 2_000, 0),
        NOW,
    ),
    (
        "openrouter",
        "google/gemini-2.5-pro",
        "openrouter",
        "google/gemini-2.5-pro",
        (250_000, 10_000, 5_000, 2_000, 0),
        dt.datetime(2026, 10, 18, 23, 59),
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "anthropic",
        "claude-sonnet-4-5",
        (300_000, 100_000, 20_000, 5_000, 0),
        NOW,
    ),
    (
        "deepseek",
        "deepseek-chat",
        "deepseek",
        "deepseek-chat",
        (1_000, 300, 0, 500, 0),
        dt.datetime(2026, 1, 1, 1, 0),
    ),
    (
        "deepseek",
        "deepseek-chat",
        "deepseek",
        "deepseek-chat",
        (1_000, 300, 0, 500, 0),
        dt.datetime(2026, 1, 1, 20, 0),
    ),
    ("perplexity", "sonar", "perplexity", "sonar", (1_000, 0, 0, 500, 0), NOW),
    (
        "perplexity",
        "sonar-deep-research",
        "perplexity",
        "sonar-deep-research",
        (1_000, 0, 0, 5_000, 3_000),
        NOW,
    ),
    # $0.0375/M: 37.5 and 112.5 nanodollars, rounded half-even to 38 and 112
    ("cohere", "command-r7b", "cohere", "command-r7b", (1, 0, 0, 0, 0), NOW),
    ("cohere", "command-r7b", "cohere", "command-r7b", (3, 0, 0, 0, 0), NOW),
]


def test_rounds_half_even_once(book) -> None:
    got = [
        book.price_nanos("cohere", "command-r7b", n, 0, 0, 0, 0, NOW.timestamp())[0] for n in (1, 3)
    ]
    assert got == [38, 112]
    price = book.price("command-r7b", provider="cohere", input_tokens=3)
    assert price.input_usd == Decimal("0.0000001125") and price.total_usd == Decimal("1.12e-7")


@pytest.mark.parametrize(("provider", "model", "gp", "gmodel", "usage", "at"), CASES)
def test_matches_genai_prices(book, provider, model, gp, gmodel, usage, at) -> None:
    expected = genai_calc(gmodel, gp, *usage, at=at)
    at_aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    nanos, status, ref = book.price_nanos(provider, model, *usage, at_aware.timestamp())
    assert nanos == to_nanos(expected.total_price)
    assert status == "priced"
    assert ref is not None and ref.startswith(f"genai-prices:{gp}/{expected.model.id}")
    price = book.price(model, provider=provider, **_kw(usage), at=at)
    assert price.total_nanos == nanos
    assert price.total_usd == nanos_to_usd(nanos)
    assert price.input_usd == expected.input_price
    assert price.output_usd == expected.output_price
    assert price.status == "priced" and str(price.ref) == ref


def _kw(usage: tuple[int, ...]) -> dict[str, int]:
    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    return dict(zip((*names, "reasoning_tokens"), usage, strict=True))


def test_price_change_and_tiers_matter(book) -> None:
    before = book.price("o3", input_tokens=1_000_000, at="2025-06-09")
    after = book.price("o3", input_tokens=1_000_000, at="2025-06-10")
    assert (before.total_usd, after.total_usd) == (Decimal(10), Decimal(2))
    assert str(after.ref) == "genai-prices:openai/o3@2025-06-10"
    assert before.ref is not None and before.ref.effective is None
    low = book.price("gemini-2.5-pro", provider="google", input_tokens=200_000)
    high = book.price("gemini-2.5-pro", provider="google", input_tokens=200_001)
    assert low.total_usd == Decimal("0.25")  # $1.25/M
    assert high.total_usd == Decimal("0.5000025")  # the whole request at $2.50/M


MODELS = [
    ("openai", "gpt-4o-mini", "openai"),
    ("openai", "o3", "openai"),
    ("google", "gemini-2.5-pro", "google"),
    ("google", "gemini-2.5-flash", "google"),
    ("xai", "grok-3", "x-ai"),
    ("anthropic", "claude-sonnet-4-5", "anthropic"),
    ("openrouter", "google/gemini-2.5-pro", "openrouter"),
    ("deepseek", "deepseek-v4-pro", "deepseek"),
    ("perplexity", "sonar-deep-research", "perplexity"),
    ("mistral", "mistral-large-4", "mistral"),
    ("openrouter", "deepseek/deepseek-chat-v3.1", "openrouter"),
]


@st.composite
def usages(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    i = draw(st.one_of(st.integers(0, 2_000), st.integers(0, 1_500_000)))
    c = draw(st.integers(0, i))
    w = draw(st.integers(0, i - c))
    o = draw(st.integers(0, 300_000))
    return i, c, w, o, draw(st.integers(0, o))


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    usage=usages(),
    at=st.datetimes(dt.datetime(2024, 6, 1), dt.datetime(2027, 3, 1), timezones=st.just(UTC)),
)
def test_property_equals_genai_prices(
    model: tuple[str, str, str], usage: tuple[int, int, int, int, int], at: dt.datetime
) -> None:
    provider, name, gp = model
    nanos, _, _ = _BOOK.price_nanos(provider, name, *usage, at.timestamp())
    assert nanos == genai_nanos(name, gp, *usage, at=at)


_BOOK = PriceBook()


def test_every_genai_model_matches() -> None:
    """Every model of every provider in the bundled data, at two dates, to the nanodollar."""
    from genai_prices.data import providers

    book, usage, checked = PriceBook(), (123_457, 23_001, 3_007, 45_679, 5_003), 0
    for prov in providers:
        for info in prov.models:
            try:
                expected = [genai_calc(info.id, prov.id, *usage, at=at) for at in _SWEEP_DATES]
            except (LookupError, ValueError):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UnknownModelWarning)
                got = [
                    book.price_nanos(prov.id, info.id, *usage, at.timestamp())
                    for at in _SWEEP_DATES
                ]
            for (nanos, status, _), exp in zip(got, expected, strict=True):
                if status == "unknown":  # priced per minute/character, not per token
                    assert not any(
                        k in exp.model_price.__dict__ for k in ("input_mtok", "output_mtok")
                    )
                else:
                    assert nanos == to_nanos(exp.total_price), (prov.id, info.id)
                    checked += 1
    assert checked > 3000


_SWEEP_DATES = (dt.datetime(2025, 3, 1, 3, tzinfo=UTC), dt.datetime(2026, 11, 20, 8, tzinfo=UTC))


# -- model names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "gp", "gmodel"),
    [
        ("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o"),
        ("openai", "gpt-4o-2024-05-13", "openai", "gpt-4o-2024-05-13"),
        (None, "gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini"),
        ("google", "models/gemini-2.5-pro", "google", "gemini-2.5-pro"),
        (None, "models/gemini-2.5-flash", "google", "gemini-2.5-flash"),
        (None, "openai/gpt-4o", "openai", "gpt-4o"),
        ("openai", "openai/gpt-4o", "openai", "gpt-4o"),
        ("openrouter", "openai/gpt-4o-mini", "openrouter", "openai/gpt-4o-mini"),
        ("openrouter", "gemini-2.5-pro", "openrouter", "google/gemini-2.5-pro"),
        ("xai", "grok-3-latest", "x-ai", "grok-3"),
        (None, "grok-3", "x-ai", "grok-3"),
        ("openai-compatible", "text-embedding-3-small", "openai", "text-embedding-3-small"),
        (None, "text-embedding-3-small", "openai", "text-embedding-3-small"),
        ("azure", "gpt-4o", "azure", "gpt-4o"),
        # genai-prices knows OpenAI's (higher) fine-tuned gpt-4o-mini prices
        ("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123", "openai", "ft:gpt-4o-mini-2024-07-18"),
    ],
)
def test_model_name_forms(book, provider, model, gp, gmodel) -> None:
    usage = (10_000, 2_000, 0, 1_000, 0)
    price = book.price(model, provider=provider, **_kw(usage), at=NOW)
    assert price.status == "priced"
    assert price.total_nanos == genai_nanos(gmodel, gp, *usage)
    assert price.ref is not None and price.ref.provider == gp


def test_fine_tune_of_unlisted_base_priced_as_base_with_note(book) -> None:
    price = book.price("ft:gpt-4.1-mini-2025-04-14:acme::x1", provider="openai", input_tokens=1000)
    assert price.status == "priced"
    assert price.total_nanos == genai_nanos("gpt-4.1-mini", "openai", 1000)
    assert price.note and "fine-tune priced as base model gpt-4.1-mini-2025-04-14" in price.note


def test_vendor_prefix_on_openrouter_falls_back_to_vendor_price(book) -> None:
    price = book.price("x-ai/grok-3", provider="openrouter", input_tokens=1000)
    assert price.total_nanos == genai_nanos("grok-3", "x-ai", 1000)
    assert price.note and "x-ai's list price" in price.note


def test_azure_deployment_priced_by_response_model(book) -> None:
    price = book.price(
        "prod-chat", provider="azure", response_model="gpt-4o-2024-11-20", input_tokens=1000
    )
    assert price.status == "priced"
    assert price.total_nanos == genai_nanos("gpt-4o", "azure", 1000)
    nanos, status, ref = book.price_nanos(
        "azure", "prod-chat", 1000, 0, 0, 0, 0, NOW.timestamp(), "gpt-4o-2024-11-20"
    )
    assert (nanos, status, ref) == (price.total_nanos, "priced", "genai-prices:azure/gpt-4o")


# -- unknown models and bad usages --------------------------------------------------------


def test_unknown_model_flagged_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    with caplog.at_level(logging.WARNING, logger="llmspend.pricing"):
        with pytest.warns(UnknownModelWarning, match="no-such-model"):
            price = book.price("no-such-model", provider="openai", input_tokens=10)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = book.price_nanos("openai", "no-such-model", 10, 0, 0, 5, 0, NOW.timestamp())
            book.price("no-such-model", provider="openai", output_tokens=3)
    assert (price.status, price.total_usd, price.input_usd, price.output_usd) == (
        "unknown",
        None,
        None,
        None,
    )
    assert price.total_nanos is None and price.ref is None
    assert again == (None, "unknown", None)
    assert [r.getMessage().count("no-such-model") for r in caplog.records] == [1]
    with pytest.warns(UnknownModelWarning):  # once per PriceBook
        PriceBook().price_nanos("openai", "no-such-model", 1, 0, 0, 0, 0, NOW.timestamp())


def test_not_per_token_model_is_unknown_not_zero(book) -> None:
    with pytest.warns(UnknownModelWarning):
        price = book.price("whisper-1", provider="openai", input_tokens=100)
    assert price.status == "unknown" and price.total_usd is None
    assert price.note and "not priced per token" in price.note


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        ({"input_tokens": 10, "cached_input_tokens": 11}, "cached_input_tokens"),
        ({"input_tokens": 10, "cache_write_tokens": 11}, "cache_write_tokens"),
        ({"input_tokens": 10, "cached_input_tokens": 6, "cache_write_tokens": 6}, "exceed"),
        ({"output_tokens": 5, "reasoning_tokens": 6}, "reasoning_tokens"),
        ({"input_tokens": -1}, "negative"),
        ({"output_tokens": True}, "must be an int"),
        ({"input_tokens": 1.0}, "must be an int"),
        ({"input_tokens": "12"}, "must be an int"),
    ],
)
def test_bad_usage_rejected(book, usage, message) -> None:
    with pytest.raises(PricingError, match=message):
        book.price("gpt-4o-mini", provider="openai", **usage)
    full = {
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
    } | usage
    with pytest.raises(PricingError, match=message):
        book.price_nanos("openai", "gpt-4o-mini", *full.values(), NOW.timestamp())


def test_bad_usage_rejected_even_for_unknown_models(book) -> None:
    with pytest.raises(PricingError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book.price_nanos("openai", "nope", 1, 2, 0, 0, 0, NOW.timestamp())


@pytest.mark.parametrize(
    "at",
    [
        dt.datetime(2025, 6, 9, 23, 59),
        dt.datetime(2025, 6, 9, 23, 59, tzinfo=UTC),
        dt.datetime(2025, 6, 10, 1, 59, tzinfo=dt.timezone(dt.timedelta(hours=3))),
        dt.date(2025, 6, 9),
        "2025-06-09",
        "2025-06-09T23:59:59Z",
    ],
)
def test_at_forms(book, at) -> None:
    assert book.price("o3", input_tokens=1_000_000, at=at).total_usd == Decimal(10)


def test_bad_at_rejected(book) -> None:
    with pytest.raises(PricingError, match="at"):
        book.price("o3", at="last tuesday")
    with pytest.raises(PricingError, match="at"):
        book.price("o3", at=12345)


# -- helpers --------------------------------------------------------------------------------


def test_worst_case(book) -> None:
    epoch = NOW.timestamp()
    assert book.worst_case_nanos("openai", "gpt-4o-mini", 1000, 500, epoch) == 450_000
    # above 200k the whole request is at the higher tier
    assert book.worst_case_nanos("google", "gemini-2.5-pro", 300_000, 1000, epoch) == (
        genai_nanos("gemini-2.5-pro", "google", 300_000, 0, 0, 1000)
    )
    # Anthropic cache writes cost more than input, 1-hour ones most: the bound covers them
    bound = book.worst_case_nanos("anthropic", "claude-sonnet-4-5", 10_000, 100, epoch)
    every_token_a_1h_write = Usage(input_tokens=10_000, cache_write_tokens=10_000,
                                   cache_write_1h_tokens=10_000, output_tokens=100)  # fmt: skip
    calc = calc_price(every_token_a_1h_write, "claude-sonnet-4-5", provider_id="anthropic",
                      genai_request_timestamp=NOW)  # fmt: skip
    assert bound == to_nanos(calc.total_price)
    assert bound > genai_nanos("claude-sonnet-4-5", "anthropic", 10_000, 0, 10_000, 100)
    with pytest.warns(UnknownModelWarning):
        assert book.worst_case_nanos("openai", "nope-2", 1, 1, epoch) is None


def test_history_and_caps(book) -> None:
    rows = book.history("o3", "openai", at="2025-01-01")
    assert [r["effective"] for r in rows] == [None, dt.date(2025, 6, 10)]
    assert [r["in_force"] for r in rows] == [True, False]
    assert rows[1]["input_mtok"] == Decimal(2) and rows[1]["output_mtok"] == Decimal(8)
    tiers = book.history("gemini-2.5-pro", "google")[0]["tiers"]
    assert tiers[0]["above_input_tokens"] == 200_000 and tiers[0]["input_mtok"] == Decimal("2.5")
    assert history("o3")[1]["ref"] == "genai-prices:openai/o3@2025-06-10"
    assert model_output_cap("openai", "gpt-4o-mini") is None  # genai-prices has no such field
    assert book.context_window("openai", "gpt-4o-mini") == 128_000


def test_price_ref_str_is_compact() -> None:
    ref = PriceRef("genai-prices", "openai", "gpt-4o-mini", dt.date(2024, 7, 18))
    assert str(ref) == "genai-prices:openai/gpt-4o-mini@2024-07-18"
    long = PriceRef("override:/" + "d/" * 200 + "prices.toml", "openai", "m", None)
    assert len(str(long)) <= 200 and str(long).endswith("prices.toml:openai/m")


def test_default_pricebook_cached_and_light() -> None:
    assert default_pricebook() is default_pricebook()
    code = "import sys, llmspend.pricing; print('genai_prices' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- CLI ------------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    from llmspend.cli import prices

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    prices.register(parser.add_subparsers())
    args = parser.parse_args(["prices", *argv])
    return int(args.func(args))


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("o3", "--at", "2025-07-01", "--input", "1000", "--output", "10") == 0
    out = capsys.readouterr().out
    assert "genai-prices:openai/o3@2025-06-10" in out and "$2" in out and "history:" in out
    assert "cost: $0.00208" in out


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli("gemini-2.5-pro", "--provider", "google", "--json", "--input", "300000") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["in_force"]["tiers"][0]["input_mtok"] == "2.5"
    assert data["cost"]["total_usd"] == "0.75" and data["cost"]["status"] == "priced"


def test_cli_unknown_model() -> None:
    with pytest.raises(LLMSpendError, match="no price for model 'nope-3'"):
        _cli("nope-3", "--provider", "openai")
