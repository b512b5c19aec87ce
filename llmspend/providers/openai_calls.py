"""Settling OpenAI-style calls: usage normalization, estimates and background responses.

Everything here reads provider objects through :func:`field`, which accepts the SDK's
pydantic models and plain dicts alike (raw responses are parsed from bytes), and never
raises on malformed data: a usage that is missing, null, negative or of the wrong type is
treated as absent, and the call is settled from an estimate (``usage_estimated=True``):
``ceil(utf8_bytes / 4)`` of the request text for input and of the text received for output.

Background responses (``responses.create(background=True)``) keep generating on the server
after the HTTP call returns or its stream is cut. Their call is parked in :data:`LEDGER`
until a later ``retrieve``/``cancel`` (or a resumed ``retrieve(stream=True)``) of the same
id shows the final usage; whatever is still parked at interpreter exit is settled from an
estimate. So one background generation gives one row, with the provider's usage when this
process ever sees it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..call import Call, Usage, estimate_input_tokens

__all__ = [
    "LEDGER",
    "CallContext",
    "ResponseFailedError",
    "field",
    "normalize_usage",
    "text_bytes",
]

log = logging.getLogger("llmspend")

#: Request fields whose text is billed as input (used for estimates).
INPUT_FIELDS = (
    "messages", "input", "instructions", "prompt", "tools", "functions", "response_format",
    "text", "system",
)  # fmt: skip
#: Responses API statuses after which the usage is final.
TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
_PENDING = frozenset({"queued", "in_progress"})


class ResponseFailedError(Exception):
    """Names a Responses API result whose status is ``failed`` (recorded as ``error_type``)."""


_NOT_A_MODEL = object()


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a dict, ``obj.name`` for a model, else ``None``; never raises.

    A pydantic model (the SDK's types) keeps its fields in ``__dict__`` and the fields a
    provider added beyond them in ``__pydantic_extra__``: read there, a field the provider
    did not send costs no AttributeError raised and caught inside pydantic.
    """
    if obj is None:
        return None
    if type(obj) is dict:
        return obj.get(name)
    values = getattr(obj, "__dict__", None)
    if values is not None and name in values:
        return values[name]
    extra = getattr(obj, "__pydantic_extra__", _NOT_A_MODEL)
    if extra is not _NOT_A_MODEL:
        return extra.get(name) if type(extra) is dict else None
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _count(value: Any) -> int | None:
    """A token count, or ``None`` when it is not a non-negative integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def text_bytes(text: Any) -> int:
    """UTF-8 length of a string (0 for anything else)."""
    if type(text) is str:
        return len(text.encode("utf-8", "surrogatepass"))
    return 0


def tokens_from_bytes(n: int) -> int:
    """The llmspend estimate of tokens for ``n`` bytes of text: ``ceil(n / 4)``."""
    return (n + 3) // 4


def normalize_usage(usage: Any, api: str = "") -> Usage | None:
    """llmspend :class:`Usage` from a chat/completions/embeddings or Responses-style usage.

    Input includes cached and cache-write tokens, output includes reasoning tokens; tokens
    a provider reports beyond ``prompt + completion`` in ``total_tokens`` (xAI reasoning)
    are added to output and counted as reasoning. Returns ``None`` when the usage is
    absent or malformed (then the caller estimates) — including duration-only usage.
    """
    if usage is None or field(usage, "type") == "duration":
        return None
    prompt = _count(field(usage, "prompt_tokens"))
    if prompt is not None:  # chat completions, completions, embeddings
        out = _count(field(usage, "completion_tokens"))
        if out is None:
            if api != "embeddings" or field(usage, "completion_tokens") is not None:
                return None
            out = 0
        in_details = field(usage, "prompt_tokens_details")
        out_details = field(usage, "completion_tokens_details")
        inp = prompt
    else:  # Responses, images, transcriptions
        inp_or_none = _count(field(usage, "input_tokens"))
        out_or_none = _count(field(usage, "output_tokens"))
        if inp_or_none is None or out_or_none is None:
            return None
        inp, out = inp_or_none, out_or_none
        in_details = field(usage, "input_tokens_details") or field(usage, "input_token_details")
        out_details = field(usage, "output_tokens_details")
    cached = _count(field(in_details, "cached_tokens")) or 0
    cache_write = _count(field(in_details, "cache_write_tokens")) or 0
    reasoning = _count(field(out_details, "reasoning_tokens")) or 0
    total = _count(field(usage, "total_tokens"))
    if total is not None and total - inp - out > 0:  # reasoning reported outside output
        extra = total - inp - out
        out += extra
        reasoning = max(reasoning, extra)
    return Usage(inp, cached, cache_write, out, reasoning).clamp()


def result_text_bytes(api: str, obj: Any) -> int:
    """Bytes of generated text in a complete result (for estimates when usage is absent)."""
    if type(obj) is str:
        return text_bytes(obj)
    n = 0
    if api in ("chat.completions", "completions"):
        for choice in field(obj, "choices") or ():
            msg = field(choice, "message")
            n += text_bytes(field(choice, "text")) + text_bytes(field(msg, "content"))
            n += text_bytes(field(msg, "refusal"))
            for tc in field(msg, "tool_calls") or ():
                n += text_bytes(field(field(tc, "function"), "arguments"))
    elif api.startswith("responses"):
        for item in field(obj, "output") or ():
            n += text_bytes(field(item, "arguments"))
            for part in field(item, "content") or ():
                n += text_bytes(field(part, "text"))
    elif api.startswith("audio."):
        n += text_bytes(field(obj, "text"))
    return n


def _token_ids(value: Any) -> int:
    """How many token ids an embeddings ``input`` given as ids holds (0 for text)."""
    if not isinstance(value, list) or not value:
        return 0
    if isinstance(value[0], int):
        return len(value)
    return sum(len(v) for v in value if isinstance(v, list))


class CallContext:
    """One tracked call and what its request said, until it is settled."""

    __slots__ = ("api", "background", "body", "call", "injected", "provider")

    def __init__(
        self,
        call: Call,
        api: str,
        provider: str,
        body: Mapping[str, Any],
        *,
        injected: bool = False,
    ) -> None:
        self.call = call
        self.api = api
        self.provider = provider
        self.body = body
        self.injected = injected
        self.background = body.get("background") is True

    def input_estimate(self) -> int:
        """Estimated input tokens: ``ceil(utf8_bytes / 4)`` of the request's text."""
        body = self.body
        payload = [body[k] for k in INPUT_FIELDS if k in body]
        try:
            return tokens_from_bytes(estimate_input_tokens(payload)) + _token_ids(body.get("input"))
        except Exception:
            return 0

    # -- settling ------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The call raised: record an error without usage (costs 0)."""
        self.call.finish(None, status="error", error=exc)

    def finish_estimate(
        self,
        status: str,
        out_bytes: int = 0,
        *,
        model: str | None = None,
        request_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Settle from an estimate: request text for input, received text for output."""
        usage = Usage(self.input_estimate(), 0, 0, tokens_from_bytes(out_bytes), 0)
        self.call.finish(
            usage,
            status=status,
            response_model=model,
            request_id=request_id,
            error=error,
            usage_estimated=True,
        )

    def finish_usage(
        self,
        usage: Any,
        *,
        model: str | None,
        request_id: str | None,
        status: str = "ok",
        error: BaseException | None = None,
        out_bytes: int | None = None,
        source: Any = None,
    ) -> None:
        """Settle with the provider's usage, or an estimate when it is absent/malformed."""
        normalized = normalize_usage(usage, self.api)
        if normalized is None:
            if out_bytes is None:
                try:
                    out_bytes = result_text_bytes(self.api, source)
                except Exception:  # malformed result: count nothing
                    out_bytes = 0
            self.finish_estimate(status, out_bytes, model=model, request_id=request_id, error=error)
            return
        self.call.finish(
            normalized, status=status, response_model=model, request_id=request_id, error=error
        )

    def finish_result(self, obj: Any, request_id: str | None = None) -> None:
        """Settle from a complete (non-streamed) result: a model, a dict or a string."""
        model = field(obj, "model")
        model = model if type(model) is str and model else None
        if request_id is None:
            rid = getattr(obj, "_request_id", None)
            request_id = rid if type(rid) is str else None
        status, error = "ok", None
        if self.api.startswith("responses"):
            state = field(obj, "status")
            rid = field(obj, "id")
            if state in _PENDING and self.background and type(rid) is str:
                LEDGER.park(rid, self, 0, model, request_id)
                return
            if state == "failed":
                status, error = "error", failed_error(obj)
        self.finish_usage(
            field(obj, "usage"),
            model=model,
            request_id=request_id,
            status=status,
            error=error,
            source=obj,
        )


def failed_error(response: Any) -> ResponseFailedError:
    """A :class:`ResponseFailedError` carrying the Responses API error message."""
    err = field(response, "error")
    message = field(err, "message")
    return ResponseFailedError(message if type(message) is str else "response failed")


class _Ledger:
    """Background responses parked until their final usage is seen (bounded, thread-safe)."""

    MAX = 1024

    def __init__(self) -> None:
        self._items: dict[str, tuple[CallContext, int, str | None, str | None]] = {}
        self._lock = threading.Lock()
        self._hooked = False

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, response_id: str) -> CallContext | None:
        """The parked call of ``response_id``, left in place."""
        item = self._items.get(response_id)
        return item[0] if item is not None else None

    def park(
        self,
        response_id: str,
        ctx: CallContext,
        out_bytes: int,
        model: str | None,
        request_id: str | None,
    ) -> None:
        """Keep ``ctx`` unsettled until ``response_id``'s final usage shows up."""
        evicted = []
        with self._lock:
            self._items[response_id] = (ctx, out_bytes, model, request_id)
            while len(self._items) > self.MAX:
                evicted.append(self._items.pop(next(iter(self._items))))
            if not self._hooked:
                atexit.register(self.flush)
                self._hooked = True
        for item in evicted:
            self._settle_estimate(item)

    def take(self, response_id: str) -> CallContext | None:
        """Remove and return the parked call of ``response_id``, if any."""
        with self._lock:
            item = self._items.pop(response_id, None)
        return item[0] if item is not None else None

    def resolve(self, response_id: str, response: Any) -> None:
        """Settle the parked call from a retrieved response once it is terminal."""
        if field(response, "status") not in TERMINAL:
            return
        with self._lock:
            item = self._items.pop(response_id, None)
        if item is not None:
            ctx, _, _, request_id = item
            ctx.background = False  # terminal now: settle, never park again
            ctx.finish_result(response, request_id)

    @staticmethod
    def _settle_estimate(item: tuple[CallContext, int, str | None, str | None]) -> None:
        ctx, out_bytes, model, request_id = item
        ctx.finish_estimate("partial", out_bytes, model=model, request_id=request_id)

    def flush(self) -> None:
        """Settle every parked call from an estimate (at exit)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for item in items:
            try:
                self._settle_estimate(item)
            except Exception:  # pragma: no cover - finish never raises
                log.exception("llmspend could not settle a background response")


LEDGER = _Ledger()
"""The process-wide ledger of background responses awaiting their final usage."""
