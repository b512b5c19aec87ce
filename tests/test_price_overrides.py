"""Price-override files: precedence, history, aliases, exact discounts, and validation."""

from __future__ import annotations

import datetime as dt
import textwrap
import warnings
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from llmspend.errors import PriceFileError
from llmspend.pricing import PriceBook, UnknownModelWarning, default_pricebook

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def write(tmp_path: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def genai_total(model: str, provider: str, i=0, c=0, w=0, o=0, at=NOW) -> Decimal:
    usage = Usage(input_tokens=i, cache_read_tokens=c, cache_write_tokens=w, output_tokens=o)
    return calc_price(usage, model, provider_id=provider, genai_request_timestamp=at).total_price


def nanos(usd: Decimal) -> int:
    with localcontext() as ctx:
        ctx.prec = 200
        return int(usd.scaleb(9).to_integral_value(rounding=ROUND_HALF_EVEN))


def test_override_replaces_genai_price(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[model]]
        provider = "openai"
        id = "gpt-4o-mini"
        input_mtok = "0.10"
        cached_input_mtok = 0.05
        output_mtok = 1
        """,
    )
    book = PriceBook(path)
    price = book.price(
        "gpt-4o-mini",
        provider="openai",
        input_tokens=3_000_000,
        cached_input_tokens=1_000_000,
        output_tokens=7,
        at=NOW,
    )
    # 2M × $0.10/M + 1M × $0.05/M + 7 × $1/M
    assert price.total_usd == Decimal("0.250007")
    assert price.status == "override"
    assert price.ref is not None and price.ref.source == f"override:{path}"
    assert str(price.ref) == f"override:{path}:openai/gpt-4o-mini"
    # the dated snapshot name is not this id: genai-prices still prices it
    snap = book.price("gpt-4o-mini-2024-07-18", provider="openai", input_tokens=1000, at=NOW)
    assert snap.status == "priced"
    fast = book.price_nanos("openai", "gpt-4o-mini", 3_000_000, 1_000_000, 0, 7, 0, 0.0)
    assert fast == (250_007_000, "override", str(price.ref))


def test_effective_dated_history(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[model]]
        id = "gpt-4o-mini"
        input_mtok = "1"
        output_mtok = "1"
        effective = 2025-06-01

        [[model]]
        id = "gpt-4o-mini"
        input_mtok = "0.5"
        output_mtok = "1"
        effective = "2025-01-01"
        """,
    )
    book = PriceBook(path)

    def usd(at: str) -> tuple[Decimal | None, str]:
        p = book.price("gpt-4o-mini", provider="openai", input_tokens=1_000_000, at=at)
        return p.total_usd, p.status

    assert usd("2024-12-31") == (genai_total("gpt-4o-mini", "openai", 1_000_000), "priced")
    assert usd("2025-01-01") == (Decimal("0.5"), "override")
    assert usd("2025-05-31T23:59:59") == (Decimal("0.5"), "override")
    assert usd("2025-06-01") == (Decimal(1), "override")
    rows = book.history("gpt-4o-mini", "openai", at="2025-02-01")
    assert [r["effective"] for r in rows][-2:] == [dt.date(2025, 1, 1), dt.date(2025, 6, 1)]
    assert [r["in_force"] for r in rows][-2:] == [True, False]


def test_custom_model_fine_tune_glob_and_tiers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[model]]
        provider = "openai"
        match = "ft:gpt-4.1-mini-2025-04-14:acme::*"
        input_mtok = "0.80"
        output_mtok = "3.20"
        max_output_tokens = 32768

        [[model]]
        provider = "openai"
        id = "ft:gpt-4.1-mini-2025-04-14:acme::special"
        input_mtok = "1"
        output_mtok = "1"

        [[model]]
        id = "in-house-llm"
        input_mtok = "1"
        output_mtok = "2"
        [[model.tiers]]
        above_input_tokens = 1000
        input_mtok = "3"
        """,
    )
    book = PriceBook(path)
    ft = book.price("ft:gpt-4.1-mini-2025-04-14:acme::x9", provider="openai", input_tokens=10**6)
    assert (ft.total_usd, ft.status, ft.note) == (Decimal("0.8"), "override", None)
    exact = book.price(
        "ft:gpt-4.1-mini-2025-04-14:acme::special", provider="openai", input_tokens=10**6
    )
    assert exact.total_usd == Decimal(1)  # an id beats a glob
    assert book.output_cap("openai", "ft:gpt-4.1-mini-2025-04-14:acme::x9") == 32768
    small = book.price("in-house-llm", provider="vllm", input_tokens=1000, output_tokens=10)
    big = book.price("in-house-llm", provider="vllm", input_tokens=1001, output_tokens=10)
    assert small.total_usd == Decimal("0.00102")
    assert big.total_usd == Decimal("0.003023")  # all input at $3/M, output unchanged
    assert book.history("in-house-llm")[0]["tiers"] == [
        {"above_input_tokens": 1000, "input_mtok": Decimal(3)}
    ]


def test_alias_for_azure_deployment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[alias]]
        provider = "azure"
        name = "my-gpt4o-deployment"
        model = "gpt-4o"
        """,
    )
    book = PriceBook(path)
    price = book.price("my-gpt4o-deployment", provider="azure", input_tokens=1000, at=NOW)
    assert price.total_usd == genai_total("gpt-4o", "azure", 1000)
    assert price.status == "priced" and price.note and "alias" in price.note
    # the alias is explicit configuration: it wins over the response's model
    via_response = book.price(
        "my-gpt4o-deployment",
        provider="azure",
        input_tokens=1000,
        response_model="gpt-4o-mini-2024-07-18",
        at=NOW,
    )
    assert via_response.total_usd == price.total_usd
    with pytest.warns(UnknownModelWarning):  # other providers are not aliased
        assert book.price("my-gpt4o-deployment", provider="openai").status == "unknown"


def test_discount_is_exact(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[discount]]
        provider = "openai"
        percent = "12.5"

        [[discount]]
        model = "gemini-2.5-*"
        percent = 33.333
        """,
    )
    book = PriceBook(path)
    # 1 and 3 tokens at $2.50/M less 12.5%: 2187.5 and 6562.5 nanodollars, half-even once
    p = book.price("gpt-4o", provider="openai", input_tokens=1, at=NOW)
    assert p.total_nanos == 2188 and p.input_usd == Decimal("0.0000021875")
    assert book.price("gpt-4o", provider="openai", input_tokens=3, at=NOW).total_nanos == 6562
    assert p.status == "override" and str(p.ref).endswith(" -12.5%")
    g = book.price(
        "gemini-2.5-pro", provider="google", input_tokens=300_001, output_tokens=3, at=NOW
    )
    base = genai_total("gemini-2.5-pro", "google", 300_001, 0, 0, 3)
    assert g.total_nanos == nanos(base * Decimal("0.66667"))
    assert book.price("grok-3", provider="xai", input_tokens=10, at=NOW).status == "priced"


@settings(max_examples=150, deadline=None)
@given(
    percent=st.decimals(0, 100, places=3),
    i=st.integers(0, 400_000),
    o=st.integers(0, 100_000),
)
def test_discount_property(tmp_path_factory: pytest.TempPathFactory, percent, i, o) -> None:
    book = _discount_book(tmp_path_factory, percent)
    got = book.price_nanos("google", "gemini-2.5-pro", i, i // 3, 0, o, 0, NOW.timestamp())[0]
    base = genai_total("gemini-2.5-pro", "google", i, i // 3, 0, o)
    with localcontext() as ctx:
        ctx.prec = 200
        assert got == nanos(base * (100 - percent) / 100)


_BOOKS: dict[Decimal, PriceBook] = {}


def _discount_book(factory: pytest.TempPathFactory, percent: Decimal) -> PriceBook:
    if percent not in _BOOKS:
        text = f'[[discount]]\nprovider = "google"\npercent = "{percent}"\n'
        _BOOKS[percent] = PriceBook(write(factory.mktemp("d"), text))
    return _BOOKS[percent]


def test_env_var_selects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[[model]]\nid = "house"\ninput_mtok = 1\noutput_mtok = 1\n')
    monkeypatch.setenv("LLMSPEND_PRICES", str(path))
    book = default_pricebook()
    assert book.overrides_path == str(path) and book is default_pricebook()
    assert book.price("house", input_tokens=10**6).total_usd == Decimal(1)


def test_float_prices_convert_via_str(tmp_path: Path) -> None:
    path = write(tmp_path, '[[model]]\nid = "f"\ninput_mtok = 0.3\noutput_mtok = 0.1\n')
    price = PriceBook(path).price("f", input_tokens=1, output_tokens=2)
    assert price.input_usd == Decimal("3e-7") and price.output_usd == Decimal("2e-7")


# -- bad files: one test per kind of error; the message names file, entry and field ----

BAD = {
    "unknown_key": (
        '[[model]]\nid = "m"\ninput_mtok = 1\noutput_mtok = 1\ncolour = "red"\n',
        "model #1 (m)",
        "colour",
        "unknown key",
    ),
    "unknown_table": ('[[modle]]\nid = "m"\n', None, "modle", "unknown table"),
    "not_array": ('[model]\nid = "m"\n', None, "model", "array of tables"),
    "missing_field": (
        '[[model]]\nid = "m"\ninput_mtok = 1\n',
        "model #1 (m)",
        "output_mtok",
        "missing required field",
    ),
    "id_and_match": (
        '[[model]]\nid = "m"\nmatch = "m*"\ninput_mtok = 1\noutput_mtok = 1\n',
        "model #1 (m)",
        "id",
        "exactly one",
    ),
    "negative_price": (
        '[[model]]\nid = "a"\ninput_mtok = 1\noutput_mtok = 1\n'
        '[[model]]\nid = "m"\ninput_mtok = "-0.5"\noutput_mtok = 1\n',
        "model #2 (m)",
        "input_mtok",
        "must not be negative",
    ),
    "not_a_number": (
        '[[model]]\nid = "m"\ninput_mtok = "cheap"\noutput_mtok = 1\n',
        "model #1 (m)",
        "input_mtok",
        "not a number",
    ),
    "bad_date": (
        '[[model]]\nid = "m"\ninput_mtok = 1\noutput_mtok = 1\neffective = "2025-13-01"\n',
        "model #1 (m)",
        "effective",
        "not a date",
    ),
    "datetime_not_date": (
        '[[model]]\nid = "m"\ninput_mtok = 1\noutput_mtok = 1\neffective = 2025-01-01T10:00:00\n',
        "model #1 (m)",
        "effective",
        "not a date-time",
    ),
    "duplicate": (
        '[[model]]\nid = "m"\ninput_mtok = 1\noutput_mtok = 1\n'
        '[[model]]\nid = "m"\ninput_mtok = 2\noutput_mtok = 2\n',
        "model #2 (m)",
        "effective",
        "duplicates model #1",
    ),
    "bad_tier": (
        '[[model]]\nid = "m"\ninput_mtok = 1\noutput_mtok = 1\n'
        "[[model.tiers]]\nabove_input_tokens = -5\n",
        "model #1 (m)",
        "tiers[1].above_input_tokens",
        "whole number",
    ),
    "percent_above_100": (
        '[[discount]]\nprovider = "openai"\npercent = "100.5"\n',
        "discount #1",
        "percent",
        "between 0 and 100",
    ),
    "percent_negative": (
        '[[discount]]\nprovider = "openai"\npercent = -1\n',
        "discount #1",
        "percent",
        "must not be negative",
    ),
    "discount_without_target": (
        "[[discount]]\npercent = 5\n",
        "discount #1",
        "provider",
        "provider and/or a model",
    ),
    "alias_missing_model": (
        '[[alias]]\nname = "dep"\n',
        "alias #1 (dep)",
        "model",
        "missing required field",
    ),
    "bad_toml": ('[[model]]\nid = "m\n', None, None, "invalid TOML"),
    # a cached audio (image) token without its own rate costs cached + audio - input
    "cached_audio_below_nothing": (
        '[[model]]\nid = "m"\ninput_mtok = 1\ncached_input_mtok = "0.5"\n'
        'input_audio_mtok = "0.1"\noutput_mtok = 2\n',
        "model #1 (m)",
        "cached_audio_input_mtok",
        "less than nothing",
    ),
    "cached_image_below_nothing_in_a_tier": (
        '[[model]]\nid = "m"\ninput_mtok = 1\ncached_input_mtok = "0.5"\n'
        "input_image_mtok = 1\noutput_mtok = 2\n"
        "[[model.tiers]]\nabove_input_tokens = 1000\ninput_mtok = 2\n",
        "model #1 (m)",
        "cached_image_input_mtok",
        "above 1000 input tokens",
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_rejected(tmp_path: Path, kind: str) -> None:
    text, entry, field, problem = BAD[kind]
    path = write(tmp_path, text, f"{kind}.toml")
    with pytest.raises(PriceFileError) as info:
        PriceBook(path)
    err, msg = info.value, str(info.value)
    assert str(path) in msg and problem in msg
    assert (err.path, err.entry, err.field) == (str(path), entry, field)
    if entry:
        assert f"entry {entry!r}" in msg
    if field:
        assert f"field {field!r}" in msg


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="file not found"):
        PriceBook(tmp_path / "nope.toml")


def test_unknown_provider_with_override_only(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[[model]]\nprovider = "mycorp"\nid = "m"\ninput_mtok = 2\noutput_mtok = 0\n'
    )
    book = PriceBook(path)
    assert book.price("m", provider="mycorp", input_tokens=500_000).total_usd == Decimal(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        assert book.price("m", provider="other").status == "unknown"
