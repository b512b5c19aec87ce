"""A provider call and its usage: the types every layer above the store shares.

:class:`Usage` is how llmspend normalizes tokens across providers; :class:`Call` is one
provider call from before it is sent until its row is committed. A call is priced and
recorded through the tracker it was begun with (duck-typed here: this module sits below
the tracker, which composes the store, the price book, budgets and alerts).
:func:`estimate_input_tokens` is the one bytes→tokens upper bound used for estimates.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .attribution import current_overrides
from .timeutil import EPOCH, utcnow

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
    "DEFAULT_OUTPUT_CAP",
    "MAX_TOKENS",
    "OUTPUT_CAPS",
    "Call",
    "InputBound",
    "PartRule",
    "Payload",
    "Usage",
    "count_parts",
    "estimate_input_tokens",
    "measure_input",
    "notebook_path",
    "output_cap_for",
    "session_id",
    "tier_label",
]

log = logging.getLogger("llmspend")

#: Output tokens assumed for the worst case when neither the request, the price data nor
#: :data:`OUTPUT_CAPS` gives a cap, and the model's context window is unknown.
DEFAULT_OUTPUT_CAP = 32_768
#: Tokens assumed for content of unknown size (see :class:`InputBound`) when the price data
#: does not know the model's context window (the largest windows offered are ~2M).
DEFAULT_CONTEXT_WINDOW = 2_000_000
#: No real call reports more; larger numbers from a broken server are clamped.
MAX_TOKENS = 2**40
_PER_MESSAGE_OVERHEAD = 8


_NO_EXTRA = (0, 0, 0, 0, 0, 0, 0)


@dataclass(slots=True)
class Usage:
    """Tokens as llmspend normalizes them: input includes cached and cache-write tokens,
    output includes reasoning tokens.

    The parts some providers bill at their own rates (read from the response; priced, not
    stored): ``cache_write_1h_tokens`` of the cache writes (Anthropic's 1-hour cache);
    ``input_audio_tokens`` and ``input_image_tokens`` of the input, of which
    ``cache_audio_read_tokens`` and ``cache_image_read_tokens`` are cached;
    ``output_audio_tokens`` and ``output_image_tokens`` of the output (beside reasoning).
    Their names are genai-prices' (``pricing.rates.EXTRA``)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    input_audio_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    cache_image_read_tokens: int = 0
    output_image_tokens: int = 0

    def clamp(self) -> Usage:
        """Make a provider's odd numbers consistent (never negative, subsets within totals,
        totals below 2**40 so that no cost can overflow a BIGINT)."""
        inp, cached, cw = self.input_tokens, self.cached_input_tokens, self.cache_write_tokens
        out, reasoning = self.output_tokens, self.reasoning_tokens
        if (  # already consistent plain ints (a provider's usual answer): a copy as it is
            type(inp) is int and type(cached) is int and type(cw) is int
            and type(out) is int and type(reasoning) is int
            and cached >= 0 and cw >= 0 and cached + cw <= inp <= MAX_TOKENS
            and 0 <= reasoning <= out <= MAX_TOKENS and self.extra() is None
        ):  # fmt: skip
            return Usage(inp, cached, cw, out, reasoning)
        inp = min(max(0, int(self.input_tokens or 0)), MAX_TOKENS)
        out = min(max(0, int(self.output_tokens or 0)), MAX_TOKENS)
        cached = min(max(0, int(self.cached_input_tokens or 0)), inp)
        cw = min(max(0, int(self.cache_write_tokens or 0)), inp - cached)
        reasoning = min(max(0, int(self.reasoning_tokens or 0)), out)
        cw1h = min(_nat(self.cache_write_1h_tokens), cw)
        audio_in = min(_nat(self.input_audio_tokens), inp)
        image_in = min(_nat(self.input_image_tokens), inp - audio_in)
        audio_read = min(_nat(self.cache_audio_read_tokens), cached, audio_in)
        image_read = min(_nat(self.cache_image_read_tokens), cached - audio_read, image_in)
        audio_out = min(_nat(self.output_audio_tokens), out - reasoning)
        image_out = min(_nat(self.output_image_tokens), out - reasoning - audio_out)
        return Usage(inp, cached, cw, out, reasoning, cw1h, audio_in, audio_read, audio_out,
                     image_in, image_read, image_out)  # fmt: skip

    def extra(self) -> tuple[int, ...] | None:
        """The parts priced apart, in ``pricing.rates.EXTRA``'s order; ``None`` if all 0."""
        extra = (self.cache_write_1h_tokens, self.input_audio_tokens,
                 self.cache_audio_read_tokens, self.output_audio_tokens,
                 self.input_image_tokens, self.cache_image_read_tokens,
                 self.output_image_tokens)  # fmt: skip
        return None if extra == _NO_EXTRA else extra


def _nat(value: Any) -> int:
    """A count as a non-negative int within :data:`MAX_TOKENS` (junk: 0)."""
    try:
        return min(max(0, int(value or 0)), MAX_TOKENS)
    except (TypeError, ValueError, OverflowError):
        return 0


class InputBound(NamedTuple):
    """An offline bound on a request's input: ``tokens`` counted from its own content, and
    what it refers to beyond that — ``prior_ids``, responses whose recorded tokens it
    brings in (OpenAI ``previous_response_id``), and ``open_ended``: content of unknown
    size (a file by id, a conversation, a PDF), bounded by the model's context window."""

    tokens: int
    prior_ids: tuple[str, ...] = ()
    open_ended: bool = False


class Payload(list[Any]):
    """A request's billed input fields (equal to the plain list of them) with the dialect's
    ``measure(payload) -> InputBound``, which knows its media parts and references and may
    read ``body``. Counted only when a budget asks (:attr:`Call.input_upper`)."""

    __slots__ = ("body", "measure")

    def __init__(
        self, parts: Any, measure: Callable[[Payload], InputBound], body: Any = None
    ) -> None:
        super().__init__(parts)
        self.measure = measure
        self.body = body


#: A media part's tokens, or ``None`` when a mapping is not one (then its text is counted);
#: a negative count means the part's size is unknown (see :class:`InputBound`).
PartRule = Callable[[Mapping[str, Any]], "int | None"]


def _walk(obj: Any, part: PartRule | None = None) -> tuple[int, bool]:
    """``(bytes, open_ended)``: the UTF-8 bytes of every string, key and number in ``obj``
    plus 8 per mapping, media parts counted by ``part``. Iterative: no depth limit."""
    n = 0
    open_ended = False
    stack = [obj]
    pop, extend = stack.pop, stack.extend
    while stack:
        o = pop()
        t = type(o)
        if t is str:  # an ASCII string's length is its UTF-8 length
            n += len(o) if o.isascii() else len(o.encode("utf-8", "surrogatepass"))
        elif t is list or t is tuple:
            extend(o)
        elif t is dict or isinstance(o, Mapping):  # the ABC check costs most: last
            if part is not None:
                hit = part(o)
                if hit is not None:
                    if hit < 0:
                        open_ended = True
                    else:
                        n += hit
                    continue
            n += _PER_MESSAGE_OVERHEAD
            for k in o:  # a schema's property names are billed text too
                if type(k) is str:
                    n += len(k) if k.isascii() else len(k.encode("utf-8", "surrogatepass"))
            extend(o.values())
        elif isinstance(o, str):
            n += len(o.encode("utf-8", "surrogatepass"))
        elif isinstance(o, (bytes, bytearray)):
            n += len(o)
        elif isinstance(o, (list, tuple)):
            extend(o)
        elif isinstance(o, (int, float)):  # in a schema (enum, minimum...): its digits
            n += len(repr(o))
    return n, open_ended


def _text_bytes(obj: Any) -> int:
    """The UTF-8 bytes of the text in ``obj`` (see :func:`_walk`), at any depth."""
    return _walk(obj)[0]


def estimate_input_tokens(payload: Any) -> int:
    """A hard upper bound on input tokens, computed offline.

    A BPE token covers at least one byte, so the UTF-8 length of every string, key and
    number in the request (plus a small per-object overhead for the chat template) bounds
    the tokens. Loose about 4× for English text (a token averages ~4 bytes).
    """
    return _text_bytes(payload)


def count_parts(payload: Any, part: PartRule) -> InputBound:
    """The bound of ``payload`` with its media parts counted by ``part`` (a dialect's)."""
    n, open_ended = _walk(payload, part)
    return InputBound(n, (), open_ended)


def measure_input(payload: Any) -> InputBound:
    """The :class:`InputBound` of a payload: a dialect's :class:`Payload` measures itself
    (if that fails, its text is counted and its size taken as unknown), an
    :class:`InputBound` is itself, anything else is text."""
    if type(payload) is Payload:
        try:
            return payload.measure(payload)
        except Exception:
            return InputBound(_text_bytes(list(payload)), (), True)
    if type(payload) is InputBound:
        return payload
    return InputBound(_text_bytes(payload))


# Published maximum output tokens per model family (bare names; dated snapshots match):
# the worst case when a request sets no cap and the price data gives none.
OUTPUT_CAPS: dict[str, int] = {
    "gpt-5": 128_000, "gpt-5-mini": 128_000, "gpt-5-nano": 128_000, "gpt-5-pro": 272_000,
    "gpt-5-codex": 128_000, "gpt-5-chat-latest": 16_384, "gpt-4.1": 32_768,
    "gpt-4.1-mini": 32_768, "gpt-4.1-nano": 32_768, "gpt-4o": 16_384, "gpt-4o-mini": 16_384,
    "chatgpt-4o-latest": 16_384, "o1": 100_000, "o1-pro": 100_000, "o1-mini": 65_536,
    "o3": 100_000, "o3-pro": 100_000, "o3-mini": 100_000, "o4-mini": 100_000,
    "o3-deep-research": 100_000, "o4-mini-deep-research": 100_000,
    "gemini-2.5-pro": 65_536, "gemini-2.5-flash": 65_536, "gemini-2.5-flash-lite": 65_536,
    "gemini-2.0-flash": 8_192, "gemini-2.0-flash-lite": 8_192, "gemini-3-pro-preview": 65_536,
}  # fmt: skip


def output_cap_for(model: str) -> int | None:
    """The published output cap of ``model``'s family (:data:`OUTPUT_CAPS`), or ``None``.

    Version suffixes are dropped (``gpt-4o-2024-08-06``, ``gemini-2.0-flash-001``,
    ``-preview``, ``-latest``, ``-exp``); any other suffix names another model.
    """
    name = (model or "").lower().rsplit("/", 1)[-1]
    while name:
        cap = OUTPUT_CAPS.get(name)
        if cap is not None:
            return cap
        head, _, tail = name.rpartition("-")
        if not (tail.isdigit() or tail in ("latest", "preview", "exp")):
            return None
        name = head
    return None


# The random half of a record id: seeded from os.urandom, and again in a child after fork
# (a system call per id would cost more than the rest of the id; the global ``random`` is
# the user's to seed).
_uid_random = random.Random()  # uniqueness, not secrecy
os.register_at_fork(after_in_child=_uid_random.seed)

_session_id: str | None = None


def session_id() -> str:
    """The Jupyter kernel id when running in a kernel, else ``host:pid``."""
    global _session_id
    if _session_id is None:
        sid = None
        try:
            import sys

            if "ipykernel" in sys.modules:
                from ipykernel import get_connection_file

                name = os.path.basename(get_connection_file())
                sid = name.removeprefix("kernel-").removesuffix(".json")
        except Exception:
            sid = None
        _session_id = (sid or f"{socket.gethostname()}:{os.getpid()}")[:64]
    return _session_id


def tier_label(tier: Any) -> str | None:
    """A tier as the usage table's ``service_tier`` keeps it: the name the provider reported
    (or the request asked for), lower case, at most 32 characters; ``None`` if neither said."""
    if tier is None:
        return None
    name = str(getattr(tier, "value", tier)).strip().lower().removeprefix("servicetier.")
    return name[:32] or None


def notebook_path() -> str | None:
    return os.environ.get("JPY_SESSION_NAME") or None


class Call:
    """One provider call, from before it is sent until its row is committed."""

    __slots__ = (
        "tracker", "provider", "api", "model", "streamed", "org", "project", "user", "tags",
        "ts", "epoch", "t0", "_input_upper", "_payload", "_refs", "output_cap", "estimate_nanos",
        "reservation", "_done", "_lock", "row", "settled", "events", "repeat", "service_tier",
        "otel_context",
    )  # fmt: skip

    def __init__(
        self,
        tracker: Any,
        provider: str,
        api: str,
        model: str,
        *,
        streamed: bool,
        input_upper: int | None,
        output_cap: int | None,
        payload: Any = None,
        service_tier: str | None = None,
    ) -> None:
        self.tracker = tracker
        self.provider = provider
        self.api = api
        self.model = model or "unknown"
        self.streamed = streamed
        over = current_overrides()
        self.org = over.org or tracker.org
        self.project = over.project or tracker.project
        self.user = over.user or tracker.user
        self.tags = dict(over.tags)
        self.ts = utcnow()
        self.epoch = (self.ts - EPOCH).total_seconds()  # for the price in force
        self.t0 = time.perf_counter()
        self._input_upper = input_upper
        self._payload = payload
        self._refs: InputBound | None = None
        self.output_cap = output_cap
        self.estimate_nanos: int | None = None
        self.reservation: Any = None
        self._done = False
        self._lock = threading.Lock()
        self.row: dict[str, Any] | None = None
        self.settled: Any = None  # budget periods settled past a threshold (alert stage)
        self.events: list[Any] = []  # alert events decided while recording
        # A retry of a request refused moments ago (see providers/http.py): refused again,
        # it is not recorded again.
        self.repeat = False
        # The service tier the request asks for (priced by the estimate), then the one the
        # provider reports it served (priced by the row); ``None``: standard.
        self.service_tier = service_tier
        self.otel_context: Any = None  # the caller's OpenTelemetry context (llmspend.otel)

    def __repr__(self) -> str:
        return (
            f"<Call {self.provider}/{self.api} {self.model} {self.org}/{self.project}/{self.user}>"
        )

    @property
    def input_upper(self) -> int:
        """The bound on input tokens: given, or counted from the request payload when first
        asked for (only budgets need it, before the request is sent)."""
        if self._input_upper is None or self._payload is not None:
            self._measure()
        return self._input_upper  # type: ignore[return-value]

    @property
    def refs(self) -> InputBound | None:
        """What the request refers to beyond its content (prior responses, content of
        unknown size), or ``None``: the guard adds their tokens (see :class:`InputBound`)."""
        if self._input_upper is None or self._payload is not None:
            self._measure()
        return self._refs

    def _measure(self) -> None:
        bound = measure_input(self._payload)
        if self._input_upper is None:
            self._input_upper = bound.tokens
        if bound.prior_ids or bound.open_ended:
            self._refs = bound
        self._payload = None

    @property
    def done(self) -> bool:
        return self._done

    def finish(
        self,
        usage: Usage | None,
        *,
        status: str = "ok",
        response_model: str | None = None,
        request_id: str | None = None,
        error: BaseException | None = None,
        usage_estimated: bool = False,
        service_tier: str | None = None,
    ) -> dict[str, Any] | None:
        """Price and record the call once (later calls are ignored). Never raises.

        ``service_tier``: the tier the provider reports it served the call at (``"batch"``
        for Batch API results), which chooses the price; ``None`` keeps the requested one.
        """
        with self._lock:
            if self._done:
                return None
            self._done = True
        if service_tier is not None:
            self.service_tier = service_tier
        try:
            return self._record(usage, status, response_model, request_id, error, usage_estimated)
        except Exception as exc:  # recording must never break the caller's call
            log.error("llmspend could not record a %s call: %s", self.provider, exc, exc_info=True)
            warnings.warn(f"llmspend could not record a call: {exc}", RuntimeWarning, stacklevel=3)
            return None

    def _record(
        self,
        usage: Usage | None,
        status: str,
        response_model: str | None,
        request_id: str | None,
        error: BaseException | None,
        usage_estimated: bool,
    ) -> dict[str, Any]:
        tracker = self.tracker
        u = usage.clamp() if usage is not None else Usage()
        model = response_model or self.model
        cost: int | None
        if usage is None and status in ("error", "refused"):
            cost, pstatus, ref = 0, "priced", None
        else:
            cost, pstatus, ref = tracker.pricebook.price_nanos(
                self.provider, model, u.input_tokens, u.cached_input_tokens,
                u.cache_write_tokens, u.output_tokens, u.reasoning_tokens, self.epoch,
                response_model=None if model == self.model else model,
                tier=self.service_tier, api=self.api, extra=u.extra(),
            )  # fmt: skip
            if cost is None and pstatus == "unknown":
                pstatus = "unknown"
        row = {
            "ts": self.ts,
            "request_id": (request_id or None) and str(request_id)[:200],
            "provider": self.provider,
            "api": self.api,
            "model": model[:200],
            "requested_model": self.model[:200] if model != self.model else None,
            "org_name": self.org,
            "project_name": self.project,
            "user_name": self.user,
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "cost_nanos": cost,
            "estimate_nanos": self.estimate_nanos,
            "price_status": pstatus,
            "price_ref": ref,
            "status": status,
            "error_type": type(error).__name__ if error is not None else None,
            "latency_ms": round((time.perf_counter() - self.t0) * 1000, 3),
            "streamed": self.streamed,
            "usage_estimated": usage_estimated,
            "tags": json.dumps(self.tags, sort_keys=True, separators=(",", ":"), default=str)
            if self.tags
            else None,
            "session_id": session_id(),
            "notebook_path": notebook_path(),
            # Time first: live rows append at the right edge of the unique index (one hot
            # page) instead of landing on a random page of a large store.
            "record_uid": f"{time.time_ns():016x}{_uid_random.getrandbits(64):016x}",
            "service_tier": tier_label(self.service_tier),
        }
        self.row = row
        tracker.record_call(self, row)
        return row
