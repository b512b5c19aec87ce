"""The price book: prices usages exactly, resolving each (provider, model) once.

:class:`PriceBook` caches a :class:`~llmspend.pricing.rates.Plan` per
``(provider, model, response_model)`` and prices every call from it with integer
arithmetic and one half-even rounding to the nanodollar. Results equal
``genai_prices.calc_price`` quantized to 1e-9 USD. Prices are never fetched from the network.
"""

from __future__ import annotations

import datetime as dt
import logging
import numbers
import os
import threading
import time
import warnings
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ..errors import PricingError, UnknownModelWarning
from .overrides import Overrides, load_overrides
from .price import Price, PriceNanos, to_epoch, usd_digits
from .rates import EXTRA, NANOS, Plan, Window, compile_spec, exact_usd
from .resolve import resolve
from .snapshot import normalize_provider, price_at
from .tiers import FREE_APIS, UNPRICED_APIS, normalize_tier, reserve_tier, tier_price

__all__ = ["PriceBook", "default_pricebook", "history", "model_output_cap", "shared_pricebook"]

_log = logging.getLogger("llmspend.pricing")
_log.addHandler(logging.NullHandler())

_SHOWN = {
    "input_mtok": "input_mtok",
    "cache_read_mtok": "cached_input_mtok",
    "cache_write_mtok": "cache_write_mtok",
    "output_mtok": "output_mtok",
    "output_reasoning_mtok": "reasoning_mtok",
}
_UNKNOWN: PriceNanos = (None, "unknown", None)  # the fast path's answer for no price
_now = time.time


def _count(name: str, value: object) -> int:
    """A token count as an int (numpy's integers too), or :class:`PricingError`."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise PricingError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        value = int(value)
    if value < 0:
        raise PricingError(f"{name} must not be negative, got {value}")
    return value


def _check_usage(
    *usage: object,
) -> tuple[int, int, int, int, int]:
    """The usage ``(input, cached, cache write, output, reasoning)`` as ints (numpy
    integers, such as a DataFrame's sums, are taken as ints), or :class:`PricingError`
    explaining what is wrong with it."""
    names = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    ints = []
    for name, value in zip((*names, "reasoning_tokens"), usage, strict=True):
        ints.append(_count(name, value))
    i, c, w, o, r = ints
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
    return i, c, w, o, r


#: The count each of :data:`~llmspend.pricing.rates.EXTRA` is a subset of (its place in
#: ``(input, cached, cache write, output, reasoning)``) and that count's name
_WITHIN = {
    "cache_write_1h_tokens": (2, "cache_write_tokens"),
    "input_audio_tokens": (0, "input_tokens"),
    "cache_audio_read_tokens": (1, "cached_input_tokens"),
    "output_audio_tokens": (3, "output_tokens"),
    "input_image_tokens": (0, "input_tokens"),
    "cache_image_read_tokens": (1, "cached_input_tokens"),
    "output_image_tokens": (3, "output_tokens"),
}
#: (part, whole) among :data:`~llmspend.pricing.rates.EXTRA`
_PART_OF = (
    ("cache_audio_read_tokens", "input_audio_tokens"),
    ("cache_image_read_tokens", "input_image_tokens"),
)


def _check_extra(usage: tuple[int, int, int, int, int], extra: object) -> tuple[int, ...] | None:
    """``extra`` (the counts of :data:`~llmspend.pricing.rates.EXTRA`, ``None``: all 0) as
    ints each within the count it is part of, or :class:`PricingError`."""
    if extra is None:
        return None
    if type(extra) is tuple and len(extra) == len(EXTRA) == 7:  # the usual: consistent ints
        w1h, ia, car, oa, ii, cir, oi = extra
        i, c, w, o, _ = usage
        if (
            type(w1h) is type(ia) is type(car) is type(oa) is int
            and type(ii) is type(cir) is type(oi) is int
            and 0 <= w1h <= w and 0 <= car <= ia <= i and 0 <= cir <= ii <= i
            and car <= c and cir <= c and 0 <= oa <= o and 0 <= oi <= o
        ):  # fmt: skip
            return extra
    if not isinstance(extra, tuple) or len(extra) != len(EXTRA):
        raise PricingError(f"extra must be a tuple of {len(EXTRA)} counts {EXTRA}, got {extra!r}")
    ints = []
    for name, value in zip(EXTRA, extra, strict=True):
        value = _count(name, value)
        at, parent = _WITHIN[name]
        if value > usage[at]:
            raise PricingError(
                f"{name} ({value}) exceeds {parent} ({usage[at]}), which includes it"
            )
        ints.append(value)
    named = dict(zip(EXTRA, ints, strict=True))
    for part, whole in _PART_OF:
        if named[part] > named[whole]:
            raise PricingError(
                f"{part} ({named[part]}) exceeds {whole} ({named[whole]}), which includes it"
            )
    return tuple(ints) if any(ints) else None


def _stamp(path: str | None) -> tuple[int, int] | None:
    """The override file's (mtime, size), to notice that it changed."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable, or not a path (a NUL byte in it)
        return None
    return st.st_mtime_ns, st.st_size


class PriceBook:
    """Prices usages; resolves each (provider, model) once and caches the plan.

    ``tier`` (the service tier a call was served at, ``"batch"`` for Batch API results)
    reprices it (:mod:`~llmspend.pricing.tiers`); ``api`` prices free endpoints at $0 and
    leaves unpriceable ones unknown.

    ``overrides_path`` names a TOML override file (see :mod:`llmspend.pricing.overrides`); it
    is read and validated here, raising :class:`~llmspend.errors.PriceFileError`.
    Thread-safe.
    """

    def __init__(self, overrides_path: str | os.PathLike[str] | None = None) -> None:
        self.overrides_path = os.fspath(overrides_path) if overrides_path is not None else None
        self._lock = threading.RLock()
        self._warned: set[tuple[Any, Any]] = set()
        self.reload()

    def reload(self) -> None:
        """Read the override file again and forget every resolved price (thread-safe).

        Raises :class:`~llmspend.errors.PriceFileError` for a bad file, keeping the prices
        in force before.
        """
        with self._lock:
            path = self.overrides_path
            stamp = _stamp(path)
            overrides = load_overrides(path) if path else None
            self.overrides: Overrides | None = overrides
            self._stamp = stamp
            # new dicts, not cleared ones: a reader without the lock sees old or new plans
            self._plans: dict[tuple[Any, Any, Any], Plan] = {}
            self._tier_windows: dict[tuple[Any, ...], tuple[Window, Window]] = {}
            self._tier_memo: dict[tuple[Any, ...], tuple[Window, Window]] = {}

    def file_changed(self) -> bool:
        """Whether the override file changed on disk since it was read."""
        return self.overrides_path is not None and _stamp(self.overrides_path) != self._stamp

    def forget_warnings(self) -> None:
        """Warn again about each unknown model (once more per model)."""
        with self._lock:
            self._warned = set()

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
        tier: str | None = None,
        api: str | None = None,
        extra: tuple[int, ...] | None = None,
    ) -> PriceNanos:
        """Fast path: ``(total nanodollars or None, status, ref string or None)``.
        ``extra``: the counts of :data:`~llmspend.pricing.rates.EXTRA` (``None``: all 0)."""
        if api is not None and (api in FREE_APIS or api in UNPRICED_APIS):
            return (0, "priced", f"llmspend:free-endpoint/{api}") if api in FREE_APIS else _UNKNOWN
        plan = self._plans.get((provider, model, response_model))
        if plan is None:
            plan = self._plan(provider, model, response_model, 3)
        i, c, w = input_tokens, cached_input_tokens, cache_write_tokens
        o, r = output_tokens, reasoning_tokens
        ints = type(i) is type(c) is type(w) is type(o) is type(r) is int
        if not (ints and c >= 0 and w >= 0 and r >= 0 and c + w <= i and r <= o):
            i, c, w, o, r = _check_usage(i, c, w, o, r)
        if extra is not None:
            extra = _check_extra((i, c, w, o, r), extra)
        win = plan.always
        if win is None:
            if plan.first is None:
                if (provider, model) not in self._warned:  # warned once per tracker
                    self._plan(provider, model, response_model, 3)
                return _UNKNOWN
            win = plan.window(at_epoch_seconds)
        if tier is not None:
            win = self._tiered(provider, model, plan, win, tier, at_epoch_seconds)
        return win.rates(i).nanos(i, c, w, o, r, extra), win.status, win.ref_str

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
        tier: str | None = None,
        cache_write_1h_tokens: int = 0,
        input_audio_tokens: int = 0,
        cache_audio_read_tokens: int = 0,
        output_audio_tokens: int = 0,
        input_image_tokens: int = 0,
        cache_image_read_tokens: int = 0,
        output_image_tokens: int = 0,
    ) -> Price:
        """Price a usage as of ``at`` (naive datetimes are UTC; ``None`` = now), served at
        ``tier`` (``None``: standard). The parts priced at their own rates are those of
        ``llmspend.price`` (:data:`~llmspend.pricing.rates.EXTRA`)."""
        extra = (cache_write_1h_tokens, input_audio_tokens, cache_audio_read_tokens,
                 output_audio_tokens, input_image_tokens, cache_image_read_tokens,
                 output_image_tokens)  # fmt: skip
        return self.quote(model, provider, input_tokens, cached_input_tokens,
                          cache_write_tokens, output_tokens, reasoning_tokens, at,
                          response_model, tier, extra if any(extra) else None)  # fmt: skip

    def quote(
        self,
        model: str,
        provider: str | None,
        i: int,
        c: int,
        w: int,
        o: int,
        r: int,
        at: dt.datetime | dt.date | str | None = None,
        response_model: str | None = None,
        tier: str | None = None,
        extra: tuple[int, ...] | None = None,
    ) -> Price:
        """:meth:`price` with positional usage (input, cached, cache write, output, reasoning)
        and ``extra``, the counts of :data:`~llmspend.pricing.rates.EXTRA` (``None``: all 0).

        The public ``llmspend.price`` path: after a model's first call it is one dict
        look-up, the integer rates of the window in force, and the three Decimals made
        from integers (:func:`~llmspend.pricing.rates.usd_digits`).
        """
        if not (type(i) is type(c) is type(w) is type(o) is type(r) is int
                and c >= 0 and w >= 0 and r >= 0 and c + w <= i and r <= o):  # fmt: skip
            i, c, w, o, r = _check_usage(i, c, w, o, r)
        if extra is not None:
            extra = _check_extra((i, c, w, o, r), extra)
        epoch = _now() if at is None else to_epoch(at)
        try:
            plan = self._plans.get((provider, model, response_model))
        except TypeError:  # unhashable junk: rejected by _plan
            plan = None
        if plan is None:
            plan = self._plan(provider, model, response_model, 4)
        win = plan.always
        if win is None:
            if plan.first is None:
                if (provider, model) not in self._warned:  # warned once per tracker
                    self._plan(provider, model, response_model, 4)
                shown = provider if provider is not None else plan.provider
                return Price(model, shown, None, None, None, "unknown", None, None, plan.note)
            win = plan.window(epoch)
        if tier is not None:
            win = self._tiered(provider, model, plan, win, tier, epoch)
        rt = win.rates(i)
        nanos = rt.nanos(i, c, w, o, r, extra)
        a, b = rt.inp, rt.out
        inp = a[0] * i + a[1] * c + a[2] * w + a[3] * o + a[4] * r + a[5]
        out = b[0] * i + b[1] * c + b[2] * w + b[3] * o + b[4] * r + b[5]
        if extra:
            inp += sum(k * x for k, x in zip(a[6:], extra, strict=True))
            out += sum(k * x for k, x in zip(b[6:], extra, strict=True))
        shown = provider if provider is not None else plan.provider
        if rt.io_scale:  # the Decimals are made when first read (Price.from_units)
            scale = rt.io_scale
            return Price.from_units(model, shown, inp * scale, out * scale, rt.io_exp + 9,
                                    win.status, win.ref, nanos, plan.note)  # fmt: skip
        return Price(model, shown, exact_usd(Fraction(inp, rt.io_den)),  # pragma: no cover
                     exact_usd(Fraction(out, rt.io_den)), usd_digits(nanos, 9), win.status,
                     win.ref, nanos, plan.note)  # fmt: skip

    def worst_case_nanos(
        self,
        provider: str | None,
        model: str,
        input_tokens: int,
        output_tokens: int,
        at_epoch: float,
        tier: str | None = None,
        api: str | None = None,
    ) -> int | None:
        """An upper bound in nanodollars for a call, or ``None`` for an unknown model (or
        an endpoint that cannot be priced).

        Every input token at the dearest input rate (uncached input, or cache writes, 1-hour
        ones included, where those cost more), every output token at the dearest output
        rate (reasoning where that costs more), at the tier ``input_tokens`` reaches, plus
        per-request fees; rounded up. ``tier``: the service tier the request asks for
        (``None``: standard); with ``api``, a request that leaves the tier to the provider
        (``"auto"``) is priced at the dearest it may be served at
        (:func:`~llmspend.pricing.tiers.reserve_tier`).
        """
        i, o = input_tokens, output_tokens
        if not (type(i) is type(o) is int and i >= 0 and o >= 0):
            i, _, _, o, _ = _check_usage(i, 0, 0, o, 0)
        if api is not None and (api in FREE_APIS or api in UNPRICED_APIS):
            return 0 if api in FREE_APIS else None
        plan = self._plan(provider, model, None, 3)
        if plan.first is None:
            return None
        win = plan.window(at_epoch)
        if api is not None:
            tier = reserve_tier(provider, api, tier)
        if tier is not None:
            win = self._tiered(provider, model, plan, win, tier, at_epoch)
        rt = win.rates(input_tokens)
        num = rt.worst_in * input_tokens + rt.worst_out * output_tokens + rt.k0
        return -(-num // rt.den)

    def _tiered(
        self, provider: str | None, model: str, plan: Plan, win: Window, tier: str, epoch: float
    ) -> Window:
        """``win`` repriced for ``tier`` (``win`` itself for a standard or unpriced tier).

        Remembered per minute: tier entries take effect on dates and genai-prices' variant
        constraints on whole minutes, so every moment of one minute has the same answer.
        """
        key = (id(win), tier, provider, model, int(epoch // 60))
        memo = self._tier_memo.get(key)
        if memo is not None and memo[0] is win:
            return memo[1]
        found = self._tier_window(provider, model, plan, win, tier, epoch)
        memos = self._tier_memo
        if len(memos) > 4096:
            memos = self._tier_memo = {}  # a new dict: a reader without the lock sees either
        memos[key] = (win, found)
        return found

    def _tier_window(
        self, provider: str | None, model: str, plan: Plan, win: Window, tier: str, epoch: float
    ) -> Window:
        name = normalize_tier(tier)
        if name is None:
            return win
        ref = win.ref
        listed = ref.source == "genai-prices"
        provs = (normalize_provider(provider), plan.provider, ref.provider)
        names = [model.strip().lower(), ref.model.lower()]
        tp = tier_price(self.overrides, provs, names, (ref.provider, ref.model) if listed else None,
                        name, epoch)  # fmt: skip
        if tp is None:
            return win
        key = (id(win), name, tp.source, tp.multiplier, repr(tp.prices))
        done = self._tier_windows.get(key)
        if done is not None and done[0] is win:
            return done[1]
        spec = tp.spec(win.spec)
        factor = win.factor * (Fraction(tp.multiplier) if tp.multiplier is not None else 1)
        base, tiers = compile_spec(spec, factor)
        status: Any = "override" if tp.user or win.status == "override" else "priced"
        mult = f" x{tp.multiplier}" if tp.multiplier is not None else ""
        via = "override" if tp.user else "tiers.toml"
        via = "genai-prices" if tp.source == "genai-prices" else via
        ref_str = f"{win.ref_str} tier={name}{mult} ({via})"[:200]
        tiered = Window(win.start, win.tod, base, tiers, status, ref, ref_str, spec, factor)
        with self._lock:
            if len(self._tier_windows) > 4096:
                self._tier_windows.clear()
            self._tier_windows[key] = (win, tiered)
        return tiered

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
        current = plan.window(to_epoch(at))
        rows = []
        for win in reversed(plan.windows):

            def usd(value: Any, above: int | None = None, win: Window = win) -> Decimal:
                return exact_usd(Fraction(price_at(value, above)) * NANOS * win.factor)

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
            starts = sorted({t.start for v in win.spec.values() if not isinstance(v, Decimal)
                             for t in v.tiers})  # fmt: skip
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
    def _plan(self, provider: Any, model: Any, response_model: Any, stacklevel: int) -> Plan:
        key = (provider, model, response_model)
        try:
            plan = self._plans.get(key)  # a plan once made never changes: no lock to read it
        except TypeError:  # unhashable junk (e.g. a signaling NaN): rejected below
            plan = None
        if plan is not None and (plan.first is not None or (provider, model) in self._warned):
            return plan
        with self._lock:
            for name, value in (("model", model), ("provider", provider),
                                ("response_model", response_model)):  # fmt: skip
                if not (isinstance(value, str) or (value is None and name != "model")):
                    raise PricingError(f"{name} must be a string, got {type(value).__name__}")
            plan = self._plans.get(key)
            if plan is None:  # else made by another thread meanwhile, or warned again
                plan = resolve(self.overrides, provider, model, response_model)
                self._plans[key] = plan
            if plan.first is None and (provider, model) not in self._warned:
                self._warned.add((provider, model))
                if model in ("", "unknown"):  # no model named (``Call`` says "unknown"; a
                    return plan  # batch not bounded here): nothing to add to a price file
                msg = (
                    f"llmspend has no price for model {model!r} (provider {provider!r}); its "
                    "cost is recorded as unknown. Add it to a price-override file "
                    "($LLMSPEND_PRICES)." + (f" ({plan.note})" if plan.note else "")
                )
                _log.warning(msg)
                warnings.warn(msg, UnknownModelWarning, stacklevel=stacklevel)
            return plan


_shared: dict[str | None, PriceBook] = {}
_shared_lock = threading.Lock()


def shared_pricebook(path: str | None, *, fresh_warnings: bool = False) -> PriceBook:
    """The process-wide :class:`PriceBook` for the override file ``path`` (one per path).

    ``llmspend.price()`` and every tracker use it, so a :meth:`PriceBook.reload` reaches
    both. ``fresh_warnings`` (a tracker taking the book) re-reads the file if it changed
    since it was read and warns again about unknown models (once per model per tracker).
    """
    book = _shared.get(path)
    if book is None:
        with _shared_lock:
            book = _shared.get(path)
            if book is None:
                book = _shared[path] = PriceBook(path)
                return book
    if fresh_warnings:
        if book.file_changed():
            book.reload()
        book.forget_warnings()
    return book


def default_pricebook() -> PriceBook:
    """The process-wide :class:`PriceBook` for ``$LLMSPEND_PRICES`` (one per path)."""
    if _ENV_DATA is not None:  # fast path: the raw value keys the book already found for it
        raw = _ENV_DATA.get(_ENV_KEY)
        book = _by_raw_env.get(raw)
        if book is not None:
            return book
    path = os.environ.get("LLMSPEND_PRICES") or None
    book = shared_pricebook(path)
    if _ENV_DATA is not None:
        _by_raw_env[_ENV_DATA.get(_ENV_KEY)] = book
    return book


# Reading os.environ costs ~0.3 µs (1.5 µs on a loaded machine), more than pricing a
# call. Invariant: os.environ._data maps encodekey(name) to the raw value and os.environ
# keeps it in step with every change made through it (tests/test_pricing_standalone.py
# fails if not); the raw value is only a cache key here, never decoded.
_ENV_DATA: dict[Any, Any] | None = getattr(os.environ, "_data", None)
_encode = getattr(os.environ, "encodekey", None)
_ENV_KEY: Any = _encode("LLMSPEND_PRICES") if _encode is not None else None
if _encode is None or not isinstance(_ENV_DATA, dict):  # pragma: no cover - not CPython
    _ENV_DATA = None
_by_raw_env: dict[Any, PriceBook] = {}


def model_output_cap(provider: str | None, model: str) -> int | None:
    """Max output tokens of a model if known (override ``max_output_tokens``), else None."""
    return default_pricebook().output_cap(provider, model)


def history(model: str, provider: str | None = None) -> list[dict[str, Any]]:
    """The effective-dated prices of a model (see :meth:`PriceBook.history`)."""
    return default_pricebook().history(model, provider)
