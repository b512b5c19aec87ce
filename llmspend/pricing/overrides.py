"""Price-override files: your own prices, aliases and discounts on top of genai-prices.

Point ``LLMSPEND_PRICES`` (or ``PriceBook(overrides_path=...)``) at a TOML file::

    # A custom model, or a replacement for genai-prices' price of a known model.
    [[model]]
    provider = "openai"            # optional: llmspend or genai-prices provider id (omitted: any)
    id = "my-finetune"             # the exact model name (case-insensitive), or instead
    # match = "ft:gpt-4o-mini-2024-07-18:acme::*"    # a glob; exactly one of id / match
    input_mtok = "0.30"            # required: USD per million input tokens
    output_mtok = "1.20"           # required: USD per million output tokens
    cached_input_mtok = "0.15"     # optional: cached input tokens (default: the input price)
    cache_write_mtok = "0.30"      # optional: cache-write tokens (default: the input price)
    reasoning_mtok = "1.20"        # optional: reasoning tokens (default: the output price)
    # optional, each defaulting to the price of the tokens it is part of:
    # cache_write_1h_mtok (Anthropic's 1-hour cache writes), input_audio_mtok,
    # cached_audio_input_mtok, output_audio_mtok, input_image_mtok,
    # cached_image_input_mtok, output_image_mtok
    effective = 2025-01-01         # optional: applies from this UTC date; several entries for
                                   # the same id/match make a price history
    max_output_tokens = 16384      # optional: reported by model_output_cap()

    [[model.tiers]]                # optional: when a request has MORE input tokens than
    above_input_tokens = 200000    # this, the whole request is billed at the tier's prices
    input_mtok = "0.60"            # (prices not given here keep their base value)
    output_mtok = "2.40"

    [[alias]]                      # price a name (e.g. an Azure deployment) as another model
    provider = "azure"             # optional
    name = "my-gpt4o-deployment"   # exact name or glob, case-insensitive
    model = "gpt-4o"               # the model to price it as (looked up like any model)

    [[discount]]                   # a negotiated discount, applied to list and override prices
    provider = "openai"            # provider and/or model (a glob); at least one of the two
    model = "gpt-4o*"
    percent = "12.5"               # 0 to 100

    [[tier]]                       # a service-tier or Batch API price (see pricing/tiers.toml)
    provider = "openai"            # optional
    tier = "priority"              # the tier as the provider reports it, or "batch"
    match = ["gpt-4o*"]            # model globs (a string or a list)
    multiplier = "1.7"             # of the standard price; or give input_mtok/output_mtok...
    effective = 2025-06-01         # optional
    source = "my contract"         # optional: where the price comes from

Prices are strings (preferred), integers or floats; a float is converted through ``str`` so
``0.3`` means exactly 0.3. Dates are TOML dates or ``"YYYY-MM-DD"`` strings.

Matching: an ``id`` entry beats a ``match`` glob, a provider-specific entry beats a
provider-less one, then the first in the file wins; all entries with that same
provider/id/match form the model's history. Before its earliest ``effective`` date a model
keeps genai-prices' price (if it has one). The first matching ``[[alias]]`` and
``[[discount]]`` apply. Any unknown key, missing field, negative price, bad date, percent
outside [0, 100] or TOML syntax error raises :class:`~llmspend.errors.PriceFileError`
naming the file, the entry (e.g. ``model #2 (my-finetune)``) and the field.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import PriceFileError
from .snapshot import PriceSpec, Tiered, TierPrice, normalize_provider

__all__ = ["Alias", "Discount", "ModelOverride", "Overrides", "TierPriceEntry", "load_overrides"]

#: override-file price field → genai-prices price key
_PRICE_FIELDS = {
    "input_mtok": "input_mtok",
    "cached_input_mtok": "cache_read_mtok",
    "cache_write_mtok": "cache_write_mtok",
    "output_mtok": "output_mtok",
    "reasoning_mtok": "output_reasoning_mtok",
    "cache_write_1h_mtok": "cache_write_1h_mtok",
    "input_audio_mtok": "input_audio_mtok",
    "cached_audio_input_mtok": "cache_audio_read_mtok",
    "output_audio_mtok": "output_audio_mtok",
    "input_image_mtok": "input_image_mtok",
    "cached_image_input_mtok": "cache_image_read_mtok",
    "output_image_mtok": "output_image_mtok",
}
_MODEL_KEYS = frozenset(
    {"provider", "id", "match", "effective", "max_output_tokens", "tiers", *_PRICE_FIELDS}
)
_TIER_KEYS = frozenset({"above_input_tokens", *_PRICE_FIELDS})
_ALIAS_KEYS = frozenset({"provider", "name", "model"})
_DISCOUNT_KEYS = frozenset({"provider", "model", "percent"})
_TIER_ENTRY_KEYS = frozenset(
    {"provider", "tier", "match", "multiplier", "effective", "source", *_PRICE_FIELDS}
)
_GLOB_CHARS = frozenset("*?[")


def _name_matches(pattern: str, is_glob: bool, name: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) if is_glob else name == pattern


@dataclass(frozen=True, slots=True)
class ModelOverride:
    """One ``[[model]]`` entry: prices (genai-prices keys) for a model from a date."""

    index: int
    provider: str | None
    pattern: str
    is_glob: bool
    prices: PriceSpec
    effective: dt.date | None
    max_output_tokens: int | None

    def matches(self, providers: Iterable[str | None], name: str) -> bool:
        if self.provider is not None and self.provider not in providers:
            return False
        return _name_matches(self.pattern, self.is_glob, name)


@dataclass(frozen=True, slots=True)
class Alias:
    """One ``[[alias]]`` entry: price ``name`` as ``model``."""

    index: int
    provider: str | None
    name: str
    is_glob: bool
    model: str

    def matches(self, providers: Iterable[str | None], name: str) -> bool:
        if self.provider is not None and self.provider not in providers:
            return False
        return _name_matches(self.name, self.is_glob, name)


@dataclass(frozen=True, slots=True)
class Discount:
    """One ``[[discount]]`` entry: ``percent`` off for a provider and/or model glob."""

    index: int
    provider: str | None
    model: str | None
    percent: Decimal

    def matches(self, providers: Iterable[str | None], names: Iterable[str]) -> bool:
        if self.provider is not None and self.provider not in providers:
            return False
        return self.model is None or any(fnmatch.fnmatchcase(n, self.model) for n in names)


@dataclass(frozen=True, slots=True)
class TierPriceEntry:
    """One ``[[tier]]`` entry: the price of ``tier`` for models ``patterns`` from a date,
    as a ``multiplier`` of the standard price or as its own ``prices``."""

    index: int
    provider: str | None
    tier: str
    patterns: tuple[str, ...]
    multiplier: Decimal | None
    prices: PriceSpec
    effective: dt.date | None
    source: str

    def matches(self, providers: Iterable[str | None], names: Iterable[str]) -> bool:
        if self.provider is not None and self.provider not in providers:
            return False
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in self.patterns)


@dataclass(frozen=True, slots=True)
class Overrides:
    """A parsed, validated override file."""

    path: str
    models: tuple[ModelOverride, ...] = ()
    aliases: tuple[Alias, ...] = ()
    discounts: tuple[Discount, ...] = ()
    tiers: tuple[TierPriceEntry, ...] = ()

    def model_entries(
        self, providers: Iterable[str | None], name: str
    ) -> tuple[ModelOverride, ...]:
        """The entries pricing ``name`` (one id/match key), oldest ``effective`` first."""
        provs = tuple(providers)
        hits = [m for m in self.models if m.matches(provs, name)]
        if not hits:
            return ()
        best = min(hits, key=lambda m: (m.is_glob, m.provider is None, m.index))
        same = [
            m
            for m in hits
            if (m.provider, m.pattern, m.is_glob) == (best.provider, best.pattern, best.is_glob)
        ]
        return tuple(
            sorted(same, key=lambda m: (m.effective is not None, m.effective or dt.date.min))
        )

    def alias_for(self, providers: Iterable[str | None], name: str) -> Alias | None:
        provs = tuple(providers)
        return next((a for a in self.aliases if a.matches(provs, name)), None)

    def discount_for(
        self, providers: Iterable[str | None], names: Iterable[str]
    ) -> Discount | None:
        provs, names_ = tuple(providers), tuple(names)
        return next((d for d in self.discounts if d.matches(provs, names_)), None)


# -- loading ----------------------------------------------------------------------------


def _toml_load(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise PriceFileError(path, None, None, "file not found") from None
    except OSError as exc:
        raise PriceFileError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(path, None, None, f"invalid TOML: {exc}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # NUL in path, bad bytes
        problem = f"cannot read as TOML: {type(exc).__name__}: {exc}"
        raise PriceFileError(path, None, None, problem) from None


class _Entry:
    """Validation helpers bound to one entry, so every error names file, entry and field."""

    def __init__(self, path: str, kind: str, index: int, raw: object, keys: frozenset[str]):
        self.path = path
        ident = None
        if isinstance(raw, Mapping):
            ident = raw.get("id") or raw.get("match") or raw.get("name") or raw.get("model")
        self.label = f"{kind} #{index}" + (f" ({ident})" if isinstance(ident, str) else "")
        if not isinstance(raw, Mapping):
            self.fail(None, f"must be a table, got {type(raw).__name__}")
        self.raw: Mapping[str, Any] = raw  # type: ignore[assignment]
        for key in self.raw:
            if key not in keys:
                self.fail(key, f"unknown key (allowed: {', '.join(sorted(keys))})")

    def fail(self, field: str | None, problem: str) -> Any:
        raise PriceFileError(self.path, self.label, field, problem)

    def text(self, field: str, *, required: bool = False) -> str | None:
        value = self.raw.get(field)
        if value is None:
            if required:
                self.fail(field, "missing required field")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"must be a non-empty string, got {value!r}")
        return str(value).strip().lower()

    def amount(self, field: str, value: object) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.fail(field, f"must be a number or a numeric string, got {value!r}")
        try:
            dec = Decimal(str(value).strip())
        except InvalidOperation:
            return self.fail(field, f"not a number: {value!r}")
        if not dec.is_finite():
            self.fail(field, f"must be finite, got {value!r}")
        if dec < 0:
            self.fail(field, f"must not be negative, got {value!r}")
        if dec > 10**6:
            self.fail(field, f"must be at most 1,000,000 (USD per million tokens), got {value!r}")
        if dec and dec.as_tuple().exponent < -15:  # type: ignore[operator]
            self.fail(field, f"has more than 15 decimal places, got {value!r}")
        return dec

    def date(self, field: str) -> dt.date | None:
        value = self.raw.get(field)
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            self.fail(field, f"must be a date (YYYY-MM-DD), not a date-time: {value!r}")
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        return self.fail(field, f"not a date (use YYYY-MM-DD): {value!r}")

    def whole(self, field: str, value: object, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return self.fail(field, f"must be a whole number >= {minimum}, got {value!r}")
        return value


def _parse_model(path: str, index: int, raw: object) -> ModelOverride:
    e = _Entry(path, "model", index, raw, _MODEL_KEYS)
    ident, match = e.text("id"), e.text("match")
    if (ident is None) == (match is None):
        e.fail("id", "give exactly one of 'id' (exact name) or 'match' (glob)")
    pattern = ident if ident is not None else match
    assert pattern is not None
    prices: PriceSpec = {}
    base: dict[str, Decimal] = {}
    for field, key in _PRICE_FIELDS.items():
        value = e.amount(field, e.raw.get(field))
        if value is None and field in ("input_mtok", "output_mtok"):
            e.fail(field, "missing required field (USD per million tokens)")
        if value is not None:
            base[key] = value
    tiers_raw = e.raw.get("tiers", [])
    if not isinstance(tiers_raw, list):
        e.fail("tiers", "must be an array of tables ([[model.tiers]])")
    tiers: dict[str, list[TierPrice]] = {}
    seen: set[int] = set()
    for t_index, tier in enumerate(tiers_raw, 1):
        field = f"tiers[{t_index}]"
        if not isinstance(tier, Mapping):
            e.fail(field, "must be a table")
        for key in tier:
            if key not in _TIER_KEYS:
                e.fail(f"{field}.{key}", f"unknown key (allowed: {', '.join(sorted(_TIER_KEYS))})")
        if "above_input_tokens" not in tier:
            e.fail(f"{field}.above_input_tokens", "missing required field")
        start = e.whole(f"{field}.above_input_tokens", tier.get("above_input_tokens"))
        if start in seen:
            e.fail(f"{field}.above_input_tokens", f"duplicate tier threshold {start}")
        seen.add(start)
        for tfield, key in _PRICE_FIELDS.items():
            value = e.amount(f"{field}.{tfield}", tier.get(tfield))
            if value is None:
                continue
            if key not in base:
                e.fail(f"{field}.{tfield}", f"tier price without a base price {tfield!r}")
            tiers.setdefault(key, []).append(TierPrice(start, value))
    for start in (0, *sorted(seen)):
        _check_cached_parts(e, start, {k: _at(base[k], tiers.get(k, []), start) for k in base})
    for key, value in base.items():
        if key in tiers:
            prices[key] = Tiered(value, tuple(sorted(tiers[key])))
        else:
            prices[key] = value
    max_out = None
    if "max_output_tokens" in e.raw:
        max_out = e.whole("max_output_tokens", e.raw["max_output_tokens"], minimum=1)
    return ModelOverride(
        index=index,
        provider=normalize_provider(e.text("provider")),
        pattern=pattern,
        is_glob=match is not None,
        prices=prices,
        effective=e.date("effective"),
        max_output_tokens=max_out,
    )


def _at(base: Decimal, tiers: list[TierPrice], start: int) -> Decimal:
    """A price in force above ``start`` input tokens."""
    found = [t for t in tiers if t.start <= start]
    return max(found).price if found else base


#: (cached modality, modality) price keys: a cached audio (image) token is priced as the
#: cached token it is plus the audio (image) token it is, minus the input token it is
_CACHED_PARTS = (
    ("cache_audio_read_mtok", "input_audio_mtok", "cached_audio_input_mtok"),
    ("cache_image_read_mtok", "input_image_mtok", "cached_image_input_mtok"),
)


def _check_cached_parts(e: _Entry, start: int, rate: dict[str, Decimal]) -> None:
    """Refuse an entry that leaves a cached audio (image) token costing less than nothing:
    without its own rate it costs cached + audio - input."""
    for key, part, field in _CACHED_PARTS:
        if key in rate or part not in rate or "cache_read_mtok" not in rate:
            continue
        cost = rate["cache_read_mtok"] + rate[part] - rate["input_mtok"]
        if cost < 0:
            where = f" above {start} input tokens" if start else ""
            e.fail(
                field,
                f"missing: without it a cached {part.split('_')[1]} token{where} costs "
                f"cached_input_mtok + {part} - input_mtok = {cost} per million, less than "
                "nothing; give its rate",
            )


def _parse_alias(path: str, index: int, raw: object) -> Alias:
    e = _Entry(path, "alias", index, raw, _ALIAS_KEYS)
    name = e.text("name", required=True)
    model = e.text("model", required=True)
    assert name is not None and model is not None
    if name == model:
        e.fail("model", "an alias cannot point to itself")
    return Alias(
        index=index,
        provider=normalize_provider(e.text("provider")),
        name=name,
        is_glob=bool(_GLOB_CHARS & set(name)),
        model=model,
    )


def _parse_discount(path: str, index: int, raw: object) -> Discount:
    e = _Entry(path, "discount", index, raw, _DISCOUNT_KEYS)
    provider, model = e.text("provider"), e.text("model")
    if provider is None and model is None:
        e.fail("provider", "give a provider and/or a model glob")
    percent = e.amount("percent", e.raw.get("percent"))
    if percent is None:
        e.fail("percent", "missing required field")
    assert percent is not None
    if percent > 100:
        e.fail("percent", f"must be between 0 and 100, got {e.raw['percent']!r}")
    return Discount(
        index=index, provider=normalize_provider(provider), model=model, percent=percent
    )


def _parse_tier(path: str, index: int, raw: object) -> TierPriceEntry:
    e = _Entry(path, "tier", index, raw, _TIER_ENTRY_KEYS)
    tier = e.text("tier", required=True)
    assert tier is not None
    match = e.raw.get("match")
    patterns: Any = [match] if isinstance(match, str) else match
    if not isinstance(patterns, list) or not patterns:
        return e.fail("match", "must be a model glob or a non-empty list of them")
    if not all(isinstance(p, str) and p.strip() for p in patterns):
        e.fail("match", f"must hold non-empty strings, got {match!r}")
    prices: PriceSpec = {}
    for field, key in _PRICE_FIELDS.items():
        value = e.amount(field, e.raw.get(field))
        if value is not None:
            prices[key] = value
    multiplier = e.amount("multiplier", e.raw.get("multiplier"))
    if (multiplier is None) == (not prices):
        e.fail("multiplier", "give either a multiplier or prices (input_mtok, output_mtok...)")
    if prices and not {"input_mtok", "output_mtok"} <= prices.keys():
        e.fail("input_mtok", "tier prices need both input_mtok and output_mtok")
    source = e.raw.get("source", path)
    if not isinstance(source, str):
        e.fail("source", f"must be a string, got {source!r}")
    return TierPriceEntry(
        index=index,
        provider=normalize_provider(e.text("provider")),
        tier=tier,
        patterns=tuple(p.strip().lower() for p in patterns),
        multiplier=multiplier,
        prices=prices,
        effective=e.date("effective"),
        source=source,
    )


_TABLES = {
    "model": _parse_model, "alias": _parse_alias, "discount": _parse_discount,
    "tier": _parse_tier,
}  # fmt: skip


def load_overrides(path: str | os.PathLike[str]) -> Overrides:
    """Read and validate an override file; raises :class:`PriceFileError` on any problem."""
    spath = os.fspath(path)
    doc = _toml_load(spath)
    parsed: dict[str, list[Any]] = {name: [] for name in _TABLES}
    for key, value in doc.items():
        if key not in _TABLES:
            raise PriceFileError(
                spath,
                None,
                key,
                "unknown table (expected [[model]], [[alias]], [[discount]] or [[tier]])",
            )
        if not isinstance(value, list):
            raise PriceFileError(spath, None, key, f"must be an array of tables ([[{key}]])")
        for index, raw in enumerate(value, 1):
            parsed[key].append(_TABLES[key](spath, index, raw))
    seen: dict[tuple[object, ...], int] = {}
    for m in parsed["model"]:
        ident = (m.provider, m.pattern, m.is_glob, m.effective)
        if ident in seen:
            raise PriceFileError(
                spath,
                f"model #{m.index} ({m.pattern})",
                "effective",
                f"duplicates model #{seen[ident]} (same provider, {'match' if m.is_glob else 'id'}"
                " and effective date)",
            )
        seen[ident] = m.index
    return Overrides(
        path=spath,
        models=tuple(parsed["model"]),
        aliases=tuple(parsed["alias"]),
        discounts=tuple(parsed["discount"]),
        tiers=tuple(parsed["tier"]),
    )
