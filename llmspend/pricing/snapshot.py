"""The genai-prices snapshot: its providers, units and prices, as llmspend reads them.

genai-prices' data is read on first use, never at import of llmspend: from the table
cached on disk when it is current (:mod:`~llmspend.pricing.table`). A model's price is a
:data:`PriceSpec` (price key → flat Decimal or :class:`Tiered`), the form override files
produce too.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from .table import PriceSpec, Provider, Table, Tiered, TierPrice, load, spec_of

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


def normalize_provider(name: str | None) -> str | None:
    """Map an llmspend provider name (``xai``, ``gemini``...) to its genai-prices id."""
    if name is None:
        return None
    key = name.strip().lower()
    if not key:
        return None
    return _PROVIDER_ALIASES.get(key, key)


#: genai-prices' bundled data as pricing reads it (see :mod:`~llmspend.pricing.table`).
GenAI = Table

_genai_state: Table | None = None
_genai_lock = threading.Lock()


def genai() -> Table:
    """genai-prices' providers and units: on first use, from the on-disk table if current
    (a few ms), else from genai-prices' own data (~0.1 s, then cached on disk)."""
    global _genai_state
    state = _genai_state
    if state is None:
        with _genai_lock:
            if _genai_state is None:
                _genai_state = load()
            state = _genai_state
    return state


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


def price_at(value: Decimal | Tiered, above: int | None) -> Decimal:
    """The price in force for requests with more than ``above`` input tokens (None: base)."""
    if isinstance(value, Decimal):
        return value
    chosen = value.base
    for tier in value.tiers:
        if above is not None and tier.start <= above:
            chosen = tier.price
    return chosen
