"""llmspend plugin for ``google-genai`` (``from google import genai``), the current Gemini SDK.

Hook points (``google.genai.models``, class level, so clients created before ``install()``,
``client.aio`` and chats are all covered):

* ``Models._generate_content`` / ``_generate_content_stream`` and the ``AsyncModels``
  twins — one invocation per HTTP request. The public ``generate_content`` loops over
  them for automatic function calling (AFC) and automatic continuation, so recording
  here gives one row per billed request; chats call the public methods, so nothing is
  counted twice.
* ``Models.generate_content`` / ``generate_content_stream`` (and async) — a fallback
  only: they pass straight through while the private hook above is in place, and record
  (one row per public call, with a warning logged once) on an SDK version without it.
* ``Models.embed_content`` / ``AsyncModels.embed_content`` — one request each.
* ``google.genai.batches``: Batch Mode jobs (:mod:`.genai_batches`).

Streams are observed chunk by chunk without changing what the caller receives (the same
chunk objects, in the same order); see :class:`~.gemini_usage.StreamObserver`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from typing import Any

from ..call import Call
from ..dialects import Route, field
from ..pipeline import handled
from ..plugins import Patch
from ..teammode import avia_gateway, gateway_client_url_bound, via_gateway
from .gemini_usage import (
    ObservedAsyncIterator,
    StreamObserver,
    arun_recorded,
    begin,
    finish_response,
    route,
    run_recorded,
    wrapper_in_chain,
)
from .genai_batches import patches as batch_patches

__all__ = ["GoogleGenAIPlugin"]

log = logging.getLogger("llmspend")

MODULE = "google.genai.models"


# -- reading the request ---------------------------------------------------------------------


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, index: int) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _route(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Route | None:
    """The dialect's route of a ``generate_content``/``embed_content``-shaped call."""
    model = _arg(args, kwargs, "model", 0)
    contents = _arg(args, kwargs, "contents", 1)
    if method == "embedContent":
        return route(method, model, {"content": contents})
    config = _arg(args, kwargs, "config", 2)
    return route(
        method,
        model,
        {
            "contents": contents,
            "system_instruction": field(config, "system_instruction"),
            "tools": field(config, "tools"),
            "generation_config": config,
        },
    )


def _tier(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The service tier a request asks for (``config.service_tier``), lower case, or ``None``.

    google-genai's response type drops the Gemini API's ``usageMetadata.serviceTier``, so
    the tier asked for is the one priced; a response that names one (Vertex AI's
    ``traffic_type``) wins."""
    tier = field(_arg(args, kwargs, "config", 2), "service_tier")
    tier = getattr(tier, "value", tier)
    return tier.lower() if isinstance(tier, str) and tier else None


def _upper(r: Route | None) -> int:
    return r.input_upper or 0 if r is not None else 0


# -- non-streamed requests -------------------------------------------------------------------


async def _asend(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Await the SDK's request, marked as recorded here (the transport taps pass it by)."""
    with handled():
        return await wrapped(*args, **kwargs)


def _bound(instance: Any) -> bool:
    """Team mode: does this ``Models``/``AsyncModels`` send to the llmspend gateway (its
    client's ``base_url``)? Then the gateway budgets and records the call."""
    try:
        base = instance._api_client._http_options.base_url
    except Exception:
        return False
    return gateway_client_url_bound(base)


def _gateway_stream(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    """A gateway-bound sync stream: the request goes out at the first step."""
    inner = iter(wrapped(*args, **kwargs))
    try:
        while True:
            chunk = via_gateway(lambda: next(inner, _END))
            if chunk is _END:
                return
            yield chunk
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()


def _generate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One ``generateContent`` request (sync)."""
    if _bound(instance):
        return via_gateway(lambda: wrapped(*args, **kwargs))
    r = _route("generateContent", args, kwargs)
    return run_recorded(
        begin(r, _tier(args, kwargs)),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _finish(c, resp, r),
    )


async def _agenerate(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """One ``generateContent`` request (async)."""
    if _bound(instance):
        return await avia_gateway(lambda: wrapped(*args, **kwargs))
    r = _route("generateContent", args, kwargs)
    return await arun_recorded(
        begin(r, _tier(args, kwargs)),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _finish(c, resp, r),
    )


def _finish(call: Call, response: Any, r: Route | None) -> None:
    """Settle a generate or embed response (embeddings without usage metadata read their
    per-embedding statistics, else are estimated)."""
    finish_response(call, response, _upper(r))


def _embed(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Models.embed_content``: one request."""
    if _bound(instance):
        return via_gateway(lambda: wrapped(*args, **kwargs))
    r = _route("embedContent", args, kwargs)
    return run_recorded(
        begin(r, _tier(args, kwargs)),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _finish(c, resp, r),
    )


async def _aembed(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncModels.embed_content``: one request."""
    if _bound(instance):
        return await avia_gateway(lambda: wrapped(*args, **kwargs))
    r = _route("embedContent", args, kwargs)
    return await arun_recorded(
        begin(r, _tier(args, kwargs)),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _finish(c, resp, r),
    )


# -- streamed requests -----------------------------------------------------------------------


_END = object()


def _stream(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``_generate_content_stream`` is a generator function: so is its replacement.

    Nothing is sent until the first ``next()``; the call begins there too, so a budget
    refusal surfaces at the first iteration, before the request.
    """
    if _bound(instance):
        return _gateway_stream(wrapped, args, kwargs)
    return _observe_stream(wrapped, args, kwargs)


def _observe_stream(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    r = _route("streamGenerateContent", args, kwargs)
    call = begin(r, _tier(args, kwargs))
    if call is None:
        yield from wrapped(*args, **kwargs)
        return
    observer = StreamObserver(call, _upper(r))
    inner = None
    try:
        inner = iter(wrapped(*args, **kwargs))
        while True:
            with handled():  # the request goes out at the first step; never across a yield
                chunk = next(inner, _END)
            if chunk is _END:
                break
            observer.observe(chunk)
            yield chunk
    except GeneratorExit:  # the caller closed (or dropped) the stream
        observer.abandon()
        raise
    except BaseException as exc:
        observer.fail(exc)
        raise
    else:
        observer.complete()
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()


async def _astream(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncModels._generate_content_stream``: awaiting it sends the request and returns
    an async iterator; ours yields the very same chunks while observing them."""
    if _bound(instance):
        return await avia_gateway(lambda: wrapped(*args, **kwargs))
    r = _route("streamGenerateContent", args, kwargs)
    call = begin(r, _tier(args, kwargs))
    if call is None:
        return await wrapped(*args, **kwargs)
    observer = StreamObserver(call, _upper(r))
    try:
        stream = await _asend(wrapped, args, kwargs)
    except BaseException as exc:
        observer.fail(exc)
        raise
    # A plain async iterator (not an async generator): when the SDK drops it, it goes at
    # once, and the SDK's own stream is finalized exactly as it would be without llmspend.
    observed = ObservedAsyncIterator(stream, observer)
    observer.settle_on_gc(observed)
    return observed


# -- fallback on the public methods ------------------------------------------------------------

_PRIVATE = {
    "generate_content": ("_generate_content", _generate, _agenerate),
    "generate_content_stream": ("_generate_content_stream", _stream, _astream),
}
_OURS = frozenset({_generate, _agenerate, _stream, _astream})
_warned: set[str] = set()


def _private_hooked(instance: Any, private: str) -> bool:
    """Whether our wrapper sits on ``type(instance).<private>`` (the per-request hook)."""
    try:
        attr = inspect.getattr_static(type(instance), private, None)
    except Exception:
        return False
    return wrapper_in_chain(attr, _OURS)


def _fallback(public: str, is_async: bool) -> Any:
    private, sync_hook, async_hook = _PRIVATE[public]
    hook = async_hook if is_async else sync_hook

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _private_hooked(instance, private):
            return wrapped(*args, **kwargs)
        if public not in _warned:
            _warned.add(public)
            log.warning(
                "llmspend: google-genai %s has no %s hook on this SDK version; recording one "
                "row per %s call (requests made by automatic function calling are merged)",
                type(instance).__name__, private, public,
            )  # fmt: skip
        return hook(wrapped, instance, args, kwargs)

    wrapper.__name__ = f"_fallback_{'async_' if is_async else ''}{public}"
    return wrapper


_PUBLIC = {
    (cls, name): _fallback(name, cls == "AsyncModels")
    for cls in ("Models", "AsyncModels")
    for name in ("generate_content", "generate_content_stream")
}


class GoogleGenAIPlugin:
    """The ``google-genai`` provider plugin."""

    name = "google_genai"

    def patches(self) -> list[Patch]:
        """Per-request hooks first, then the public fallbacks and embeddings."""
        return [
            Patch(MODULE, "Models._generate_content", _generate),
            Patch(MODULE, "Models._generate_content_stream", _stream),
            Patch(MODULE, "AsyncModels._generate_content", _agenerate),
            Patch(MODULE, "AsyncModels._generate_content_stream", _astream),
            *(Patch(MODULE, f"{cls}.{name}", w) for (cls, name), w in _PUBLIC.items()),
            Patch(MODULE, "Models.embed_content", _embed),
            Patch(MODULE, "AsyncModels.embed_content", _aembed),
            *batch_patches(),
        ]
