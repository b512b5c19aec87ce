"""The pricing package's own invariants: named results, tier order, and no store below it."""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmspend.errors import PricingError
from llmspend.pricing import PriceBook, UnknownModelWarning
from llmspend.pricing.book import _check_extra
from llmspend.pricing.rates import Tier
from llmspend.pricing.snapshot import Tiered, TierPrice, genai

EPOCH = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC).timestamp()
PACKAGE = Path(__file__).parents[1] / "llmspend" / "pricing"


def test_the_fast_path_answers_nanos_status_ref() -> None:
    """``price_nanos`` answers a plain ``(nanos, status, ref)`` tuple (``PriceNanos``)."""
    book = PriceBook()
    nanos, status, ref = book.price_nanos("openai", "gpt-4o-mini", 1000, 0, 0, 500, 0, EPOCH)
    assert (nanos, status) == (450_000, "priced")
    assert ref is not None and ref.startswith("genai-prices:openai/")
    with pytest.warns(UnknownModelWarning):
        unknown = book.price_nanos("openai", "no-such-model-x", 1, 0, 0, 1, 0, EPOCH)
    assert unknown == (None, "unknown", None)


def test_tiers_are_highest_first() -> None:
    """The fast path takes the first tier the input exceeds: tiers must come highest first."""
    book = PriceBook()
    plan = book._plan("google", "gemini-2.5-pro", None, 2)
    tiers = plan.window(EPOCH).tiers
    assert tiers and all(type(t) is Tier for t in tiers)
    starts = [t.above_input_tokens for t in tiers]
    assert starts == sorted(starts, reverse=True)


def test_a_tiered_spec_is_named() -> None:
    prov = genai().by_id["google"]
    info = prov.find_model("gemini-2.5-pro")
    assert info is not None
    tiered = [v for v in info.prices[-1].spec.values() if isinstance(v, Tiered)]
    assert tiered and all(isinstance(t, TierPrice) for v in tiered for t in v.tiers)


def test_pricing_stays_store_free() -> None:
    """Pricing sits just above the store but needs none of it, nor anything higher
    (``config``: where the user's cache directory is; it imports only ``errors``)."""
    allowed = {"errors", "money", "config"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                top = (node.module or "").split(".")[0]
                assert top in allowed, f"{path.name} imports llmspend.{node.module}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith(("llmspend", "sqlalchemy")), path.name
    code = (
        "import sys, llmspend.pricing as p; "
        "p.PriceBook().price_nanos('openai', 'gpt-4o-mini', 1, 0, 0, 1, 0, 0.0); "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout.split()
    assert "llmspend.pricing.book" in loaded
    higher = ("sqlalchemy", "llmspend.store", "llmspend.usage", "llmspend.call", "llmspend.budgets",
              "llmspend.tracker", "llmspend.pipeline")  # fmt: skip
    assert [m for m in loaded if m.startswith(higher)] == []


class _Int(int):
    """An int that is not exactly ``int``: it takes ``_check_extra``'s slow path."""


_count = st.integers(min_value=-2, max_value=60)


@settings(max_examples=400, deadline=None)
@given(usage=st.tuples(*[_count] * 5), extra=st.tuples(*[_count] * 7))
def test_the_extra_counts_fast_path_agrees_with_the_slow_one(
    usage: tuple[int, int, int, int, int], extra: tuple[int, ...]
) -> None:
    """Plain ints (the fast path) are accepted, refused and priced as the same counts given
    as an int subclass (the checked path)."""

    def outcome(counts: tuple[int, ...]) -> object:
        try:
            checked = _check_extra(usage, counts)
        except PricingError:
            return "refused"
        return tuple(checked) if checked and any(checked) else None  # all 0: none

    fast = outcome(extra)
    assert fast == outcome(tuple(_Int(x) for x in extra))
    if fast not in ("refused", None) and min(usage) >= 0:
        i, c, w, o, r = usage
        book = PriceBook()
        args = ("anthropic", "claude-sonnet-4-5", i, c, w, o, min(r, o), EPOCH)

        def priced(counts: tuple[int, ...]) -> object:
            try:
                return book.price_nanos(*args, extra=counts)
            except PricingError:
                return "refused"

        assert priced(extra) == priced(tuple(_Int(x) for x in extra))
