"""Exact integer rates, and the plan that prices one (provider, model).

A :data:`~llmspend.pricing.snapshot.PriceSpec` compiles into :class:`Rates`: nanodollars
per token over a common denominator, so tiers, date windows and discounts stay exact and a
call is priced with integer arithmetic and one rounding. A :class:`Plan` holds a model's
effective-dated :class:`Window` s, each with its base rates and long-context :class:`Tier` s.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

from .overrides import ModelOverride, Overrides
from .price import PriceRef, PriceStatus, to_epoch, usd_digits
from .snapshot import PriceSpec, genai, price_at
from .table import Model, Provider

__all__ = [
    "EXTRA",
    "Plan",
    "Rates",
    "Tier",
    "Window",
    "build_plan",
    "compile_spec",
    "exact_usd",
    "token_priced",
    "unsplit_note",
    "with_note",
]

NANOS = 10**9
_DAY = 86400.0
#: Subsets of the five counts that price data may price apart, in the order of an ``extra``
#: tuple (:meth:`Rates.nanos`): each is a genai-prices usage key and the
#: :class:`~llmspend.call.Usage` field of the same name.
EXTRA = (
    "cache_write_1h_tokens",
    "input_audio_tokens",
    "cache_audio_read_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "cache_image_read_tokens",
    "output_image_tokens",
)
_CONST = 5  # the vectors' place of per-request fees
#: genai-prices usage keys → their place in the rate vectors (extras after the constant)
_VAR = {
    "input_tokens": 0,
    "cache_read_tokens": 1,
    "cache_write_tokens": 2,
    "output_tokens": 3,
    "output_reasoning_tokens": 4,
    **{key: _CONST + 1 + j for j, key in enumerate(EXTRA)},
}
_N = _CONST + 1 + len(EXTRA)
#: What one input (output) token may be, as the vector places it counts in: the worst case
#: of a token is the dearest of these sums of coefficients (:attr:`Rates.worst_in`).
_IN_KINDS = (
    (0,), (0, 1), (0, 2), (0, 2, _VAR["cache_write_1h_tokens"]),
    (0, _VAR["input_audio_tokens"]),
    (0, 1, _VAR["input_audio_tokens"], _VAR["cache_audio_read_tokens"]),
    (0, _VAR["input_image_tokens"]),
    (0, 1, _VAR["input_image_tokens"], _VAR["cache_image_read_tokens"]),
)  # fmt: skip
_OUT_KINDS = ((3,), (3, 4), (3, _VAR["output_audio_tokens"]), (3, _VAR["output_image_tokens"]))


@dataclass(frozen=True, slots=True)
class Rates:
    """Linear rates over (input, cached, cache-write, output, reasoning, 1, *extras):
    nanos = k·x / den. ``inp`` and ``out`` are in that order too (the constant at 5)."""

    ki: int
    kc: int
    kw: int
    ko: int
    kr: int
    k0: int
    den: int
    inp: tuple[int, ...]  # the input-direction part, nanos = inp·x / io_den
    out: tuple[int, ...]  # the output-direction part, nanos = out·x / io_den
    io_den: int
    kx: tuple[int, ...]  # the coefficients of :data:`EXTRA`
    #: the dearest input (output) token's coefficient sum, for worst cases (over ``den``)
    worst_in: int
    worst_out: int
    #: ``io_den`` as a power of ten: nanos = inp·x · io_scale / 10**io_exp, so that
    #: ``Price.input_usd`` needs no division (see :func:`usd_digits`); ``io_scale`` 0: no
    #: such power (not reachable with decimal prices; then :func:`exact_usd` is used)
    io_scale: int = 0
    io_exp: int = 0

    def nanos(
        self, i: int, c: int, w: int, o: int, r: int, extra: tuple[int, ...] | None = None
    ) -> int:
        """The cost of a usage in nanodollars, rounded half to even; ``extra``: the counts
        of :data:`EXTRA` (``None``: all 0)."""
        num = self.ki * i + self.kc * c + self.kw * w + self.ko * o + self.kr * r + self.k0
        if extra:
            num += sum(map(operator.mul, self.kx, extra))
        den = self.den
        if den == 1:
            return num
        q, rem = divmod(num, den)
        if 2 * rem > den or (2 * rem == den and q & 1):
            q += 1
        return q


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates for the whole request when it has more than ``above_input_tokens`` input."""

    above_input_tokens: int
    rates: Rates


def compile_spec(spec: PriceSpec, factor: Fraction) -> tuple[Rates, tuple[Tier, ...]]:
    """Base rates and tiers (highest first) for a price, times ``factor`` (a discount).

    genai-prices' leaf decomposition (``calc_unit_price``): a unit's count is its usage
    minus the usage its priced descendants already bill.
    """
    all_units = genai().units
    units = [(all_units[k], v) for k, v in spec.items() if k in all_units]
    order = sorted(
        (u for u, _ in units if u.usage_key != "requests"),
        key=lambda u: (-len(u.dimensions), u.usage_key),
    )
    leaf: dict[str, tuple[int, ...]] = {}
    for unit in order:  # a unit's leaf count = its count minus its priced descendants' leaves
        vec = [0] * _N
        if unit.usage_key in _VAR:
            vec[_VAR[unit.usage_key]] = 1
        for other in order:
            if other is not unit and unit.dimensions.items() <= other.dimensions.items():
                vec = [a - b for a, b in zip(vec, leaf[other.usage_key], strict=True)]
        leaf[unit.usage_key] = tuple(vec)
    leaf["requests"] = tuple(int(j == _CONST) for j in range(_N))

    def rates(above: int | None) -> Rates:
        tot, inp, out = [Fraction(0)] * _N, [Fraction(0)] * _N, [Fraction(0)] * _N
        for unit, value in units:
            rate = Fraction(price_at(value, above)) * NANOS * factor / unit.per
            direction = unit.dimensions.get("direction")
            for j, count in enumerate(leaf[unit.usage_key]):
                if count:
                    tot[j] += rate * count
                    if direction == "input":
                        inp[j] += rate * count
                    elif direction == "output":
                        out[j] += rate * count
        den = math.lcm(*(f.denominator for f in tot))
        k = [int(f * den) for f in tot]
        io_den = math.lcm(*(f.denominator for f in (*inp, *out)))
        ins, outs = (tuple(int(f * io_den) for f in part) for part in (inp, out))
        exp = _decimal_exponent(io_den)
        scale = 0 if exp is None else 10**exp // io_den
        worst_in = max(sum(k[j] for j in kind) for kind in _IN_KINDS)
        worst_out = max(sum(k[j] for j in kind) for kind in _OUT_KINDS)
        return Rates(k[0], k[1], k[2], k[3], k[4], k[_CONST], den, ins, outs, io_den,
                     tuple(k[_CONST + 1:]), worst_in, worst_out, scale, exp or 0)  # fmt: skip

    starts = {t.start for _, v in units if not isinstance(v, Decimal) for t in v.tiers}
    return rates(None), tuple(Tier(t, rates(t)) for t in sorted(starts, reverse=True))


def token_priced(spec: PriceSpec) -> bool:
    """Whether llmspend's token counts can price this spec (not only per minute/page...).
    An empty spec (genai-prices lists the model with no price keys) is a free model."""
    return any(k in spec for k in ("input_mtok", "output_mtok", "requests_kcount"))


def _decimal_exponent(den: int) -> int | None:
    """The least ``k`` with ``den`` dividing ``10**k``, None if there is none."""
    rest, twos, fives = den, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    return max(twos, fives) if rest == 1 else None


def exact_usd(nanos: Fraction) -> Decimal:
    """``nanos / 1e9`` as an exact Decimal (rates have power-of-ten denominators)."""
    num, den = nanos.numerator, nanos.denominator * NANOS
    k = _decimal_exponent(den)
    if k is None:  # pragma: no cover - not reachable with decimal prices
        return Decimal(num) / Decimal(den)
    return usd_digits(num * (10**k // den), k)


# -- plans ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """One price in force from ``start`` (epoch s) and/or during ``tod`` (UTC day seconds)."""

    start: float | None
    tod: tuple[float, float] | None
    base: Rates
    tiers: tuple[Tier, ...]  # highest ``above_input_tokens`` first
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
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens:
                return tier.rates
        return self.base


@dataclass(frozen=True, slots=True)
class Plan:
    """A resolved (provider, model): its windows, highest precedence first."""

    windows: tuple[Window, ...]
    first: Window | None  # genai-prices' fallback when no window is active; None = unknown
    always: Window | None  # the window when no selection by time is needed
    provider: str | None
    note: str | None = None
    max_output_tokens: int | None = None
    context_window: int | None = None

    def window(self, epoch: float) -> Window:
        if self.always is not None:
            return self.always
        for window in self.windows:
            if window.active(epoch):
                return window
        assert self.first is not None
        return self.first


def with_note(plan: Plan, note: str | None) -> Plan:
    """``plan`` with ``note`` put before its own note."""
    if not note:
        return plan
    return dataclasses.replace(plan, note=f"{note}; {plan.note}" if plan.note else note)


class _Def(NamedTuple):
    """One price before compiling: its spec, when it is in force, and where it came from."""

    spec: PriceSpec
    start: float | None
    tod: tuple[float, float] | None
    ref: PriceRef


def build_plan(
    overrides: Overrides | None,
    req: str | None,
    name: str,
    found: tuple[Provider, Model] | None,
    entries: tuple[ModelOverride, ...],
) -> Plan:
    """The plan for a model genai-prices ``found`` and/or override ``entries`` price."""
    ov = overrides
    provider_id = found[0].id if found else (entries[0].provider or req or "any")
    names = [name, *([found[1].id.lower()] if found else []), *(e.pattern for e in entries)]
    discount = ov.discount_for((req, provider_id), names) if ov else None
    factor = (Fraction(100) - Fraction(discount.percent)) / 100 if discount else Fraction(1)
    pct = discount.percent if discount else None
    defs: list[_Def] = []
    if found:
        prov, info = found
        for price in info.prices:
            start = to_epoch(price.start) if price.start is not None else None
            tod = price.tod
            tod_label = f"{_hhmm(tod[0])}-{_hhmm(tod[1])}Z" if tod is not None else None
            ref = PriceRef("genai-prices", prov.id, info.id, price.start, tod_label, pct)
            defs.append(_Def(price.spec, start, tod, ref))
    for e in entries:
        start = to_epoch(e.effective) if e.effective else None
        ref = PriceRef(f"override:{ov.path if ov else ''}", e.provider or provider_id,
                       e.pattern, e.effective, None, pct)  # fmt: skip
        defs.append(_Def(e.prices, start, None, ref))
    if not all(token_priced(d.spec) or not d.spec for d in defs):  # no price keys: free
        return Plan((), None, None, provider_id, note=(
            f"{provider_id}/{found[1].id if found else name} is not priced per token "
            "(e.g. per audio minute or character), which llmspend cannot price"))  # fmt: skip
    windows = []
    for d in defs:
        base, tiers = compile_spec(d.spec, factor)
        listed = d.ref.source == "genai-prices"
        status: PriceStatus = "priced" if listed and discount is None else "override"
        windows.append(Window(d.start, d.tod, base, tiers, status, d.ref, str(d.ref), d.spec,
                              factor))  # fmt: skip
    ordered = tuple(reversed(windows))
    top = ordered[0]
    always = top if top.start is None and top.tod is None else None
    caps = [e.max_output_tokens for e in entries if e.max_output_tokens]
    window = found[1].context_window if found else None
    note = unsplit_note((d.spec for d in defs), found[1].id if found else name)
    return Plan(ordered, windows[0], always, provider_id, note, caps[-1] if caps else None,
                window)  # fmt: skip


#: Price keys of genai-prices that llmspend's token counts cannot reach, and what they
#: price. Calls using them are recorded at the text rates.
_UNSPLIT = {
    "input_video_mtok": "video input",
    "output_video_mtok": "video output",
    "output_citation_mtok": "citation",
}


def unsplit_note(specs: Iterable[PriceSpec], model: str = "") -> str | None:
    """The note for a model whose price data has rates llmspend does not apply (video and
    citation tokens), or that is a Claude model with cache writes but no 1-hour cache-write
    rate (1-hour writes are then priced at the 5-minute rate), or ``None``: so that
    ``price()`` and ``llmspend prices`` say such calls are recorded below the bill."""
    keys: set[str] = set()
    for spec in specs:
        keys.update(spec)
    kinds = [what for key, what in _UNSPLIT.items() if key in keys]
    parts = [f"{', '.join(kinds)} tokens at the text rates"] if kinds else []
    if (
        "claude" in model.lower()
        and "cache_write_mtok" in keys
        and "cache_write_1h_mtok" not in keys
    ):
        parts.append("1-hour cache writes at the 5-minute rate (no 1-hour rate in the price data)")
    if not parts:
        return None
    return "priced below the provider's bill when the call has them: " + "; ".join(parts)


def _hhmm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"
