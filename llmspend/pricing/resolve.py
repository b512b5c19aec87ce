"""Model-name resolution: which price a ``(provider, model, response_model)`` gets.

A name is looked up in the override file (``[[model]]``, then ``[[alias]]``), then in
genai-prices; failing both, its variants are tried in turn: OpenRouter's routing suffixes
(``:nitro``, ``:floor``, ``:online``, ``:exacto``) as the model they route, ``models/…``
prefixes, ``ft:base:org::id`` fine-tunes (priced as the base model, with a note),
``vendor/model`` (OpenRouter style), the model's maker for a cloud that resells its models
but does not list this one (a Claude name from the anthropic SDK's AWS clients: Anthropic's
list price, with a note) and dated snapshots (``gpt-4o-2024-08-06`` as ``gpt-4o``). An
Azure deployment name is priced by the response's model unless the override file names it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .overrides import Overrides
from .rates import Plan, build_plan, with_note
from .snapshot import genai, genai_provider, infer_provider, normalize_provider
from .table import Model, Provider

__all__ = ["Variant", "resolve", "variants"]

_PREFERRED = ("openai", "anthropic", "google", "x-ai", "mistral", "deepseek")
_DATED = re.compile(r"^(.+?)-(?:20\d\d-\d\d-\d\d|20\d{6})$")
_MAX_DEPTH = 8
#: OpenRouter's model suffixes that choose how a request is routed, not another model
#: (``:free``, ``:extended``, ``:thinking`` are listed models of their own).
_ROUTING = frozenset({"nitro", "floor", "online", "exacto"})
#: Clouds that resell these makers' models at the makers' list prices: a name such a cloud
#: does not list is priced at its maker's. Other hosts (Together, Groq, Fireworks...) set
#: their own prices for a maker's open-weight models, often several times the maker's:
#: such a name stays unknown there.
_RESELLERS = {
    "aws": frozenset({"anthropic"}),
    "google": frozenset({"anthropic"}),
    "azure": frozenset({"openai"}),
}


class Variant(NamedTuple):
    """Another (provider, name) to try for a model, and the note its price then carries."""

    provider: str | None
    name: str
    note: str | None


def resolve(
    overrides: Overrides | None, provider: str | None, model: str, response_model: str | None
) -> Plan:
    """The plan pricing a model; a plan with ``first is None`` when it has no price."""
    req = normalize_provider(provider)
    name = model.strip().lower()
    rname = response_model.strip().lower() if response_model else None
    plan: Plan | None = None
    if rname and rname != name and not _configured(overrides, req, name):
        plan = _lookup(overrides, req, rname, 0)
    plan = plan or _lookup(overrides, req, name, 0)
    return plan if plan is not None else Plan((), None, None, req)


def _configured(ov: Overrides | None, req: str | None, name: str) -> bool:
    return bool(ov and (ov.model_entries((req,), name) or ov.alias_for((req,), name)))


def _find(req: str | None, name: str) -> tuple[Provider, Model] | None:
    if req is None or req == "openai-compatible":
        g = genai()
        inferred = infer_provider(name)
        first = (inferred,) if req is None else (g.by_id.get("openai"), inferred)
        if name.endswith(":free"):  # OpenRouter's free models: only it names them so
            first = (g.by_id.get("openrouter"), *first)
        order = (*first, *(g.by_id.get(p) for p in _PREFERRED))
        vendor = normalize_provider(name.split("/", 1)[0]) if "/" in name else None
        if vendor is None or genai_provider(vendor) is None:  # else: split "vendor/model"
            order += g.providers
        seen: set[str] = set()
        for prov in order:
            if prov is None or prov.id in seen:
                continue
            seen.add(prov.id)
            fallback = list(g.providers) if prov is inferred else None
            if model_info := prov.find_model(name, all_providers=fallback):
                return prov, model_info
        return None
    prov = genai_provider(req)
    if prov is None:
        return None
    model_info = prov.find_model(name, all_providers=list(genai().providers))
    return (prov, model_info) if model_info else None


def _lookup(ov: Overrides | None, req: str | None, name: str, depth: int) -> Plan | None:
    if depth > _MAX_DEPTH or not name:
        return None
    found = _find(req, name)
    provs = (req, found[0].id if found else None)
    if ov is not None:
        if entries := ov.model_entries(provs, name):
            return build_plan(ov, req, name, found, entries)
        if alias := ov.alias_for(provs, name):
            target = _lookup(ov, req, alias.model, depth + 1)
            return target and with_note(target, f"{name!r} priced as alias {alias.model!r}")
    if found:
        plan = build_plan(ov, req, name, found, ())
        if req == "openai-compatible" and plan.first is not None:
            plan = with_note(plan, f"priced as {found[0].id}'s {found[1].id}")
        return plan
    for variant in variants(req, name):
        if target := _lookup(ov, variant.provider, variant.name, depth + 1):
            return with_note(target, variant.note) if target.first is not None else target
    return None


def variants(req: str | None, name: str) -> list[Variant]:
    """The other names a model may be priced under, in the order they are tried."""
    out: list[Variant] = []
    base, colon, suffix = name.rpartition(":")
    if colon and suffix in _ROUTING and base:  # OpenRouter's routing shortcuts, same model
        extra = " (its web search fees are not included)" if suffix == "online" else ""
        out.append(Variant(req, base, f"{name} priced as {base}{extra}"))
    if "models/" in name:
        out.append(Variant(req, name.rsplit("models/", 1)[1], None))
    if name.startswith("ft:") and len(parts := name.split(":")) > 1 and parts[1]:
        out.append(Variant(req, parts[1], (
            f"fine-tune priced as base model {parts[1]}; OpenAI bills fine-tuned inference "
            "above base rates, add a [[model]] override (match = \"ft:...\") for exact costs"
        )))  # fmt: skip
    if "/" in name and "models/" not in name:
        vendor, rest = name.split("/", 1)
        vendor_id = normalize_provider(vendor)
        known = vendor_id is not None and genai_provider(vendor_id) is not None
        if req == "openrouter" and known:
            out.append(Variant(vendor_id, rest, f"priced at {vendor_id}'s list price (no "
                               f"OpenRouter price for {name})"))  # fmt: skip
        elif req in (None, "openai-compatible") and known:
            out.append(Variant(vendor_id, rest, None))
        elif req in (None, "openai-compatible", vendor_id):
            out.append(Variant(req, rest, None))
    elif req == "openrouter" and (vendor_p := infer_provider(name)) is not None:
        out.append(Variant(req, f"{vendor_p.id}/{name}", None))
        out.append(Variant(vendor_p.id, name, f"priced at {vendor_p.id}'s list price (no "
                           f"OpenRouter price for {name})"))  # fmt: skip
    elif (
        req in _RESELLERS
        and (maker := infer_provider(name)) is not None
        and maker.id in _RESELLERS[req]  # a cloud that resells the model but does not list it
    ):
        out.append(Variant(maker.id, name, f"priced at {maker.id}'s list price (no {req} "
                           f"price for {name})"))  # fmt: skip
    if m := _DATED.match(name):
        out.append(Variant(req, m.group(1), f"dated snapshot {name} priced as {m.group(1)}"))
    return out
