"""Exact prices for LLM calls, from genai-prices' bundled data plus your override file.

Token conventions: ``input_tokens`` includes cached and cache-write tokens; ``output_tokens``
includes reasoning tokens (OpenAI reasoning, Gemini thoughts); the others are subsets. They
map to genai-prices' ``input_tokens``, ``cache_read_tokens``, ``cache_write_tokens``,
``output_tokens`` and ``output_reasoning_tokens``; the parts priced apart (Anthropic's
1-hour cache writes, audio and image tokens: :data:`~llmspend.pricing.rates.EXTRA`) to
genai-prices' keys of the same names. Service tiers and batch prices apply
(:mod:`~llmspend.pricing.tiers`); video and citation tokens are priced at the text rates,
which a ``Price.note`` says.

The modules, lowest first (each imports only those above it; none imports the store):

- :mod:`~llmspend.pricing.table`: genai-prices' data as a compact table, cached on disk
- :mod:`~llmspend.pricing.snapshot`: that table (read on first use), provider names, specs
- :mod:`~llmspend.pricing.overrides`: the TOML override file (its format is documented there)
- :mod:`~llmspend.pricing.price`: the results, :class:`Price`, :class:`PriceRef`, ``PriceNanos``
- :mod:`~llmspend.pricing.rates`: specs compiled to exact integer rates; a model's plan
- :mod:`~llmspend.pricing.resolve`: model-name resolution (variants, aliases, lookup)
- :mod:`~llmspend.pricing.book`: :class:`PriceBook` and the process-wide books, which
  ``llmspend.price()`` and the trackers share (no store needed)
"""

from __future__ import annotations

from ..errors import UnknownModelWarning
from .book import PriceBook, default_pricebook, history, model_output_cap, shared_pricebook
from .price import Price, PriceNanos, PriceRef, PriceStatus

__all__ = [
    "Price",
    "PriceBook",
    "PriceNanos",
    "PriceRef",
    "PriceStatus",
    "UnknownModelWarning",
    "default_pricebook",
    "history",
    "model_output_cap",
    "shared_pricebook",
]
