"""llmspend plugin for the legacy ``google-generativeai`` SDK (``import google.generativeai``).

Hook points:

* ``GenerativeModel.generate_content`` / ``generate_content_async`` — one request each
  (``ChatSession.send_message`` and its automatic function calling go through them: one
  row per request, nothing counted twice). With ``stream=True`` the SDK reads the first
  chunk before returning; later chunks are observed through the response's own iterator
  (a transparent proxy), so the caller sees the same response object and chunks. The call
  settles at exhaustion, on error (``partial`` once chunks arrived) or when the response
  is garbage-collected (``partial`` unless the final chunk had arrived).
* ``embedding.embed_content`` / ``embed_content_async`` and the package-level names
  (a from-import re-export, a separate attribute to patch). The SDK sends a list in
  batches of 100: each batch is recorded as its own row. Its embedding protos drop the
  server's usage, so embedding tokens are estimated (``usage_estimated``) from the text.

The SDK's proto also drops ``thoughtsTokenCount``: thoughts are ``total − prompt −
candidates`` (see :mod:`.gemini_usage`).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..call import Call, Usage
from ..dialects import Route, field, tokens_from_bytes
from ..dialects import gemini as dialect
from ..plugins import Patch
from .gemini_usage import (
    ObservedAsyncIterator,
    ObservedIterator,
    StreamObserver,
    arun_recorded,
    begin,
    finish_response,
    request_upper_bound,
    route,
    run_recorded,
    wrapper_in_chain,
)

__all__ = ["GoogleGenerativeAIPlugin"]

log = logging.getLogger("llmspend")

PACKAGE = "google.generativeai"
MODELS = "google.generativeai.generative_models"
EMBEDDING = "google.generativeai.embedding"
_BATCH = 100  # EMBEDDING_MAX_BATCH_SIZE in google-generativeai 0.8

#: Set while one of our embedding hooks runs, so that a hook found under another of ours
#: (the package name re-exporting the module's function) does not record it again.
_in_embed: contextvars.ContextVar[bool] = contextvars.ContextVar("llmspend_gemini_embed")


# -- generate_content ------------------------------------------------------------------------


def _request(
    instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Route | None, bool]:
    """The dialect's route of a generate_content call, and whether it streams."""
    stream = bool(kwargs.get("stream", False))
    contents = kwargs.get("contents", args[0] if args else None)
    tools = kwargs.get("tools") or getattr(instance, "_tools", None)
    max_out = dialect.max_output_tokens(
        kwargs.get("generation_config"), getattr(instance, "_generation_config", None)
    )
    body = {
        "contents": contents,
        "system_instruction": getattr(instance, "_system_instruction", None),
        "tools": tools,
        "generation_config": {"max_output_tokens": max_out},
    }
    model = getattr(instance, "model_name", None) or "unknown"
    method = "streamGenerateContent" if stream else "generateContent"
    return route(method, model, body), stream


def _upper(r: Route | None) -> int:
    return r.input_upper or 0 if r is not None else 0


def _settle(call: Call, response: Any, upper: int, stream: bool, is_async: bool) -> None:
    """Settle a non-streamed response now; attach an observer to a streamed one."""
    if not stream:
        finish_response(call, getattr(response, "_result", response), upper)
        return
    observer = StreamObserver(call, upper)
    chunks = getattr(response, "_chunks", None)
    iterator = getattr(response, "_iterator", None)
    for chunk in chunks if isinstance(chunks, list) else ():
        observer.observe(chunk)
    if iterator is None or getattr(response, "_done", False):
        observer.complete()  # nothing left to read (or an SDK version we cannot follow)
        return
    proxy = ObservedAsyncIterator if is_async else ObservedIterator
    try:
        response._iterator = proxy(iterator, observer)
    except Exception:  # pragma: no cover - an SDK that forbids it: settle with what we have
        observer.abandon()
        return
    observer.settle_on_gc(response)


def _generate(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``GenerativeModel.generate_content``: one request."""
    r, stream = _request(instance, args, kwargs)
    upper = _upper(r)
    return run_recorded(
        begin(r),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _settle(c, resp, upper, stream, is_async=False),
    )


async def _agenerate(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``GenerativeModel.generate_content_async``: one request (gRPC)."""
    r, stream = _request(instance, args, kwargs)
    upper = _upper(r)
    return await arun_recorded(
        begin(r),
        lambda: wrapped(*args, **kwargs),
        lambda c, resp: _settle(c, resp, upper, stream, is_async=True),
    )


# -- embed_content ---------------------------------------------------------------------------


def _model_name(model: Any) -> str:
    name = model if isinstance(model, str) else field(model, "name")
    return name if isinstance(name, str) and name else "unknown"


def _plan(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The requests an ``embed_content`` call will send: (model, [(kwargs, items)]).

    None when the arguments do not bind (the SDK raises its own error) or nothing will be
    sent (an empty list).
    """
    try:
        bound = inspect.signature(wrapped).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    arguments = dict(bound.arguments)
    content = arguments.get("content")
    model = _model_name(arguments.get("model"))
    if not isinstance(content, Iterable) or isinstance(content, (str, Mapping)):
        return model, [(arguments, [content])]
    items = list(content)
    if not items:
        return None
    size = getattr(sys.modules.get(EMBEDDING), "EMBEDDING_MAX_BATCH_SIZE", _BATCH)
    size = size if isinstance(size, int) and size > 0 else _BATCH
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    return model, [({**arguments, "content": batch}, batch) for batch in batches]


def _embed_usage(result: Any, items: list[Any]) -> tuple[Usage, bool]:
    """(usage, estimated): the response's usage if it has any, else one per text/4."""
    usage = dialect.usage_of(result)
    if usage is not None:
        return usage, False
    tokens = sum(max(1, tokens_from_bytes(request_upper_bound(item))) for item in items)
    return Usage(tokens), True


def _merge(results: list[Any]) -> Any:
    """What the SDK returns for a list sent in several batches."""
    merged: dict[str, Any] = {"embedding": []}
    for result in results:
        merged["embedding"].extend(result["embedding"])
    return merged


def _embed(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``embed_content``: one row per batch request."""
    plan = None if _in_embed.get(False) else _plan(wrapped, args, kwargs)
    if plan is None:
        return wrapped(*args, **kwargs)
    model, requests = plan
    token = _in_embed.set(True)
    try:
        if len(requests) == 1:  # (an iterable content was read into a list: pass that)
            return _embed_one(wrapped, model, requests[0][0], requests[0][1])
        return _merge([_embed_one(wrapped, model, kw, items) for kw, items in requests])
    finally:
        _in_embed.reset(token)


def _finish_embed(call: Call, result: Any, items: list[Any]) -> None:
    usage, estimated = _embed_usage(result, items)
    call.finish(usage, usage_estimated=estimated)


def _embed_one(wrapped: Any, model: str, kwargs: dict[str, Any], items: list[Any]) -> Any:
    call = begin(route("embedContent", model, {"content": items}))
    return run_recorded(call, lambda: wrapped(**kwargs), lambda c, r: _finish_embed(c, r, items))


async def _aembed(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``embed_content_async``: one row per batch request."""
    plan = None if _in_embed.get(False) else _plan(wrapped, args, kwargs)
    if plan is None:
        return await wrapped(*args, **kwargs)
    model, requests = plan
    token = _in_embed.set(True)
    try:
        if len(requests) == 1:
            return await _aembed_one(wrapped, model, requests[0][0], requests[0][1])
        return _merge([await _aembed_one(wrapped, model, kw, it) for kw, it in requests])
    finally:
        _in_embed.reset(token)


async def _aembed_one(wrapped: Any, model: str, kwargs: dict[str, Any], items: list[Any]) -> Any:
    call = begin(route("embedContent", model, {"content": items}))
    return await arun_recorded(
        call, lambda: wrapped(**kwargs), lambda c, r: _finish_embed(c, r, items)
    )


# -- the plugin ------------------------------------------------------------------------------

_EMBED_HOOKS = frozenset({_embed, _aembed})


def _realign_reexports() -> None:
    """Undo the package's from-import having copied our module-level wrapper.

    When ``google.generativeai`` is first imported after ``install()``, its submodule
    ``embedding`` is patched before the package runs ``from .embedding import
    embed_content``: the package name would then hold our wrapper, get wrapped again,
    and keep our wrapper after ``uninstall()``. Point it back at the SDK's function so
    that each name carries exactly one wrapper of ours and is restored exactly.
    """
    package, module = sys.modules.get(PACKAGE), sys.modules.get(EMBEDDING)
    if package is None or module is None:
        return
    for name in ("embed_content", "embed_content_async"):
        current = package.__dict__.get(name)
        original = getattr(current, "__wrapped__", None)
        if (
            original is not None
            and current is module.__dict__.get(name)
            and wrapper_in_chain(current, _EMBED_HOOKS)
        ):
            setattr(package, name, original)


class GoogleGenerativeAIPlugin:
    """The ``google-generativeai`` (legacy) provider plugin."""

    name = "google_generativeai"

    def patches(self) -> list[Patch]:
        """Model methods, and both names of each embedding function."""
        try:
            _realign_reexports()
        except Exception:  # pragma: no cover - never block install()
            log.debug("llmspend: could not realign google.generativeai names", exc_info=True)
        return [
            Patch(MODELS, "GenerativeModel.generate_content", _generate),
            Patch(MODELS, "GenerativeModel.generate_content_async", _agenerate),
            Patch(EMBEDDING, "embed_content", _embed),
            Patch(EMBEDDING, "embed_content_async", _aembed),
            Patch(PACKAGE, "embed_content", _embed),
            Patch(PACKAGE, "embed_content_async", _aembed),
        ]
