"""genai-prices' data as pricing reads it: a compact table, cached on disk.

Importing genai-prices' data builds and validates it with pydantic (~0.1 s), most of
what a process's first price cost. The :class:`Table` keeps only what llmspend prices
from: the providers in data order (match clauses, fallbacks), each model's id, match,
context window, prices (start date or UTC time of day, and a :data:`PriceSpec`) and price
variants, and the units. It is built from the installed genai-prices (:func:`build`) and
saved as JSON in the user's cache directory, keyed by genai-prices' data files and this
module's :data:`FORMAT`, under a CRC-32 of its content; a cache that is missing, stale,
unreadable or corrupt (any byte changed) is rebuilt, one that cannot be written is
skipped (:func:`load`). Nothing is downloaded.

Invariant: a :class:`Provider`'s ``find_model`` and a :class:`Clause`'s ``is_match`` answer
exactly as genai-prices' own do (tests/test_pricing_cache.py checks every model).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import sys
import threading
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import user_cache_dir

if TYPE_CHECKING:
    from genai_prices.types import ModelPrice

__all__ = [
    "FORMAT",
    "Clause",
    "Model",
    "PriceDef",
    "PriceSpec",
    "Provider",
    "Table",
    "TierPrice",
    "Tiered",
    "Unit",
    "build",
    "cache_path",
    "data_key",
    "load",
    "spec_of",
    "utc_seconds",
]

#: The table's layout version: part of the cache key, bumped whenever the layout changes.
FORMAT = 2
_DATA_FILES = ("data.py", "data_units.py")


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


class Clause:
    """A genai-prices match clause (``contains``, ``regex``, ``or``...), matched as it does."""

    __slots__ = ("arg", "kind", "low")

    def __init__(self, kind: str, arg: str | tuple[Clause, ...]) -> None:
        self.kind, self.arg = kind, arg
        self.low = arg.lower() if isinstance(arg, str) else ""

    def is_match(self, text: str) -> bool:
        kind, arg = self.kind, self.arg
        if kind == "or":
            return any(c.is_match(text) for c in arg)  # type: ignore[union-attr]
        if kind == "and":
            return all(c.is_match(text) for c in arg)  # type: ignore[union-attr]
        if kind == "regex":
            return bool(re.search(arg, text))  # type: ignore[arg-type]
        low = text.lower()
        if kind == "contains":
            return self.low in low
        if kind == "starts_with":
            return low.startswith(self.low)
        if kind == "ends_with":
            return low.endswith(self.low)
        return low == self.low  # equals

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Clause) and (self.kind, self.arg) == (other.kind, other.arg)

    def __hash__(self) -> int:
        return hash((self.kind, self.arg))

    def __repr__(self) -> str:
        return f"Clause({self.kind!r}, {self.arg!r})"


class PriceDef(NamedTuple):
    """One price of a model (or variant): in force from ``start`` (a UTC date) or during
    ``tod`` (UTC seconds of the day, end exclusive), else always."""

    start: dt.date | None
    tod: tuple[float, float] | None
    spec: PriceSpec

    def active(self, when: dt.datetime) -> bool:
        """Whether in force at ``when`` (aware), as genai-prices' constraints decide."""
        if self.start is not None:
            return when.astimezone(dt.UTC).date() >= self.start
        if self.tod is not None:
            sec, (a, b) = utc_seconds(when.astimezone(dt.UTC).time()), self.tod
            return (sec >= a or sec < b) if b < a else a <= sec < b
        return True


class Variant(NamedTuple):
    """A price variant: the request context it is for (``{"processing": "batch"}``...)."""

    when: dict[str, str]
    price: PriceDef


class Model:
    """A genai-prices model: its prices in data order (later ones take precedence).

    From the cache, ``prices`` and ``variants`` are decoded when first read.
    """

    __slots__ = ("_prices", "_raw", "_variants", "context_window", "id", "match")

    def __init__(
        self,
        id: str,
        match: Clause,
        context_window: int | None,
        prices: tuple[PriceDef, ...] | None,
        variants: tuple[Variant, ...] | None,
        raw: Any = None,
    ) -> None:
        self.id, self.match, self.context_window = id, match, context_window
        self._prices, self._variants, self._raw = prices, variants, raw

    @property
    def prices(self) -> tuple[PriceDef, ...]:
        if self._prices is None:
            self._prices = tuple(_dec_price(d) for d in self._raw[0])
        return self._prices

    @property
    def variants(self) -> tuple[Variant, ...]:
        if self._variants is None:
            self._variants = tuple(Variant(when, _dec_price(v)) for when, v in self._raw[1])
        return self._variants

    def is_match(self, model_ref: str) -> bool:
        return self.match.is_match(model_ref.lower())

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.match, self.context_window, self.prices, self.variants)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Model({self.id!r})"


class Provider:
    """A genai-prices provider and its models, found as genai-prices finds them.

    From the cache, ``models`` is decoded when first read (most lookups read one provider).
    """

    __slots__ = ("_models", "_raw", "fallback_model_providers", "id", "model_match",
                 "provider_match")  # fmt: skip

    def __init__(
        self,
        id: str,
        model_match: Clause | None,
        provider_match: Clause | None,
        fallback_model_providers: tuple[str, ...] | None,
        models: tuple[Model, ...] | None,
        raw: str | None = None,
    ) -> None:
        self.id, self.model_match, self.provider_match = id, model_match, provider_match
        self.fallback_model_providers = fallback_model_providers
        self._models, self._raw = models, raw

    @property
    def models(self) -> tuple[Model, ...]:
        if self._models is None:  # two threads may both decode: the same models either way
            assert self._raw is not None
            self._models = tuple(
                Model(mid, _dec_clause(match), cw, None, None, (defs, variants))  # type: ignore[arg-type]
                for mid, match, cw, defs, variants in json.loads(self._raw)
            )
        return self._models

    def _key(self) -> tuple[Any, ...]:
        return (self.id, self.model_match, self.provider_match, self.fallback_model_providers,
                self.models)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Provider) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Provider({self.id!r})"

    def find_model(self, model_ref: str, *, all_providers: Any = None) -> Model | None:
        """genai-prices' ``Provider.find_model``: the first model matching, then the
        fallback providers' (one step), then the same for a compact date made dashed."""
        model_ref = model_ref.lower()
        if model := self._match_model(model_ref, all_providers):
            return model
        normalized = _COMPACT_DATE.sub(_dashed, model_ref)
        if normalized != model_ref:
            return self._match_model(normalized, all_providers)
        return None

    def _match_model(self, model_ref: str, all_providers: Any) -> Model | None:
        for model in self.models:
            if model.is_match(model_ref):
                return model
        if self.fallback_model_providers and all_providers:
            for provider_id in self.fallback_model_providers:
                provider = next((p for p in all_providers if p.id == provider_id), None)
                if provider and (model := provider._match_model(model_ref, None)):
                    return model
        return None


_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _dashed(match: re.Match[str]) -> str:
    year, month, day = (int(match.group(i)) for i in range(2, 5))
    try:
        dt.date(year, month, day)
    except ValueError:
        return match.group(0)
    return f"{match.group(1)}{year:04d}-{month:02d}-{day:02d}"


class Unit(NamedTuple):
    """A genai-prices unit: the usage it counts, per how many, and its dimensions."""

    usage_key: str
    price_key: str
    per: int
    dimensions: dict[str, str]


@dataclass(frozen=True, slots=True)
class Table:
    """genai-prices' providers (in data order), by id, and units by price key."""

    providers: tuple[Provider, ...]
    by_id: dict[str, Provider]
    units: dict[str, Unit]


def utc_seconds(value: dt.time) -> float:
    """A time of day (naive = UTC) as UTC seconds since midnight."""
    if value.tzinfo is not None:
        value = dt.datetime.combine(dt.date(1970, 1, 1), value).astimezone(dt.UTC).time()
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


# -- the full path: from genai-prices' own objects ---------------------------------------


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


def build() -> Table:
    """The table from the installed genai-prices' data (~0.1 s: imports and validates it)."""
    _defer_package_init()
    from genai_prices.data import providers
    from genai_prices.data_units import unit_data
    from genai_prices.types import ModelPrice, StartDateConstraint, TimeOfDateConstraint
    from genai_prices.units import UnitRegistry

    def clause(c: Any) -> Clause | None:
        if c is None:
            return None
        (kind, arg), = c.__dict__.items()  # fmt: skip
        kind = kind.rstrip("_")
        parts = tuple(c for c in map(clause, arg) if c) if kind in ("or", "and") else arg
        return Clause(kind, parts)

    def price(constraint: Any, model_price: Any) -> PriceDef:
        if isinstance(constraint, StartDateConstraint):
            return PriceDef(constraint.start_date, None, spec_of(model_price))
        if isinstance(constraint, TimeOfDateConstraint):
            tod = (utc_seconds(constraint.start_time), utc_seconds(constraint.end_time))
            return PriceDef(None, tod, spec_of(model_price))
        assert constraint is None, constraint
        return PriceDef(None, None, spec_of(model_price))

    def model(m: Any) -> Model:
        prices = m.prices
        conditional = [(None, prices)] if isinstance(prices, ModelPrice) else [
            (cp.constraint, cp.prices) for cp in prices]  # fmt: skip
        variants = tuple(Variant(dict(v.when), price(v.constraint, v.prices))
                         for v in m.price_variants or ())  # fmt: skip
        defs = tuple(price(c, p) for c, p in conditional)
        return Model(m.id, clause(m.match), m.context_window, defs, variants)  # type: ignore[arg-type]

    provs = tuple(
        Provider(
            p.id,
            clause(p.model_match),
            clause(p.provider_match),
            tuple(p.fallback_model_providers) if p.fallback_model_providers else None,
            tuple(model(m) for m in p.models),
        )
        for p in providers
    )
    registry = UnitRegistry(unit_data)
    units = {u.price_key: Unit(u.usage_key, u.price_key, u.per, dict(u.dimensions))
             for u in registry.units.values()}  # fmt: skip
    return Table(provs, {p.id: p for p in provs}, units)


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


# -- the cache: the table as JSON ---------------------------------------------------------


def _enc_spec(spec: PriceSpec) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Decimal) else [str(v.base), [[t.start, str(t.price)]
            for t in v.tiers]] for k, v in spec.items()}  # fmt: skip


def _enc_price(p: PriceDef) -> list[Any]:
    return [p.start.isoformat() if p.start else None, p.tod, _enc_spec(p.spec)]


def _enc_clause(c: Clause | None) -> Any:
    if c is None:
        return None
    return [c.kind, c.arg if isinstance(c.arg, str) else [_enc_clause(x) for x in c.arg]]


def _encode(table: Table, key: str) -> str:
    """Line 1: the CRC-32 of the lines below it; line 2: the key, units and providers; then
    one line of models per provider."""
    head = [[p.id, _enc_clause(p.model_match), _enc_clause(p.provider_match),
             p.fallback_model_providers] for p in table.providers]  # fmt: skip
    units = [list(u) for u in table.units.values()]
    lines = []
    for p in table.providers:
        models = [[m.id, _enc_clause(m.match), m.context_window,
                   [_enc_price(d) for d in m.prices],
                   [[v.when, _enc_price(v.price)] for v in m.variants]]
                  for m in p.models]  # fmt: skip
        lines.append(json.dumps(models, separators=(",", ":")))
    head_line = json.dumps({"key": key, "units": units, "providers": head}, separators=(",", ":"))
    rest = head_line + "\n" + "\n".join(lines) + "\n"
    return f"{zlib.crc32(rest.encode('utf-8'))}\n{rest}"


def _dec_spec(raw: dict[str, Any]) -> PriceSpec:
    return {k: Decimal(v) if isinstance(v, str) else Tiered(Decimal(v[0]), tuple(
            TierPrice(s, Decimal(p)) for s, p in v[1])) for k, v in raw.items()}  # fmt: skip


def _dec_price(raw: list[Any]) -> PriceDef:
    start, tod, spec = raw
    return PriceDef(dt.date.fromisoformat(start) if start else None,
                    (tod[0], tod[1]) if tod else None, _dec_spec(spec))  # fmt: skip


def _dec_clause(raw: Any) -> Clause | None:
    if raw is None:
        return None
    kind, arg = raw
    return Clause(kind, arg if isinstance(arg, str) else tuple(_dec_clause(x) for x in arg))  # type: ignore[misc]


def _decode(data: bytes, key: str) -> Table | None:
    crc, _, rest = data.partition(b"\n")
    if int(crc) != zlib.crc32(rest):
        return None  # a file cut short or damaged (a byte changed anywhere below line 1)
    lines = rest.decode("utf-8").split("\n")
    raw = json.loads(lines[0])
    if raw["key"] != key or len(lines) != len(raw["providers"]) + 2 or lines[-1]:
        return None  # another genai-prices
    provs = tuple(
        Provider(pid, _dec_clause(mm), _dec_clause(pm), tuple(fb) if fb else None, None, line)
        for (pid, mm, pm, fb), line in zip(raw["providers"], lines[1:], strict=False)
    )
    units = {u[1]: Unit(u[0], u[1], u[2], u[3]) for u in raw["units"]}
    return Table(provs, {p.id: p for p in provs}, units)


def data_key() -> str | None:
    """The cache key: this layout, Python's version, and each genai-prices data file's
    path, size, inode and modification times (None if genai-prices is not installed as
    files): any install, upgrade or edit of genai-prices changes it."""
    spec = importlib.util.find_spec("genai_prices")
    dirs = spec.submodule_search_locations if spec is not None else None
    if not dirs:
        return None  # pragma: no cover - not installed as a package
    parts = [f"{FORMAT}", "{}.{}".format(*sys.version_info[:2])]
    for name in _DATA_FILES:
        path = os.path.realpath(os.path.join(next(iter(dirs)), name))
        st = os.stat(path)
        parts.append(f"{path}:{st.st_size}:{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}")
    return "|".join(parts)


def cache_path() -> str:
    """Where the table is cached: ``genai-prices.json`` in
    :func:`llmspend.config.user_cache_dir`."""
    return str(user_cache_dir() / "genai-prices.json")


def load() -> Table:
    """The table from the cache if it is there and current, else :func:`build` (then
    saved for the next process, atomically: a temporary file renamed into place)."""
    key: str | None = None
    path = cache_path()
    try:
        key = data_key()
        if key is not None:
            with open(path, "rb") as f:
                table = _decode(f.read(), key)
            if table is not None:
                return table
    except Exception:
        pass
    table = build()
    if key is not None:
        _save(table, key, path)
    return table


def _save(table: Table, key: str, path: str) -> None:
    """Write the cache atomically (a temporary file renamed into place); a directory that
    cannot be written is skipped."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_encode(table, key))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass
