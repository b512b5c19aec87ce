"""llmspend plugin for the ``openai`` SDK (OpenAI, Azure OpenAI, xAI, OpenRouter and any
OpenAI-compatible host).

Hook points (class level, applied by ``install()``, removed exactly by ``uninstall()``):

* ``openai._base_client.SyncAPIClient.request`` and ``AsyncAPIClient.request``. Every SDK
  request passes there — ``create``, ``parse``, the ``.stream()`` helpers,
  ``with_raw_response`` / ``with_streaming_response`` (even when first accessed before
  ``install()``: they capture bound *resource* methods, which still call ``request``),
  module-level ``openai.chat...`` and clients created before or after ``install()``.
  Retries happen inside ``request``, so one hooked call is one billed call.

The request is handed, as plain data, to :mod:`llmspend.dialects.openai`, which says
what is tracked (``options.url``, POST only, see its ``ROUTES``); everything
else (model lists, files, ``input_tokens`` counting...) passes straight through. A
``GET /responses/{id}`` (``retrieve``, also ``stream=True``) or ``cancel`` is looked at only
when it concerns a background response still awaiting its usage (see
:mod:`.openai_calls`).

Streams: chat/completions streams carry usage only with
``stream_options={"include_usage": True}``. ``LLMSPEND_STREAM_USAGE`` chooses:

* ``auto`` (default): inject it for known providers (openai, azure, xai, openrouter) and
  hide the extra usage-only chunk, so the caller sees exactly the chunks it would see
  without llmspend; other hosts are never sent extra parameters and are settled from an
  estimate (``usage_estimated``).
* ``inject``: inject for every host. ``estimate``: never inject.

A caller who asked for ``include_usage`` keeps their usage chunk. Raw responses
(``with_raw_response`` / ``with_streaming_response``) are never injected into, since the
caller may read their bytes.
"""

from __future__ import annotations

import copy as _copy
import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..dialects import Request, Route
from ..dialects import openai as dialect
from ..pipeline import (
    asend_recorded,
    begin_call,
    handled,
    internal_error,
    json_key,
    send_recorded,
    shielded,
)
from ..plugins import Patch
from ..teammode import avia_gateway, client_bound, via_gateway
from .openai_batches import begin_batch, created, watch
from .openai_calls import LEDGER, CallContext
from .openai_streams import observe_raw, observe_stream, settle_bytes

__all__ = ["KNOWN_PROVIDERS", "OpenAIPlugin", "detect_provider", "stream_usage_mode"]

log = logging.getLogger("llmspend")

MODULE = "openai._base_client"

#: Providers known to accept ``stream_options.include_usage`` (injected in ``auto`` mode).
KNOWN_PROVIDERS = frozenset({"openai", "azure", "xai", "openrouter"})
_RAW_HEADER = "X-Stainless-Raw-Response"
_ROUTES = dialect.ROUTES
_AZURE_CLASSES = frozenset({"BaseAzureClient", "AzureOpenAI", "AsyncAzureOpenAI"})
_MODES = frozenset({"auto", "inject", "estimate"})


# -- provider detection ------------------------------------------------------------------------


class _Detected(NamedTuple):
    """A client's base URL and class, and the provider they mean."""

    url: Any
    client_class: type
    provider: str


# id(base_url) -> what it was detected as. Invariant: an entry is used only while its URL
# object is the client's (``hit.url is url``); kept here, a URL (immutable) cannot be
# collected and its id reused by another. Reading a URL's host costs more than the rest.
_provider_cache: dict[int, _Detected] = {}


def detect_provider(client: Any) -> str:
    """The provider of an ``openai`` client: Azure classes, else by ``base_url.host``."""
    try:
        url = client.base_url
    except Exception:
        url = None
    hit = _provider_cache.get(id(url))
    if hit is not None and hit.url is url and hit.client_class is type(client):
        return hit.provider
    try:
        host = str(url.host)
    except Exception:
        host = ""
    names = {cls.__name__ for cls in type(client).__mro__}
    provider = "azure" if names & _AZURE_CLASSES else dialect.provider_for_host(host)
    if len(_provider_cache) < 256:
        _provider_cache[id(url)] = _Detected(url, type(client), provider)
    return provider


def stream_usage_mode() -> str:
    """``LLMSPEND_STREAM_USAGE``: ``auto`` (default), ``inject`` or ``estimate``."""
    mode = os.environ.get("LLMSPEND_STREAM_USAGE", "auto").strip().lower()
    return mode if mode in _MODES else "auto"


# -- reading the request -----------------------------------------------------------------------


class _Plan(NamedTuple):
    route: Route
    body: Mapping[str, Any]
    streamed: bool
    raw: bool


def _options_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[1] if len(args) > 1 else kwargs.get("options")


def _pending_id(options: Any) -> str | None:
    """The id of a parked background response this request retrieves or cancels."""
    parts = options.url.split("/")
    if len(parts) < 3 or parts[1] != "responses" or parts[2] not in LEDGER:
        return None
    method = str(options.method).lower()
    if (len(parts) == 3 and method == "get") or (parts[3:] == ["cancel"] and method == "post"):
        return parts[2]
    return None


def _plan(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan | str | None:
    """What to track for this request: a plan, a parked response id, or ``None``."""
    options = _options_of(args, kwargs)
    url = options.url
    if url not in _ROUTES and dialect.api_of(url) is None:  # (most requests stop here)
        return _pending_id(options) if LEDGER else None
    url = dialect.normalize_path(url)
    body = options.json_data
    if type(body) is not dict and not isinstance(body, Mapping):
        body = {}
    if options.extra_json:
        body = {**body, **options.extra_json}
    headers = options.headers
    request = Request(str(options.method), url, body, headers)
    route = dialect.route(request, provider=detect_provider(instance))
    if route is None:  # not a POST
        return None
    raw = isinstance(headers, Mapping) and bool(headers.get(_RAW_HEADER))
    return _Plan(route, body, bool(kwargs.get("stream")), raw)


def _inject_usage(plan: _Plan) -> bool:
    """Whether to add ``stream_options.include_usage`` to this streamed request."""
    if not plan.streamed or plan.raw or plan.route.api not in dialect.CHAT_APIS:
        return False
    asked = plan.body.get("stream_options")
    if isinstance(asked, Mapping) and asked.get("include_usage"):
        return False
    mode = stream_usage_mode()
    return mode == "inject" or (mode == "auto" and plan.route.provider in KNOWN_PROVIDERS)


def _with_usage_option(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments with a copy of the options asking for usage in the stream."""
    options = _options_of(args, kwargs)
    copy = _copy.copy(options)  # shallow: the caller's options and body stay untouched
    body = dict(options.json_data) if isinstance(options.json_data, Mapping) else {}
    asked = body.get("stream_options")
    body["stream_options"] = {
        **(asked if isinstance(asked, Mapping) else {}),
        "include_usage": True,
    }
    copy.json_data = body
    if options.extra_json and "stream_options" in options.extra_json:
        copy.extra_json = {**options.extra_json, "stream_options": body["stream_options"]}
    if len(args) > 1:
        return (args[0], copy, *args[2:]), kwargs
    return args, {**kwargs, "options": copy}


def _begin(
    instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """Start the call (budget check included) and adjust the request if needed: a
    :class:`CallContext`, a parked background response's id, an observer of a batch
    request's result (:mod:`.openai_batches`) or ``None``.

    Only llmspend's own refusals (``BudgetExceeded``, ``StoreUnavailable``) propagate;
    any other failure here leaves the call untracked and the request unchanged.
    """
    try:
        plan = _plan(instance, args, kwargs)
    except Exception as exc:  # an unexpected request shape, or a bug: stay out of the way
        internal_error("read an openai request", exc)
        plan = None
    if plan is None:
        try:
            options = _options_of(args, kwargs)
            return watch(str(options.method).lower(), options.url, options), args, kwargs
        except Exception as exc:
            internal_error("read an openai batch request", exc)
            return None, args, kwargs
    if isinstance(plan, str):
        return plan, args, kwargs
    route = plan.route
    if route.api == "batches":
        call = begin_batch(route.provider, plan.body)
    else:
        call = begin_call(
            route.provider,
            route.api,
            route.model,
            payload=route.payload,
            max_output_tokens=route.output_cap,
            streamed=plan.streamed,
            service_tier=dialect.requested_tier(route.api, plan.body),
            request_key=json_key("POST", route.api, plan.body),
        )  # may raise BudgetExceeded: nothing has been sent
    if call is None:
        return None, args, kwargs
    injected = False
    try:
        if _inject_usage(plan):
            args, kwargs = _with_usage_option(args, kwargs)
            injected = True
    except Exception:
        log.debug("llmspend could not ask for stream usage", exc_info=True)
    ctx = CallContext(call, route.api, route.provider, plan.body, injected=injected)
    return ctx, args, kwargs


# -- reading the result ------------------------------------------------------------------------


class _SdkTypes(NamedTuple):
    """The SDK's result classes an observer tells apart (imported on first use)."""

    streams: tuple[type[Any], ...]  # Stream, AsyncStream
    raws: tuple[type[Any], ...]  # with_raw_response / with_streaming_response results
    binary: type[Any]  # audio.speech content
    http_response: type[Any]  # httpx2.Response


_sdk_types: _SdkTypes | None = None


def _types() -> _SdkTypes:
    """The SDK's result classes (imported when first needed: openai is loaded by then)."""
    global _sdk_types
    if _sdk_types is None:
        import httpx2
        from openai._legacy_response import HttpxBinaryResponseContent, LegacyAPIResponse
        from openai._response import BaseAPIResponse
        from openai._streaming import AsyncStream, Stream

        raw = (LegacyAPIResponse, BaseAPIResponse)
        _sdk_types = _SdkTypes((Stream, AsyncStream), raw, HttpxBinaryResponseContent,
                               httpx2.Response)  # fmt: skip
    return _sdk_types


def _observe(ctx: CallContext, result: Any, *, is_async: bool) -> Any:
    """Settle now (complete results) or arrange to settle later (streams, raw bodies)."""
    try:
        sdk = _types()
        if ctx.api == "batches":
            created(ctx.call, result)
        elif isinstance(result, sdk.streams):
            observe_stream(ctx, result, is_async=is_async)
        elif isinstance(result, sdk.raws):
            observe_raw(ctx, result, result.http_response, is_async=is_async)
        elif isinstance(result, sdk.http_response):
            observe_raw(ctx, result, result, is_async=is_async)
        elif isinstance(result, sdk.binary):  # audio.speech: bytes, or SSE with usage
            http = result.response
            rid = http.headers.get("x-request-id")
            ctype = http.headers.get("content-type", "")
            settle_bytes(ctx, http.content, ctype, rid, ended=True)
        else:
            ctx.finish_result(result)
    except Exception as exc:  # recording must never break the caller's call
        internal_error(f"read an openai {ctx.api} result", exc)
        shielded(ctx.finish_estimate, "ok", what="estimate an openai call")
    return result


def _resume(response_id: str, result: Any, *, is_async: bool) -> Any:
    """A retrieve/cancel of a parked background response: settle it once it is final."""
    try:
        ctx = LEDGER.get(response_id)
        sdk = _types()
        if ctx is None or isinstance(result, sdk.raws):
            return result
        if isinstance(result, sdk.streams):
            observe_stream(ctx, result, is_async=is_async, resume=True)
        else:
            LEDGER.resolve(response_id, result)
    except Exception as exc:
        internal_error("read a retrieved response", exc)
    return result


# -- the hooks -----------------------------------------------------------------------------------


def _request(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``SyncAPIClient.request``: one billed call (retries included)."""
    if client_bound(instance):  # team mode: the gateway's call to record
        return via_gateway(lambda: wrapped(*args, **kwargs))
    ctx, args, kwargs = _begin(instance, args, kwargs)
    if ctx is None:
        return wrapped(*args, **kwargs)
    if callable(ctx):  # a batch input upload, a batch or its results read
        with handled():
            result = wrapped(*args, **kwargs)
        shielded(ctx, result, what="read an openai batch")
        return result
    if isinstance(ctx, str):
        with handled():
            result = wrapped(*args, **kwargs)
        return _resume(ctx, result, is_async=False)
    result = send_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
    return _observe(ctx, result, is_async=False)


async def _arequest(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncAPIClient.request``: one billed call (retries included)."""
    if client_bound(instance):  # team mode: the gateway's call to record
        return await avia_gateway(lambda: wrapped(*args, **kwargs))
    ctx, args, kwargs = _begin(instance, args, kwargs)
    if ctx is None:
        return await wrapped(*args, **kwargs)
    if callable(ctx):  # a batch input upload, a batch or its results read
        with handled():
            result = await wrapped(*args, **kwargs)
        shielded(ctx, result, what="read an openai batch")
        return result
    if isinstance(ctx, str):
        with handled():
            result = await wrapped(*args, **kwargs)
        return _resume(ctx, result, is_async=True)
    result = await asend_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
    return _observe(ctx, result, is_async=True)


class OpenAIPlugin:
    """The built-in ``openai`` SDK provider plugin."""

    name = "openai"

    def patches(self) -> list[Patch]:
        """The two request hooks (see the module docstring)."""
        return [
            Patch(MODULE, "SyncAPIClient.request", _request),
            Patch(MODULE, "AsyncAPIClient.request", _arequest),
        ]
