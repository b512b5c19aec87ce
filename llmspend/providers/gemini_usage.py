"""What the two Gemini SDK taps share: SDK objects as plain data, starting and settling calls.

What a request and a response say is read by :mod:`llmspend.dialects.gemini` (routes,
usage normalization, the text received); ``google-genai`` (pydantic objects) and
``google-generativeai`` (proto-plus messages) objects are read there through the one field
reader. Here: :func:`route` turns SDK request objects into plain data for the dialect,
:func:`begin` and :func:`run_recorded` begin and settle one request, and
:class:`StreamObserver` settles a stream exactly once. Nothing in this module raises into
the user's code but llmspend's own refusals (``BudgetExceeded``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import wrapt

from ..call import Call, Usage
from ..dialects import Reading, Route, field, tokens_from_bytes
from ..dialects import gemini as dialect
from ..dialects.media import png_header
from ..pipeline import asend_recorded, begin_call, internal_error, send_recorded, shielded

__all__ = [
    "ObservedAsyncIterator",
    "ObservedIterator",
    "StreamObserver",
    "arun_recorded",
    "begin",
    "finish_response",
    "request_upper_bound",
    "route",
    "run_recorded",
    "wrapper_in_chain",
]

_MAX_DEPTH = 24
#: Generation-config fields whose text the model reads (counted in the bound).
_CONFIG_TEXT = ("tool_config", "response_schema", "response_json_schema")


# -- SDK request objects as plain data -------------------------------------------------------


def _plain(obj: Any, depth: int = 0) -> Any:
    """SDK request objects as plain str/bytes/number/dict/list, for the offline input bound
    (plain data deeper than ``_MAX_DEPTH`` is passed on whole: the bound has no depth limit)."""
    if obj is None:
        return None
    if isinstance(obj, (str, bytes, bytearray, int, float)):
        return obj
    if depth > _MAX_DEPTH:
        return obj if isinstance(obj, (Mapping, list, tuple)) else None
    if isinstance(obj, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_plain(v, depth + 1) for v in obj]
    size = getattr(obj, "size", None)  # PIL images: counted by their size, as Gemini bills
    if isinstance(size, tuple) and len(size) == 2 and hasattr(obj, "mode"):
        try:
            return {"inline_data": {"mime_type": "image/png", "data": png_header(*size)}}
        except Exception:
            return {"file_data": {}}  # an image of unknown size: open-ended
    if isinstance(obj, type):  # a pydantic class as a response schema
        schema = getattr(obj, "model_json_schema", None)
        try:
            return _plain(schema(), depth + 1) if callable(schema) else None
        except Exception:
            return None
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
    """An offline upper bound on the input tokens of a request made of ``parts`` (SDK
    objects or plain data).

    Text and inline bytes count one token per byte (a BPE token covers at least a byte);
    images count ``MEDIA_TOKENS`` per 768-pixel tile. Never raises.
    """
    try:
        return dialect.input_upper(*[_plain(p) for p in parts])
    except Exception:
        return 0


# -- the call --------------------------------------------------------------------------------


def route(method: str, model: Any, body: dict[str, Any]) -> Route | None:
    """The dialect's route of REST ``method`` on ``model`` with ``body`` (SDK request
    objects are made plain here; the generation config is read as it is)."""
    name = model if isinstance(model, str) else str(model or "unknown")
    plain = {k: v if k == "generation_config" else _plain(v) for k, v in body.items()}
    config = body.get("generation_config")
    for key in _CONFIG_TEXT:  # billed text inside the config: as plain data
        value = field(config, key) if config is not None else None
        if value is not None and key not in plain:
            plain[key] = _plain(value)
    return shielded(dialect.route_for, method, name, plain, what="read a Gemini request")


def begin(route: Route | None, service_tier: str | None = None) -> Call | None:
    """:func:`~llmspend.pipeline.begin_call` for a routed request (``None``: untracked);
    ``service_tier``: the tier it asks for (priced unless the response names another)."""
    if route is None:
        return None
    return begin_call(
        route.provider, route.api, route.model, input_tokens=route.input_upper,
        payload=route.payload, max_output_tokens=route.output_cap, streamed=route.streamed,
        service_tier=service_tier,
    )  # fmt: skip


def _settle(call: Call, response: Any, settle: Callable[[Call, Any], None]) -> None:
    """``settle(call, response)``; if llmspend fails there, the call is settled from its
    input bound (estimated) and the failure logged: the response goes to the caller."""
    try:
        settle(call, response)
    except Exception as exc:
        internal_error("settle a Gemini call", exc)
        if not call.done:
            call.finish(Usage(tokens_from_bytes(call.input_upper)), usage_estimated=True)


def run_recorded(
    call: Call | None, send: Callable[[], Any], settle: Callable[[Call, Any], None]
) -> Any:
    """Send one request for ``call``: an error is recorded and re-raised unchanged, a
    response is handed to ``settle(call, response)``. Without a call (not installed) just send."""
    if call is None:
        return send()
    response = send_recorded(lambda exc: call.finish(None, status="error", error=exc), send)
    _settle(call, response, settle)
    return response


async def arun_recorded(
    call: Call | None, send: Callable[[], Awaitable[Any]], settle: Callable[[Call, Any], None]
) -> Any:
    """:func:`run_recorded` for a coroutine."""
    if call is None:
        return await send()
    response = await asend_recorded(lambda exc: call.finish(None, status="error", error=exc), send)
    _settle(call, response, settle)
    return response


def finish_response(call: Call, response: Any, input_upper: int, api: str = "") -> None:
    """Settle a complete (non-streamed) response: its usage, else an estimate."""
    try:
        reading = dialect.read(api or call.api, response)
    except Exception as exc:  # an unreadable response must not break the caller
        internal_error("read a Gemini response", exc)
        reading = Reading(None)
    usage, estimated = reading.usage, reading.usage is None
    if usage is None:
        usage = Usage(
            tokens_from_bytes(input_upper), output_tokens=tokens_from_bytes(reading.out_bytes)
        )
    call.finish(
        usage,
        response_model=reading.model,
        request_id=reading.response_id,
        usage_estimated=estimated,
        service_tier=reading.service_tier,
    )


class StreamObserver:
    """Watches one streamed HTTP response chunk by chunk and settles its call exactly once.

    Gemini stream chunks carry cumulative usage, so the last one received is the best
    report. Settling: :meth:`complete` at exhaustion, :meth:`fail` on an error (``error``
    before any chunk), :meth:`abandon` on close/GC — each ``ok`` once the terminal chunk
    (finish reason or blocked prompt) has arrived, else ``partial``. Partial settlements
    are flagged ``usage_estimated``.
    """

    __slots__ = ("_finalizer", "_lock", "call", "input_upper", "reader")

    def __init__(self, call: Call, input_upper: int) -> None:
        self.call = call
        self.input_upper = input_upper
        self.reader = dialect.reader(call.api)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = threading.Lock()

    @property
    def terminal(self) -> bool:
        """Whether the terminal chunk (finish reason or blocked prompt) has arrived."""
        return self.reader.complete

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
                self.reader.feed(chunk)
        except Exception as exc:
            internal_error("read a Gemini stream chunk", exc)

    def _estimate(self, reading: Reading) -> Usage:
        out = tokens_from_bytes(reading.out_bytes)
        if reading.usage is not None:
            u = reading.usage
            extra = max(0, out - (u.output_tokens - u.reasoning_tokens))
            return Usage(u.input_tokens, u.cached_input_tokens, 0, u.output_tokens + extra,
                         u.reasoning_tokens)  # fmt: skip
        return Usage(tokens_from_bytes(self.input_upper), output_tokens=out)

    def _settle(self, status: str, error: BaseException | None = None) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if status == "error":
            self.call.finish(None, status="error", error=error)
            return
        try:
            reading = self.reader.result()
            estimated = status != "ok" or reading.usage is None
            usage = reading.usage if not estimated else self._estimate(reading)
        except Exception as exc:
            internal_error("read a Gemini stream", exc)
            reading, estimated = Reading(None), True
            usage = Usage(tokens_from_bytes(self.input_upper))
        self.call.finish(usage, status=status, response_model=reading.model,
                         request_id=reading.response_id, error=error,
                         usage_estimated=estimated,
                         service_tier=reading.service_tier)  # fmt: skip

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
            self._settle("error" if self.reader.chunks == 0 else "partial", error)

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
