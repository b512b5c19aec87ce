"""Pricing without a store: `llmspend.price()` opens none and shares its book with the tracker."""

from __future__ import annotations

import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import llmspend
from llmspend.money import nanos_to_usd
from llmspend.pricing import Price, PriceBook, default_pricebook
from llmspend.pricing.price import usd_digits
from llmspend.pricing.rates import exact_usd


def test_price_opens_no_store_and_imports_no_sqlalchemy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    code = textwrap.dedent(
        """
        import sys
        import llmspend
        p = llmspend.price("gpt-4o", input_tokens=1, output_tokens=1)
        print(repr(p.total_usd), repr(p.input_usd), repr(p.output_usd), p.status)
        print(sorted(m for m in ("sqlalchemy", "alembic", "pandas") if m in sys.modules))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    env["LLMSPEND_HOME"] = str(home)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    first, second = out.stdout.strip().splitlines()
    assert first == "Decimal('0.0000125') Decimal('0.0000025') Decimal('0.00001') priced"
    assert second == "[]"
    assert list(home.iterdir()) == []  # no store file, no directory made


def _house(path: Path, input_mtok: str) -> Path:
    path.write_text(f'[[model]]\nid = "house"\ninput_mtok = "{input_mtok}"\noutput_mtok = "1"\n')
    return path


def test_the_tracker_and_price_share_one_book(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspend.tracker import Tracker, set_tracker

    prices = _house(tmp_path / "prices.toml", "2")
    monkeypatch.setenv("LLMSPEND_PRICES", str(prices))
    before = llmspend.price("house", input_tokens=10**6)
    assert before.total_usd == Decimal(2) and before.status == "override"
    tracker = Tracker(f"sqlite:///{tmp_path / 's.sqlite'}")
    set_tracker(tracker)
    assert tracker.pricebook is default_pricebook()
    _house(prices, "3")
    tracker.pricebook.reload()  # one reload reaches both
    assert llmspend.price("house", input_tokens=10**6).total_usd == Decimal(3)
    nanos, _, _ = tracker.price_nanos(None, "house", 10**6, 0, 0, 0, 0, 0.0)
    assert nanos == 3 * 10**9
    set_tracker(None)
    _house(prices, "4.5")
    os.utime(prices, ns=(1, 1))  # changed on disk: a new tracker reads it again
    fresh = Tracker(f"sqlite:///{tmp_path / 's.sqlite'}")
    assert fresh.pricebook is default_pricebook()
    assert fresh.pricebook.price("house", input_tokens=10**6).total_usd == Decimal("4.5")


def test_a_new_tracker_warns_again_about_an_unknown_model(tmp_path: Path) -> None:
    from llmspend.pricing import UnknownModelWarning
    from llmspend.tracker import Tracker

    url = f"sqlite:///{tmp_path / 's.sqlite'}"
    for _ in range(2):
        book = Tracker(url).pricebook
        with pytest.warns(UnknownModelWarning):
            book.price_nanos(None, "no-such-model-standalone", 1, 0, 0, 1, 0, 0.0)


def test_the_environment_fast_path_follows_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """default_pricebook() keys its cache on os.environ's raw value (see book.py)."""
    a, b = _house(tmp_path / "a.toml", "1"), _house(tmp_path / "b.toml", "2")
    assert default_pricebook().overrides_path is None
    monkeypatch.setenv("LLMSPEND_PRICES", str(a))
    assert default_pricebook().overrides_path == str(a)
    assert llmspend.price("house", input_tokens=10**6).total_usd == Decimal(1)
    monkeypatch.setenv("LLMSPEND_PRICES", str(b))
    assert default_pricebook().overrides_path == str(b)
    assert llmspend.price("house", input_tokens=10**6).total_usd == Decimal(2)
    monkeypatch.delenv("LLMSPEND_PRICES")
    assert default_pricebook().overrides_path is None


def test_a_price_made_from_units_equals_one_made_from_decimals() -> None:
    book = PriceBook()
    fast = book.price("gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=500)
    slow = Price(*(getattr(fast, name) for name in (
        "model", "provider", "input_usd", "output_usd", "total_usd", "status", "ref",
        "total_nanos", "note")))  # fmt: skip
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert repr(fast).startswith("Price(model='gpt-4o-mini', provider='openai', input_usd=")
    assert pickle.loads(pickle.dumps(fast)) == fast
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.total_usd = Decimal(0)  # type: ignore[misc]
    assert fast.total_usd == fast.input_usd + fast.output_usd == Decimal("0.00045")  # type: ignore[operator]


@given(st.integers(-(10**40), 10**40), st.integers(0, 40))
def test_usd_digits_is_the_one_exact_form(units: int, exp: int) -> None:
    """The hot path's conversion gives what exact_usd and nanos_to_usd give, digit for digit."""
    got = usd_digits(units, exp)
    want = exact_usd(Fraction(units, 10**exp) * 10**9)
    assert got == want and got.as_tuple() == want.as_tuple()
    if exp == 9 and abs(units) < 10**27:
        assert got.as_tuple() == nanos_to_usd(units).as_tuple()


@pytest.mark.parametrize("first", ["llmspend", "genai_prices"])
def test_genai_prices_stays_whole_whichever_is_imported_first(first: str) -> None:
    """llmspend loads genai-prices' data without its package __init__ (snapshot.py), which
    runs as soon as anything else is asked of the package."""
    code = textwrap.dedent(
        f"""
        import sys
        if {first!r} == "genai_prices":
            import genai_prices
        import llmspend
        p = llmspend.price("gpt-4o", input_tokens=1000, output_tokens=10)
        deferred = "httpx2" not in sys.modules
        import genai_prices
        from genai_prices import Usage, calc_price, UpdatePrices
        calc = calc_price(Usage(input_tokens=1000, output_tokens=10), "gpt-4o",
                          provider_id="openai")
        print(deferred, p.total_usd == calc.total_price, genai_prices.__version__ != "",
              callable(UpdatePrices), hasattr(genai_prices, "no_such_name"))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    deferred = first == "llmspend"
    assert out.stdout.split() == [str(deferred), "True", "True", "True", "False"]
