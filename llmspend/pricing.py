"""Exact prices for LLM calls, from genai-prices' bundled data plus your override file.

:class:`PriceBook` resolves a ``(provider, model)`` once into a cached *plan*: for each
effective-dated price window, integer rates in nanodollars over a common denominator (so
tiers, date windows and discounts are exact), then prices every call with integer arithmetic
and one half-even rounding to the nanodollar. Results equal ``genai_prices.calc_price``
quantized to 1e-9 USD. Prices are never fetched from the network.

Token conventions: ``input_tokens`` includes cached and cache-write tokens; ``output_tokens``
includes reasoning tokens (OpenAI reasoning, Gemini thoughts); the others are subsets. They
map to genai-prices' ``input_tokens``, ``cache_read_tokens``, ``cache_write_tokens``,
``output_tokens`` and ``output_reasoning_tokens``. Standard prices only: batch, flex and
priority variants, and audio/image modality splits, are not distinguished.

Model names: dated snapshots, ``models/…`` prefixes, ``vendor/model`` (OpenRouter style),
``ft:base:org::id`` fine-tunes (override file first, else the base model with a ``note``)
and Azure deployment names (``response_model`` or an ``[[alias]]``) are understood. The
override file format is documented in :mod:`llmspend.pricing_overrides`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import threading
import time
import warnings
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from .errors import LLMSpendWarning, PricingError
from .money import nanos_to_usd
from .pricing_overrides import (
    ModelOverride,
    Overrides,
    PriceSpec,
    Rates,
    compile_spec,
    exact_usd,
    genai,
    genai_provider,
    infer_provider,
    load_overrides,
    price_at,
    spec_of,
    token_priced,
)
from .pricing_overrides import normalize_provider as _normalize_provider

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider

__all__ = [
    "Price",
    "PriceBook",
    "PriceRef",
    "PriceStatus",
    "UnknownModelWarning",
    "default_pricebook",
    "history",
    "model_output_cap",
]

_log = logging.getLogger("llmspend.pricing")
_log.addHandler(logging.NullHandler())

PriceStatus = Literal["priced", "unknown", "override"]
_NANOS = 10**9
_DAY = 86400.0
_PREFERRED = ("openai", "anthropic", "google", "x-ai", "mistral", "deepseek")
_DATED = re.compile(r"^(.+?)-(?:20\d\d-\d\d-\d\d|20\d{6})$")
_SHOWN = {
    "input_mtok": "input_mtok",
    "cache_read_mtok": "cached_input_mtok",
    "cache_write_mtok": "cache_write_mtok",
    "output_mtok": "output_mtok",
    "output_reasoning_mtok": "reasoning_mtok",
}


class UnknownModelWarning(LLMSpendWarning):
    """A call used a model llmspend has no price for; its cost is recorded as unknown."""


@dataclass(frozen=True, slots=True)
class PriceRef:
    """Where a price came from; ``str()`` is the compact form stored with each record."""

    source: str
    provider: str
    model: str
    effective: dt.date | None = None
    time_of_day: str | None = None
    discount_percent: Decimal | None = None

    def __str__(self) -> str:
        tail = f"@{self.effective.isoformat()}" if self.effective else ""
        if self.time_of_day:
            tail += f"[{self.time_of_day}]"
        if self.discount_percent is not None:
            tail += f" -{self.discount_percent}%"
        body = f"{self.provider}/{self.model}{tail}"
        source = self.source
        room = 199 - len(body)
        if len(source) > room and source.startswith("override:"):
            keep = max(room - len("override:..."), 0)
            source = "override:..." + (source[-keep:] if keep else "")
        return f"{source}:{body}"[:200]


@dataclass(frozen=True, slots=True)
class Price:
    """The price of one usage. Money is exact ``Decimal`` USD, ``None`` when unknown.

    ``input_usd`` and ``output_usd`` are exact; ``total_usd`` (== ``total_nanos`` / 1e9) is
    their sum plus any per-request fee, rounded half-even once to the nanodollar.
    """

    model: str
    provider: str | None
    input_usd: Decimal | None
    output_usd: Decimal | None
    total_usd: Decimal | None
    status: PriceStatus
    ref: PriceRef | None
    total_nanos: int | None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class _Window:
    """One price in force from ``start`` (epoch s) and/or during ``tod`` (UTC day seconds)."""

    start: float | None
    tod: tuple[float, float] | None
    base: Rates
    tiers: tuple[tuple[int, Rates], ...]  # (above_input_tokens, rates), highest first
    status: PriceStatus
    ref: PriceRef
    ref_str: str
    spec: PriceSpec
    factor: Fraction

    def active(self, epoch: float) -> bool:
        if self.start is not None and epoch < self.start:
            return False
        if self.tod is not None:
            sec, (a, b) = epoch % _DAY, self.tod
            return (sec >= a or sec < b) if b < a else a <= sec < b
        return True

    def rates(self, input_tokens: int) -> Rates:
        for threshold, rates in self.tiers:
            if input_tokens > threshold:
                return rates
        return self.base


@dataclass(frozen=True, slots=True)
class _Plan:
    """A resolved (provider, model): its windows, highest precedence first."""

    windows: tuple[_Window, ...]
    first: _Window | None  # genai-prices' fallback when no window is active; None = unknown
    always: _Window | None  # the window when no selection by time is needed
    provider: str | None
    note: str | None = None
    max_output_tokens: int | None = None
    context_window: int | None = None

    def window(self, epoch: float) -> _Window:
        if self.always is not None:
            return self.always
        for window in self.windows:
            if window.active(epoch):
                return window
        assert self.first is not None
        return self.first


def _to_epoch(at: object) -> float:
    if at is None:
        return time.time()
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PricingError(f"at: cannot parse {at!r} as a date or time (ISO 8601)") from None
    if isinstance(at, dt.datetime):
        return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(at, dt.date):
        return dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC).timestamp()
    raise PricingError(f"at: expected a datetime, date or ISO string, not {type(at).__name__}")


def _check_usage(i: object, c: object, w: object, o: object, r: object) -> None:
    """Raise :class:`PricingError` explaining what is wrong with a usage."""
    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    for name, value in zip((*names, "reasoning_tokens"), (i, c, w, o, r), strict=True):
        if type(value) is not int:
            raise PricingError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < 0:
            raise PricingError(f"{name} must not be negative, got {value}")
    assert isinstance(i, int) and isinstance(c, int) and isinstance(w, int)
    assert isinstance(o, int) and isinstance(r, int)
    for name, part in ((names[1], c), (names[2], w)):
        if part > i:
            raise PricingError(f"{name} ({part}) exceeds input_tokens ({i}), which includes it")
    if c + w > i:
        raise PricingError(
            f"cached_input_tokens + cache_write_tokens ({c} + {w}) exceed input_tokens ({i}), "
            "which includes both"
        )
    if r > o:
        raise PricingError(f"reasoning_tokens ({r}) exceeds output_tokens ({o}), which includes it")


def _with_note(plan: _Plan, note: str | None) -> _Plan:
    if not note:
        return plan
    return dataclasses.replace(plan, note=f"{note}; {plan.note}" if plan.note else note)


class PriceBook:
    """Prices usages; resolves each (provider, model) once and caches the plan.

    ``overrides_path`` names a TOML override file (see :mod:`llmspend.pricing_overrides`); it
    is read and validated here, raising :class:`~llmspend.errors.PriceFileError`.
    Thread-safe.
    """

    def __init__(self, overrides_path: str | os.PathLike[str] | None = None) -> None:
        self.overrides_path = os.fspath(overrides_path) if overrides_path is not None else None
        self.overrides: Overrides | None = (
            load_overrides(self.overrides_path) if self.overrides_path else None
        )
        self._plans: dict[tuple[Any, Any, Any], _Plan] = {}
        self._warned: set[tuple[Any, Any]] = set()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"PriceBook(overrides_path={self.overrides_path!r})"

    # -- pricing -----------------------------------------------------------------------
    def price_nanos(
        self,
        provider: str | None,
        model: str,
        input_tokens: int,
        cached_input_tokens: int,
        cache_write_tokens: int,
        output_tokens: int,
        reasoning_tokens: int,
        at_epoch_seconds: float,
        response_model: str | None = None,
    ) -> tuple[int | None, str, str | None]:
        """Fast path: ``(total nanodollars or None, status, ref string or None)``."""
        plan = self._plans.get((provider, model, response_model))
        if plan is None:
            plan = self._plan(provider, model, response_model, 3)
        i, c, w = input_tokens, cached_input_tokens, cache_write_tokens
        o, r = output_tokens, reasoning_tokens
        ints = type(i) is type(c) is type(w) is type(o) is type(r) is int
        if not (ints and c >= 0 and w >= 0 and r >= 0 and c + w <= i and r <= o):
            _check_usage(i, c, w, o, r)
        win = plan.always
        if win is None:
            if plan.first is None:
                return None, "unknown", None
            win = plan.window(at_epoch_seconds)
        rt = win.base
        for threshold, tier_rates in win.tiers:
            if i > threshold:
                rt = tier_rates
                break
        num = rt.ki * i + rt.kc * c + rt.kw * w + rt.ko * o + rt.kr * r + rt.k0
        den = rt.den
        if den != 1:
            q, rem = divmod(num, den)
            if 2 * rem > den or (2 * rem == den and q & 1):
                q += 1
            num = q
        return num, win.status, win.ref_str

    def price(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
        at: dt.datetime | dt.date | str | None = None,
        response_model: str | None = None,
    ) -> Price:
        """Price a usage as of ``at`` (naive datetimes are UTC; ``None`` = now)."""
        usage = (input_tokens, cached_input_tokens, cache_write_tokens, output_tokens)
        _check_usage(*usage, reasoning_tokens)
        epoch = _to_epoch(at)
        plan = self._plan(provider, model, response_model, 3)
        nanos, _, _ = self.price_nanos(provider, model, *usage, reasoning_tokens, epoch,
                                       response_model)  # fmt: skip
        shown_provider = provider if provider is not None else plan.provider
        if nanos is None:
            return Price(model, shown_provider, None, None, None, "unknown", None, None, plan.note)
        win = plan.window(epoch)
        rt = win.rates(input_tokens)
        xs = (*usage, reasoning_tokens, 1)
        inp = Fraction(sum(k * x for k, x in zip(rt.inp, xs, strict=True)), rt.io_den)
        out = Fraction(sum(k * x for k, x in zip(rt.out, xs, strict=True)), rt.io_den)
        return Price(model, shown_provider, exact_usd(inp), exact_usd(out), nanos_to_usd(nanos),
                     win.status, win.ref, nanos, plan.note)  # fmt: skip

    def worst_case_nanos(
        self,
        provider: str | None,
        model: str,
        input_tokens: int,
        output_tokens: int,
        at_epoch: float,
    ) -> int | None:
        """An upper bound in nanodollars for a call, or ``None`` for an unknown model.

        Every input token at the dearest input rate (uncached input, or cache writes where
        those cost more), every output token at the dearest output rate (reasoning where
        that costs more), at the tier ``input_tokens`` reaches, plus per-request fees;
        rounded up.
        """
        i, o = input_tokens, output_tokens
        if not (type(i) is type(o) is int and i >= 0 and o >= 0):
            _check_usage(i, 0, 0, o, 0)
        plan = self._plan(provider, model, None, 3)
        if plan.first is None:
            return None
        rt = plan.window(at_epoch).rates(input_tokens)
        num = (
            (rt.ki + max(0, rt.kc, rt.kw)) * input_tokens
            + (rt.ko + max(0, rt.kr)) * output_tokens
            + rt.k0
        )
        return -(-num // rt.den)

    # -- information -------------------------------------------------------------------
    def output_cap(self, provider: str | None, model: str) -> int | None:
        """Max output tokens, from an override's ``max_output_tokens`` (genai-prices has none)."""
        return self._plan(provider, model, None, 3).max_output_tokens

    def context_window(self, provider: str | None, model: str) -> int | None:
        """The model's context window (input + output tokens) if genai-prices knows it."""
        return self._plan(provider, model, None, 3).context_window

    def history(
        self,
        model: str,
        provider: str | None = None,
        *,
        at: dt.datetime | dt.date | str | None = None,
        response_model: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every price window of a model (empty if unknown), with ``in_force`` as of ``at``.

        Each dict: ``effective`` (date or None), ``time_of_day``, ``source``, ``ref``,
        ``status``, ``discount_percent``, USD per million tokens (after any discount, as
        Decimal or None) ``input_mtok``, ``cached_input_mtok``, ``cache_write_mtok``,
        ``output_mtok``, ``reasoning_mtok``, ``request_usd`` (per request), ``tiers`` (list of
        dicts with ``above_input_tokens`` and the rates that change), ``other`` (price keys
        llmspend does not bill, e.g. web searches) and ``in_force``.
        """
        plan = self._plan(provider, model, response_model, 3)
        if plan.first is None:
            return []
        current = plan.window(_to_epoch(at))
        rows = []
        for win in reversed(plan.windows):

            def usd(value: Any, above: int | None = None, win: _Window = win) -> Decimal:
                return exact_usd(Fraction(price_at(value, above)) * _NANOS * win.factor)

            row: dict[str, Any] = {
                "effective": win.ref.effective,
                "time_of_day": win.ref.time_of_day,
                "source": win.ref.source,
                "ref": win.ref_str,
                "status": win.status,
                "discount_percent": win.ref.discount_percent,
            }
            row.update({name: None for name in _SHOWN.values()})
            row["request_usd"] = None
            row["other"] = {}
            for key, value in win.spec.items():
                if key in _SHOWN:
                    row[_SHOWN[key]] = usd(value)
                elif key == "requests_kcount":
                    row["request_usd"] = usd(value) / 1000
                else:
                    row["other"][key] = usd(value)
            starts = sorted({s for v in win.spec.values() if not isinstance(v, Decimal)
                             for s, _ in v[1]})  # fmt: skip
            row["tiers"] = [
                {"above_input_tokens": s}
                | {
                    _SHOWN.get(k, k): usd(v, s)
                    for k, v in win.spec.items()
                    if not isinstance(v, Decimal)
                }
                for s in starts
            ]
            row["in_force"] = win is current
            rows.append(row)
        return rows

    # -- resolution --------------------------------------------------------------------
    def _plan(self, provider: Any, model: Any, response_model: Any, stacklevel: int) -> _Plan:
        key = (provider, model, response_model)
        try:
            plan = self._plans.get(key)  # a plan once made never changes: no lock to read it
        except TypeError:  # unhashable junk (e.g. a signaling NaN): rejected below
            plan = None
        if plan is not None:
            return plan
        with self._lock:
            for name, value in (("model", model), ("provider", provider),
                                ("response_model", response_model)):  # fmt: skip
                if not (isinstance(value, str) or (value is None and name != "model")):
                    raise PricingError(f"{name} must be a string, got {type(value).__name__}")
            plan = self._plans.get(key)
            if plan is not None:  # made by another thread meanwhile
                return plan
            plan = self._resolve(provider, model, response_model)
            self._plans[key] = plan
            if plan.first is None and (provider, model) not in self._warned:
                self._warned.add((provider, model))
                msg = (
                    f"llmspend has no price for model {model!r} (provider {provider!r}); its "
                    "cost is recorded as unknown. Add it to a price-override file "
                    "($LLMSPEND_PRICES)." + (f" ({plan.note})" if plan.note else "")
                )
                _log.warning(msg)
                warnings.warn(msg, UnknownModelWarning, stacklevel=stacklevel)
            return plan

    def _resolve(self, provider: str | None, model: str, response_model: str | None) -> _Plan:
        req = _normalize_provider(provider)
        name = model.strip().lower()
        rname = response_model.strip().lower() if response_model else None
        plan: _Plan | None = None
        if rname and rname != name and not self._configured(req, name):
            plan = self._lookup(req, rname, 0)
        plan = plan or self._lookup(req, name, 0)
        return plan if plan is not None else _Plan((), None, None, req)

    def _configured(self, req: str | None, name: str) -> bool:
        ov = self.overrides
        return bool(ov and (ov.model_entries((req,), name) or ov.alias_for((req,), name)))

    def _find(self, req: str | None, name: str) -> tuple[Provider, ModelInfo] | None:
        if req is None or req == "openai-compatible":
            g = genai()
            inferred = infer_provider(name)
            first = (inferred,) if req is None else (g.by_id.get("openai"), inferred)
            order = (*first, *(g.by_id.get(p) for p in _PREFERRED))
            vendor = _normalize_provider(name.split("/", 1)[0]) if "/" in name else None
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

    def _lookup(self, req: str | None, name: str, depth: int) -> _Plan | None:
        if depth > 8 or not name:
            return None
        ov = self.overrides
        found = self._find(req, name)
        provs = (req, found[0].id if found else None)
        if ov is not None:
            if entries := ov.model_entries(provs, name):
                return self._build(req, name, found, entries)
            if alias := ov.alias_for(provs, name):
                target = self._lookup(req, alias.model, depth + 1)
                return target and _with_note(target, f"{name!r} priced as alias {alias.model!r}")
        if found:
            plan = self._build(req, name, found, ())
            if req == "openai-compatible" and plan.first is not None:
                plan = _with_note(plan, f"priced as {found[0].id}'s {found[1].id}")
            return plan
        for new_req, new_name, note in self._variants(req, name):
            if variant := self._lookup(new_req, new_name, depth + 1):
                return _with_note(variant, note) if variant.first is not None else variant
        return None

    def _variants(self, req: str | None, name: str) -> list[tuple[str | None, str, str | None]]:
        out: list[tuple[str | None, str, str | None]] = []
        if "models/" in name:
            out.append((req, name.rsplit("models/", 1)[1], None))
        if name.startswith("ft:") and len(parts := name.split(":")) > 1 and parts[1]:
            out.append((req, parts[1], (
                f"fine-tune priced as base model {parts[1]}; OpenAI bills fine-tuned inference "
                "above base rates, add a [[model]] override (match = \"ft:...\") for exact costs"
            )))  # fmt: skip
        if "/" in name and "models/" not in name:
            vendor, rest = name.split("/", 1)
            vendor_id = _normalize_provider(vendor)
            known = vendor_id is not None and genai_provider(vendor_id) is not None
            if req == "openrouter" and known:
                out.append((vendor_id, rest, f"priced at {vendor_id}'s list price (no "
                            f"OpenRouter price for {name})"))  # fmt: skip
            elif req in (None, "openai-compatible") and known:
                out.append((vendor_id, rest, None))
            elif req in (None, "openai-compatible", vendor_id):
                out.append((req, rest, None))
        elif req == "openrouter" and (vendor_p := infer_provider(name)) is not None:
            out.append((req, f"{vendor_p.id}/{name}", None))
            out.append((vendor_p.id, name, f"priced at {vendor_p.id}'s list price (no "
                        f"OpenRouter price for {name})"))  # fmt: skip
        if m := _DATED.match(name):
            out.append((req, m.group(1), f"dated snapshot {name} priced as {m.group(1)}"))
        return out

    def _build(
        self,
        req: str | None,
        name: str,
        found: tuple[Provider, ModelInfo] | None,
        entries: tuple[ModelOverride, ...],
    ) -> _Plan:
        from genai_prices.types import ModelPrice, StartDateConstraint, TimeOfDateConstraint

        ov = self.overrides
        provider_id = found[0].id if found else (entries[0].provider or req or "any")
        names = [name, *([found[1].id.lower()] if found else []), *(e.pattern for e in entries)]
        discount = ov.discount_for((req, provider_id), names) if ov else None
        factor = (Fraction(100) - Fraction(discount.percent)) / 100 if discount else Fraction(1)
        pct = discount.percent if discount else None
        defs: list[tuple[PriceSpec, float | None, tuple[float, float] | None, PriceRef]] = []
        if found:
            prov, info = found
            prices = info.prices
            conditional = [(None, prices)] if isinstance(prices, ModelPrice) else [
                (cp.constraint, cp.prices) for cp in prices]  # fmt: skip
            for constraint, model_price in conditional:
                start: float | None = None
                tod: tuple[float, float] | None = None
                effective: dt.date | None = None
                tod_label: str | None = None
                if isinstance(constraint, StartDateConstraint):
                    effective = constraint.start_date
                    start = _to_epoch(effective)
                elif isinstance(constraint, TimeOfDateConstraint):
                    a, b = (_utc_seconds(t) for t in (constraint.start_time, constraint.end_time))
                    tod = (a, b)
                    tod_label = f"{_hhmm(a)}-{_hhmm(b)}Z"
                ref = PriceRef("genai-prices", prov.id, info.id, effective, tod_label, pct)
                defs.append((spec_of(model_price), start, tod, ref))
        for e in entries:
            start = _to_epoch(e.effective) if e.effective else None
            ref = PriceRef(f"override:{ov.path if ov else ''}", e.provider or provider_id,
                           e.pattern, e.effective, None, pct)  # fmt: skip
            defs.append((e.prices, start, None, ref))
        if not all(token_priced(spec) for spec, *_ in defs):
            return _Plan((), None, None, provider_id, note=(
                f"{provider_id}/{found[1].id if found else name} is not priced per token "
                "(e.g. per audio minute or character), which llmspend cannot price"))  # fmt: skip
        windows = []
        for spec, start, tod, ref in defs:
            base, tiers = compile_spec(spec, factor)
            genai = ref.source == "genai-prices"
            status: PriceStatus = "priced" if genai and discount is None else "override"
            windows.append(_Window(start, tod, base, tiers, status, ref, str(ref), spec, factor))
        ordered = tuple(reversed(windows))
        top = ordered[0]
        always = top if top.start is None and top.tod is None else None
        caps = [e.max_output_tokens for e in entries if e.max_output_tokens]
        window = found[1].context_window if found else None
        return _Plan(ordered, windows[0], always, provider_id, None, caps[-1] if caps else None,
                     window)  # fmt: skip


def _utc_seconds(value: dt.time) -> float:
    if value.tzinfo is not None:
        value = dt.datetime.combine(dt.date(1970, 1, 1), value).astimezone(dt.UTC).time()
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


def _hhmm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


_default_books: dict[str | None, PriceBook] = {}
_default_lock = threading.Lock()


def default_pricebook() -> PriceBook:
    """The process-wide :class:`PriceBook` for ``$LLMSPEND_PRICES`` (one per path)."""
    path = os.environ.get("LLMSPEND_PRICES") or None
    book = _default_books.get(path)
    if book is None:
        with _default_lock:
            book = _default_books.get(path)
            if book is None:
                book = _default_books[path] = PriceBook(path)
    return book


def model_output_cap(provider: str | None, model: str) -> int | None:
    """Max output tokens of a model if known (override ``max_output_tokens``), else None."""
    return default_pricebook().output_cap(provider, model)


def history(model: str, provider: str | None = None) -> list[dict[str, Any]]:
    """The effective-dated prices of a model (see :meth:`PriceBook.history`)."""
    return default_pricebook().history(model, provider)
