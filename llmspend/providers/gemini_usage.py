"""What the two Gemini SDK plugins share: reading requests and usage, settling streams.

Both ``google-genai`` (pydantic objects, snake_case) and ``google-generativeai`` (proto-plus
messages) are read through :func:`field`, which also accepts plain dicts in snake_case or
camelCase (raw REST JSON). Nothing here imports an SDK.

Usage normalization (llmspend convention: input includes cached, output includes
reasoning)::

    input     = prompt_token_count + tool_use_prompt_token_count
    cached    = cached_content_token_count
    output    = candidates_token_count + thoughts
    reasoning = thoughts

``thoughts`` is ``thoughts_token_count`` when reported, else ``total − prompt − tool_use −
candidates`` when positive (the legacy SDK's proto drops ``thoughtsTokenCount``; the
remainder is what was billed beyond the visible parts). Malformed usage (negative counts,
wrong types, no prompt count) is treated as absent: the caller estimates and flags
``usage_estimated``. Nothing in this module raises into the user's code.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import wrapt

from ..call import Call, Usage, estimate_input_tokens
from ..errors import LLMSpendError
from ..pipeline import begin_call

__all__ = [
    "MEDIA_TOKENS",
    "PROVIDER",
    "ObservedAsyncIterator",
    "ObservedIterator",
    "StreamObserver",
    "field",
    "finish_response",
    "max_output_tokens",
    "parse_usage",
    "request_upper_bound",
    "response_info",
    "start_call",
    "text_tokens",
    "usage_of",
    "wrapper_in_chain",
]

log = logging.getLogger("llmspend")

PROVIDER = "google"
#: Tokens Gemini bills per image tile (768×768); also used for media passed by reference.
MEDIA_TOKENS = 258
_TILE = 768
_MAX_DEPTH = 24


# -- reading SDK objects ---------------------------------------------------------------------


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.title() for w in rest)


def field(obj: Any, name: str) -> Any:
    """``obj.name`` for SDK objects, ``obj[name]`` / ``obj[camelName]`` for dicts; else None."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        value = obj.get(name)
        return obj.get(_camel(name)) if value is None else value
    try:
        return getattr(obj, name, None)
    except Exception:  # an SDK property that refuses (e.g. an incomplete stream)
        return None


def _nonneg_int(value: Any) -> int | None:
    """A usable token count, or None for anything else (bools, floats, strings, negatives)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return int(value)


def max_output_tokens(*configs: Any) -> int | None:
    """The first positive ``max_output_tokens`` among the given configs (dicts or objects)."""
    for config in configs:
        value = _nonneg_int(field(config, "max_output_tokens"))
        if value:
            return value
    return None


# -- usage -----------------------------------------------------------------------------------


class _Malformed(ValueError):
    pass


def _count(md: Any, name: str) -> int | None:
    value = field(md, name)
    if value is None:
        return None
    count = _nonneg_int(value)
    if count is None:
        raise _Malformed(name)
    return count


def parse_usage(md: Any) -> Usage | None:
    """Normalize a Gemini ``usage_metadata`` (object or dict); None if absent or malformed."""
    if md is None:
        return None
    try:
        prompt = _count(md, "prompt_token_count")
        candidates = _count(md, "candidates_token_count") or 0
        thoughts = _count(md, "thoughts_token_count")
        cached = _count(md, "cached_content_token_count") or 0
        tool_use = _count(md, "tool_use_prompt_token_count") or 0
        total = _count(md, "total_token_count")
    except _Malformed as exc:
        log.debug("llmspend: malformed Gemini usage (%s); estimating", exc)
        return None
    if not prompt:  # no prompt count (or an empty proto default): not a usable report
        return None
    if thoughts is None:
        rest = (total or 0) - prompt - tool_use - candidates
        thoughts = rest if rest > 0 else 0
    return Usage(
        input_tokens=prompt + tool_use,
        cached_input_tokens=cached,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
    ).clamp()  # a broken report never yields subsets above totals or absurd counts


def _raw_body_usage(response: Any) -> Any:
    """``usageMetadata`` from a raw HTTP body (google-genai ``should_return_http_response``)."""
    body = field(field(response, "sdk_http_response"), "body")
    if not isinstance(body, (str, bytes)) or not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return field(data, "usage_metadata") if isinstance(data, Mapping) else None


def usage_of(response: Any) -> Usage | None:
    """The normalized usage a generate/embed response reports, or None."""
    usage = parse_usage(field(response, "usage_metadata"))
    if usage is None:
        usage = parse_usage(_raw_body_usage(response))
    return usage


def text_tokens(num_bytes: int) -> int:
    """Tokens estimated from UTF-8 bytes (4 bytes a token, rounded up)."""
    return math.ceil(max(0, num_bytes) / 4)


def _output_bytes(response: Any) -> int:
    """UTF-8 bytes of the visible output (text, function calls) of one response or chunk."""
    total = 0
    for cand in field(response, "candidates") or ():
        for part in field(field(cand, "content"), "parts") or ():
            text = field(part, "text")
            if isinstance(text, str):
                total += len(text.encode("utf-8", "surrogatepass"))
            call = field(part, "function_call")
            if call:
                total += len(str(field(call, "name") or "")) + len(_jsonish(field(call, "args")))
    return total


def _jsonish(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except Exception:
        return str(value)


def _terminal(response: Any) -> bool:
    """Whether a (streamed) response says the generation is over."""
    if field(field(response, "prompt_feedback"), "block_reason"):
        return True
    return any(field(c, "finish_reason") for c in field(response, "candidates") or ())


def response_info(response: Any) -> tuple[str | None, str | None]:
    """(model version the server names, response id), when present."""
    model = field(response, "model_version")
    rid = field(response, "response_id")
    return (model if isinstance(model, str) and model else None,
            rid if isinstance(rid, str) and rid else None)  # fmt: skip


# -- request estimates -----------------------------------------------------------------------


def _plain(obj: Any, depth: int = 0) -> Any:
    """SDK request objects as plain str/bytes/dict/list, for the offline input bound."""
    if depth > _MAX_DEPTH or obj is None or isinstance(obj, (bool, int, float)):
        return None
    if isinstance(obj, (str, bytes, bytearray)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in obj]
    size = getattr(obj, "size", None)  # PIL images: billed per 768×768 tile
    if isinstance(size, tuple) and len(size) == 2 and hasattr(obj, "mode"):
        try:
            tiles = max(1, math.ceil(size[0] / _TILE) * math.ceil(size[1] / _TILE))
        except Exception:
            tiles = 1
        return " " * (MEDIA_TOKENS * tiles)
    dump = getattr(obj, "model_dump", None)  # pydantic (google-genai types)
    if callable(dump):
        try:
            return _plain(dump(exclude_none=True), depth + 1)
        except Exception:
            return None
    to_dict = getattr(type(obj), "to_dict", None)  # proto-plus (google-generativeai protos)
    if callable(to_dict) and hasattr(type(obj), "pb"):
        try:
            return _plain(to_dict(obj, preserving_proto_field_name=True), depth + 1)
        except Exception:
            return None
    if hasattr(obj, "DESCRIPTOR") and hasattr(obj, "ListFields"):  # raw protobuf
        try:
            from google.protobuf.json_format import MessageToDict

            return _plain(MessageToDict(obj), depth + 1)
        except Exception:
            return None
    to_proto = getattr(obj, "to_proto", None)  # google-generativeai tool / function library
    if callable(to_proto):
        try:
            return _plain(to_proto(), depth + 1)
        except Exception:
            return None
    if callable(obj):  # a Python function declared as a tool: its schema comes from these
        return f"{getattr(obj, '__name__', '')} {getattr(obj, '__doc__', '') or ''}"
    return None


def request_upper_bound(*parts: Any) -> int:
    """An offline upper bound on the input tokens of a request made of ``parts``.

    Text and inline bytes count one token per byte (a BPE token covers at least a byte);
    images count :data:`MEDIA_TOKENS` per 768-pixel tile. Never raises.
    """
    try:
        return estimate_input_tokens([_plain(p) for p in parts])
    except Exception:
        return 0


# -- the call --------------------------------------------------------------------------------


def start_call(
    api: str, model: Any, *, input_upper: int, max_output: int | None, streamed: bool
) -> Call | None:
    """``begin_call`` for a Gemini request; None when not installed (or llmspend failed).

    llmspend's own errors (``BudgetExceeded``) propagate: nothing is sent. An unexpected
    failure inside llmspend is logged and the call goes through unrecorded.
    """
    try:
        return begin_call(
            PROVIDER, api, model if isinstance(model, str) else str(model or "unknown"),
            input_tokens=input_upper, max_output_tokens=max_output, streamed=streamed,
        )  # fmt: skip
    except LLMSpendError:
        raise
    except Exception as exc:
        log.error("llmspend could not start a Gemini call; not recorded: %s", exc, exc_info=True)
        return None


def run_recorded(
    call: Call | None, send: Callable[[], Any], settle: Callable[[Call, Any], None]
) -> Any:
    """Send one request for ``call``: an error is recorded and re-raised unchanged, a
    response is handed to ``settle(call, response)``. Without a call (not installed) just send."""
    if call is None:
        return send()
    try:
        response = send()
    except BaseException as exc:
        call.finish(None, status="error", error=exc)
        raise
    settle(call, response)
    return response


async def arun_recorded(
    call: Call | None, send: Callable[[], Awaitable[Any]], settle: Callable[[Call, Any], None]
) -> Any:
    """:func:`run_recorded` for a coroutine."""
    if call is None:
        return await send()
    try:
        response = await send()
    except BaseException as exc:
        call.finish(None, status="error", error=exc)
        raise
    settle(call, response)
    return response


def finish_response(call: Call, response: Any, input_upper: int) -> None:
    """Settle a complete (non-streamed) response: its usage, else an estimate."""
    try:
        usage = usage_of(response)
        model, rid = response_info(response)
        estimated = usage is None
        if usage is None:
            usage = Usage(
                text_tokens(input_upper), output_tokens=text_tokens(_output_bytes(response))
            )
    except Exception:  # an unreadable response must not break the caller
        log.debug("llmspend: unreadable Gemini response", exc_info=True)
        usage, model, rid, estimated = Usage(text_tokens(input_upper)), None, None, True
    call.finish(usage, response_model=model, request_id=rid, usage_estimated=estimated)


class StreamObserver:
    """Watches one streamed HTTP response chunk by chunk and settles its call exactly once.

    Gemini stream chunks carry cumulative usage, so the last one received is the best
    report. Settling: :meth:`complete` at exhaustion, :meth:`fail` on an error (``error``
    before any chunk), :meth:`abandon` on close/GC — each ``ok`` once the terminal chunk
    (finish reason or blocked prompt) has arrived, else ``partial``. Partial settlements
    are flagged ``usage_estimated``.
    """

    __slots__ = ("_finalizer", "_lock", "call", "chunks", "input_upper", "model", "out_bytes",
                 "request_id", "terminal", "usage")  # fmt: skip

    def __init__(self, call: Call, input_upper: int) -> None:
        self.call = call
        self.input_upper = input_upper
        self.chunks = 0
        self.out_bytes = 0
        self.usage: Usage | None = None
        self.terminal = False
        self.model: str | None = None
        self.request_id: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()

    def settle_on_gc(self, owner: object) -> None:
        """Settle as abandoned when ``owner`` (what the caller holds) is garbage-collected."""
        try:
            self._finalizer = weakref.finalize(owner, self.abandon)
        except TypeError:  # not weak-referenceable: settled at exhaustion/close only
            self._finalizer = None

    def observe(self, chunk: Any) -> None:
        """Record one chunk (never raises)."""
        try:
            with self._lock:
                self.chunks += 1
                self.out_bytes += _output_bytes(chunk)
                usage = parse_usage(field(chunk, "usage_metadata"))
                if usage is not None:
                    self.usage = usage
                model, rid = response_info(chunk)
                self.model = model or self.model
                self.request_id = rid or self.request_id
                if _terminal(chunk):
                    self.terminal = True
        except Exception:
            log.debug("llmspend: unreadable Gemini stream chunk", exc_info=True)

    def _estimate(self) -> Usage:
        out = text_tokens(self.out_bytes)
        if self.usage is not None:
            u = self.usage
            extra = max(0, out - (u.output_tokens - u.reasoning_tokens))
            return Usage(u.input_tokens, u.cached_input_tokens, 0, u.output_tokens + extra,
                         u.reasoning_tokens)  # fmt: skip
        return Usage(text_tokens(self.input_upper), output_tokens=out)

    def _settle(self, status: str, error: BaseException | None = None) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if status == "error":
            self.call.finish(None, status="error", error=error)
            return
        estimated = status != "ok" or self.usage is None
        usage = self.usage if not estimated else self._estimate()
        self.call.finish(usage, status=status, response_model=self.model,
                         request_id=self.request_id, error=error,
                         usage_estimated=estimated)  # fmt: skip

    def complete(self) -> None:
        """The stream was read to its end."""
        self._settle("ok" if self.terminal else "partial")

    def fail(self, error: BaseException) -> None:
        """The stream (or the request) raised ``error``.

        Before any chunk: an error (nothing billed). After the terminal chunk: the
        generation was complete and its usage final, so ``ok``. In between: ``partial``.
        """
        if self.terminal:
            self._settle("ok")
        else:
            self._settle("error" if self.chunks == 0 else "partial", error)

    def abandon(self) -> None:
        """The caller closed or dropped the stream before its end."""
        if self.call.done:
            return
        self._settle("ok" if self.terminal else "partial")


class ObservedIterator(wrapt.ObjectProxy):
    """A chunk iterator that hands out the very same chunks, showing each to an observer.

    A wrapt proxy: everything else (attributes, ``__class__``, ``repr``) is the wrapped
    iterator's.
    """

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_observer = observer

    def __iter__(self) -> ObservedIterator:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self.__wrapped__)
        except StopIteration:
            self._self_observer.complete()
            raise
        except BaseException as exc:
            self._self_observer.fail(exc)
            raise
        self._self_observer.observe(chunk)
        return chunk


class ObservedAsyncIterator(wrapt.ObjectProxy):
    """The async twin of :class:`ObservedIterator`."""

    def __init__(self, wrapped: Any, observer: StreamObserver) -> None:
        super().__init__(wrapped)
        self._self_observer = observer

    def __aiter__(self) -> ObservedAsyncIterator:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_observer.complete()
            raise
        except BaseException as exc:
            self._self_observer.fail(exc)
            raise
        self._self_observer.observe(chunk)
        return chunk


def wrapper_in_chain(attr: Any, wrappers: frozenset[Any]) -> bool:
    """Whether one of ``wrappers`` (wrapt wrapper functions) is somewhere in ``attr``'s chain."""
    for _ in range(32):
        if attr is None:
            return False
        if getattr(attr, "_self_wrapper", None) in wrappers:
            return True
        attr = getattr(attr, "__wrapped__", None)
    return False
