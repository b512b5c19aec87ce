"""Service tiers and the Batch API: the price of a call served at a tier.

A provider reports how it served a call (OpenAI's and Anthropic's ``service_tier``,
Gemini's ``usageMetadata.serviceTier``); Batch API results are priced at the tier
``"batch"``. The price of a tier, first found wins:

1. ``[[tier]]`` entries of your override file (see :mod:`~llmspend.pricing.overrides`);
2. genai-prices' price variants (``processing = "batch"``, ``service_tier = ...``), while
   :data:`PREFER_GENAI` is true;
3. the package table ``tiers.toml``: effective-dated entries, each citing the provider's
   price page and the date it was read.

A tier none of them prices (and the standard tiers: ``default``, ``standard``, ``auto``)
costs the standard price. Some endpoints are priced by the API called rather than the
model: :data:`FREE_APIS` cost $0 (moderation), :data:`UNPRICED_APIS` cannot be priced
from token counts (fine-tuning jobs, videos, Assistants runs) and are treated as an
unknown model is.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from decimal import Decimal
from typing import Any

from .overrides import Overrides, TierPriceEntry, load_overrides
from .price import to_epoch
from .snapshot import PriceSpec, genai

__all__ = [
    "BATCH",
    "FREE_APIS",
    "PREFER_GENAI",
    "UNPRICED_APIS",
    "TierPrice",
    "genai_variant",
    "normalize_tier",
    "package_tiers",
    "reserve_tier",
    "tier_price",
]

#: The tier Batch API results are priced at.
BATCH = "batch"
#: Whether genai-prices' own tier prices win over the package table (the one-line switch).
PREFER_GENAI = True
#: APIs that cost nothing whatever the model.
FREE_APIS = frozenset({"moderations"})
#: APIs llmspend cannot price from token counts: refused under a hard budget by default
#: (``unpriced_policy``), recorded with ``price_status="unknown"`` when let through.
UNPRICED_APIS = frozenset(
    {"fine_tuning.jobs", "videos", "videos.remix", "beta.threads.runs",
     "beta.threads.create_and_run"}
)  # fmt: skip
_STANDARD = frozenset(
    {"", "default", "standard", "auto", "standard_only", "unspecified", "on_demand"}
)


#: Where a request that leaves the tier to the provider (no ``service_tier``, or ``auto``)
#: may be served at ``priority``: OpenAI projects can default to Priority processing
#: (chat and responses; also through an OpenAI-compatible proxy, priced by model name),
#: Anthropic's ``auto`` uses Priority Tier capacity when the organization has it.
_OPENAI_TIERED = frozenset({"chat.completions", "responses"})
_PRIORITY_DEFAULT = {
    "openai": _OPENAI_TIERED, "azure": _OPENAI_TIERED, "openai-compatible": _OPENAI_TIERED,
    "anthropic": frozenset({"messages"}),
}  # fmt: skip
_LEFT_TO_PROVIDER = frozenset({"auto"})


def reserve_tier(provider: str | None, api: str | None, tier: Any) -> Any:
    """The tier a request's reservation is priced at: the one it asks for, or ``priority``
    when it leaves the tier to the provider (``auto``: what the SDK taps pass for a request
    without ``service_tier``, as the provider reads it) on an endpoint whose project
    default may be priority (see ``_PRIORITY_DEFAULT``) — the dearest tier it could be
    served at. ``None`` is the standard tier. The call is settled at the tier the response
    reports (``auto`` is priced as standard when it reports none).

    How loose: for such a request on a standard-tier project the reservation is the
    priority price (OpenAI: up to 2x standard, the catch-all entry; the published
    per-model prices are 1.67x-2x); Anthropic's table prices priority at list prices (1x).
    A request that pins a tier (``default``, ``flex``, ``standard_only``...) reserves
    exactly that tier.
    """
    if tier is None or api not in _PRIORITY_DEFAULT.get(provider or "", ()):
        return tier
    name = str(getattr(tier, "value", tier)).strip().lower()
    return "priority" if name in _LEFT_TO_PROVIDER else tier


def normalize_tier(tier: Any) -> str | None:
    """The tier a call is priced at, lower case; ``None`` for the standard tier."""
    if tier is None:
        return None
    name = str(getattr(tier, "value", tier)).strip().lower()
    name = name.removeprefix("servicetier.")
    return None if name in _STANDARD else name


class TierPrice:
    """How a tier changes a standard price: ``multiplier`` or ``prices`` (whole or partial
    spec, keys not given keep the standard price), and where that comes from."""

    __slots__ = ("multiplier", "prices", "source", "user")

    def __init__(
        self, multiplier: Decimal | None, prices: PriceSpec, source: str, user: bool
    ) -> None:
        self.multiplier = multiplier
        self.prices = prices
        self.source = source
        self.user = user

    def spec(self, standard: PriceSpec) -> PriceSpec:
        """The tier's price spec given the standard one."""
        if self.multiplier is not None:
            return standard
        return {**standard, **self.prices}


_package: Overrides | None = None
_lock = threading.Lock()


def package_tiers() -> tuple[TierPriceEntry, ...]:
    """The entries of the package table ``tiers.toml`` (read once)."""
    global _package
    if _package is None:
        with _lock:
            if _package is None:
                # a plain path: importlib.resources would add ~10 ms to the first price
                _package = load_overrides(os.path.join(os.path.dirname(__file__), "tiers.toml"))
    return _package.tiers


def _entry(
    entries: tuple[TierPriceEntry, ...], provs: tuple[str | None, ...], names: list[str],
    tier: str, epoch: float,
) -> TierPriceEntry | None:  # fmt: skip
    """The latest entry in force for the tier, else ``None``."""
    best: TierPriceEntry | None = None
    for e in entries:
        if e.tier != tier or not e.matches(provs, names):
            continue
        if e.effective is not None and to_epoch(e.effective) > epoch:
            continue
        if best is None or (e.effective or dt.date.min) >= (best.effective or dt.date.min):
            best = e
    return best


def genai_variant(provider_id: str, model_id: str, tier: str, epoch: float) -> PriceSpec | None:
    """genai-prices' partial spec for ``tier`` of a model at ``epoch``, or ``None``."""
    prov = genai().by_id.get(provider_id)
    info = next((m for m in prov.models if m.id == model_id), None) if prov else None
    if info is None or not info.variants:
        return None
    want = {"processing": "batch"} if tier == BATCH else {"service_tier": tier}
    when = dt.datetime.fromtimestamp(epoch, dt.UTC)
    spec: PriceSpec = {}
    for variant in info.variants:
        if variant.when != want or not variant.price.active(when):
            continue
        for key, value in variant.price.spec.items():
            spec.setdefault(key, value)
    return spec or None


def tier_price(
    overrides: Overrides | None,
    provs: tuple[str | None, ...],
    names: list[str],
    genai_model: tuple[str, str] | None,
    tier: str,
    epoch: float,
) -> TierPrice | None:
    """The price of ``tier`` for a model (``provs``: its provider ids; ``names``: its
    requested and listed names; ``genai_model``: its genai-prices provider and model ids),
    or ``None`` (the standard price)."""
    user = overrides.tiers if overrides is not None else ()
    if user and (hit := _entry(user, provs, names, tier, epoch)):
        return TierPrice(hit.multiplier, hit.prices, f"override:{hit.source}", True)
    if PREFER_GENAI and genai_model is not None:
        spec = genai_variant(*genai_model, tier, epoch)
        if spec is not None:
            return TierPrice(None, spec, "genai-prices", False)
    if hit := _entry(package_tiers(), provs, names, tier, epoch):
        return TierPrice(hit.multiplier, hit.prices, hit.source, False)
    return None
