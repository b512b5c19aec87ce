"""The genai-prices snapshot: its providers, units and prices, as llmspend reads them.

genai-prices' data is imported on first use (~0.1 s), never at import of llmspend. A
model's price becomes a :data:`PriceSpec` (price key → flat Decimal or :class:`Tiered`),
the form override files produce too.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from genai_prices.types import ModelPrice, Provider
    from genai_prices.units import UnitDef

__all__ = [
    "GenAI",
    "PriceSpec",
    "TierPrice",
    "Tiered",
    "genai",
    "genai_provider",
    "infer_provider",
    "normalize_provider",
    "price_at",
    "spec_of",
]

_PROVIDER_ALIASES = {
    "xai": "x-ai",
    "grok": "x-ai",
    "gemini": "google",
    "google-genai": "google",
    "google-gla": "google",
    "vertex": "google",
    "vertexai": "google",
    "google-vertex": "google",
    "azure-openai": "azure",
    "azure_openai": "azure",
    "openai_compatible": "openai-compatible",
}


class TierPrice(NamedTuple):
    """A tier's price: in force for requests with more than ``start`` input tokens."""

    start: int
    price: Decimal


class Tiered(NamedTuple):
    """A tiered price: ``base`` below every tier, then ``tiers`` in ascending ``start``."""

    base: Decimal
    tiers: tuple[TierPrice, ...]


#: genai-prices price key (``input_mtok``...) → a flat price or a :class:`Tiered` one.
PriceSpec = dict[str, "Decimal | Tiered"]


def normalize_provider(name: str | None) -> str | None:
    """Map an llmspend provider name (``xai``, ``gemini``...) to its genai-prices id."""
    if name is None:
        return None
    key = name.strip().lower()
    if not key:
        return None
    return _PROVIDER_ALIASES.get(key, key)


@dataclass(frozen=True, slots=True)
class GenAI:
    """genai-prices' bundled data: providers (in data order), by id, and units by price key."""

    providers: tuple[Provider, ...]
    by_id: dict[str, Provider]
    units: dict[str, UnitDef]  # price key → unit


_genai_state: GenAI | None = None


def genai() -> GenAI:
    """genai-prices' bundled providers and units, imported on first use (~0.1 s)."""
    global _genai_state
    if _genai_state is None:
        _defer_package_init()
        from genai_prices.data import providers
        from genai_prices.data_units import unit_data
        from genai_prices.units import UnitRegistry

        registry = UnitRegistry(unit_data)
        units = {u.price_key: u for u in registry.units.values()}
        _genai_state = GenAI(tuple(providers), {p.id: p for p in providers}, units)
    return _genai_state


def _defer_package_init() -> None:
    """Let genai-prices' data modules load without its package ``__init__`` running yet.

    Its ``__init__`` imports what llmspend never uses (the price updater with its HTTP
    client, ``importlib.metadata``): about half of the first price's cost. Invariant: the
    package goes into ``sys.modules`` unexecuted, with a module ``__getattr__`` that runs
    its own ``__init__`` the first time anything not yet loaded is asked of it, so any
    ``import genai_prices`` or ``from genai_prices import ...`` elsewhere still gets the
    whole package (tests/test_pricing_standalone.py checks both orders).
    """
    if "genai_prices" in sys.modules:
        return
    spec = importlib.util.find_spec("genai_prices")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # pragma: no cover - not installed as a package: the plain import says so
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = threading.RLock()
    ran: list[bool] = []

    def __getattr__(name: str) -> Any:
        with lock:
            if not ran:  # the first ask: run the package's own __init__ (once)
                ran.append(True)
                try:
                    loader.exec_module(package)
                finally:
                    package.__dict__.pop("__getattr__", None)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'genai_prices' has no attribute {name!r}") from None

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules.setdefault("genai_prices", package)


def genai_provider(provider_id: str) -> Provider | None:
    """The genai-prices provider for an id (or its ``provider_match``), else None."""
    g = genai()
    if provider_id in g.by_id:
        return g.by_id[provider_id]
    return next(
        (p for p in g.providers if p.provider_match and p.provider_match.is_match(provider_id)),
        None,
    )


def infer_provider(name: str) -> Provider | None:
    """The first genai-prices provider whose ``model_match`` accepts a model name."""
    return next(
        (p for p in genai().providers if p.model_match and p.model_match.is_match(name)), None
    )


def spec_of(model_price: ModelPrice) -> PriceSpec:
    """A genai-prices ``ModelPrice`` as a :data:`PriceSpec`."""
    from genai_prices.types import TieredPrices

    spec: PriceSpec = {}
    for key, value in model_price.__dict__.items():
        if key.startswith("_") or value is None:
            continue
        if isinstance(value, TieredPrices):
            steps = tuple(TierPrice(t.start, t.price) for t in value.tiers)
            spec[key] = Tiered(value.base, steps)
        else:
            spec[key] = value
    return spec


def price_at(value: Decimal | Tiered, above: int | None) -> Decimal:
    """The price in force for requests with more than ``above`` input tokens (None: base)."""
    if isinstance(value, Decimal):
        return value
    chosen = value.base
    for tier in value.tiers:
        if above is not None and tier.start <= above:
            chosen = tier.price
    return chosen
