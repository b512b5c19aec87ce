"""llmspend plugin for the ``anthropic`` SDK (the Messages API).

Hook points (class level, applied by ``install()``, removed exactly by ``uninstall()``):

* ``anthropic._base_client.SyncAPIClient.request`` and ``AsyncAPIClient.request``. Every
  SDK request passes there — ``messages.create`` (also ``stream=True``), the
  ``messages.stream()`` helpers (they call ``request`` with ``stream=True``),
  ``with_raw_response`` / ``with_streaming_response``, ``beta.messages``,
  ``messages.count_tokens`` — for clients created before or after ``install()``. Retries
  happen inside ``request``, so :func:`~llmspend.pipeline.begin_call` runs once before the
  retry loop: a budget refusal raises ``BudgetExceeded`` once, before anything is sent (the
  SDK would wrap an exception raised inside its loop into ``APIConnectionError`` and retry),
  and one hooked call is one row. The send runs inside :func:`~llmspend.pipeline.handled`,
  so the transport taps under the SDK pass it through. The SDK's client middleware is not
  used: it runs once per attempt.

The request is handed, as plain data, to :mod:`llmspend.dialects.anthropic`, which says
what is tracked (``/v1/messages``, also ``?beta=true``; ``count_tokens`` is free and gives
no row; everything else passes straight through), except Message Batches: their creation
is reserved and their results read by :mod:`.anthropic_batches`.

Provider label: ``anthropic``, except for the SDK's cloud clients, which cross these same
hooks with the same ``/v1/messages`` options (they rewrite the URL later, in
``_prepare_options``): ``AnthropicBedrock`` / ``AnthropicBedrockMantle`` (Amazon Bedrock)
are recorded as ``aws`` and ``AnthropicVertex`` / ``AnthropicGoogleCloud`` as ``google`` —
the genai-prices provider ids that price those clients' model names (``anthropic.claude-…``
Bedrock ids are unknown to its ``anthropic`` provider). ``AnthropicAWS`` (Claude Platform
on AWS: Anthropic's own API at ``aws-external-anthropic.{region}.api.aws``, plain Claude
names) is ``anthropic``: it is priced as Anthropic's API, not with Bedrock's regional +10%.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..dialects import Reading, Request
from ..dialects import anthropic as dialect
from ..errors import LLMSpendError
from ..pipeline import (
    asend_recorded,
    begin_call,
    internal_error,
    json_key,
    send_recorded,
    shielded,
)
from ..plugins import Patch
from ..teammode import avia_gateway, client_bound, via_gateway
from .anthropic_batches import BatchRequest, batch_request
from .anthropic_streams import CallContext, observe_raw, observe_stream

__all__ = ["AnthropicPlugin", "detect_provider"]

MODULE = "anthropic._base_client"
_CLOUDS = (("Bedrock", "aws"), ("Vertex", "google"), ("GoogleCloud", "google"))
_by_class: dict[type, str] = {}


def detect_provider(client: Any) -> str:
    """The provider label of an anthropic client, by its class (see the module docstring)."""
    cls = type(client)
    provider = _by_class.get(cls)
    if provider is None:
        names = [c.__name__ for c in cls.__mro__]
        provider = next(
            (label for part, label in _CLOUDS if any(part in name for name in names)),
            dialect.PROVIDER,
        )
        if len(_by_class) < 256:
            _by_class[cls] = provider
    return provider


def _begin(
    instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> CallContext | BatchRequest | None:
    """Start the call (budget check included): a :class:`CallContext`, a batch creation or
    results read (:mod:`.anthropic_batches`), or ``None`` when it is not tracked.

    Only llmspend's own refusals propagate; any other failure leaves the call untracked.
    """
    try:
        options: Any = args[1] if len(args) > 1 else kwargs["options"]
        url = options.url
        if dialect.api_of(url) is None:  # (most requests stop here)
            if "/batches" not in url:
                return None
            provider = detect_provider(instance)
            return batch_request(str(options.method), url, options.json_data, provider)
        body = options.json_data
        if type(body) is not dict and not isinstance(body, Mapping):
            body = {}
        extra = options.extra_json
        if extra:
            body = {**body, **extra}
        route = dialect.route(
            Request(str(options.method), url, body), provider=detect_provider(instance)
        )
        if route is None or not route.billed:  # not a POST, or count_tokens (free)
            return None
    except LLMSpendError:  # a batch refused by a budget: nothing has been sent
        raise
    except Exception as exc:  # an unexpected request shape, or a bug: stay out of the way
        internal_error("read an anthropic request", exc)
        return None
    call = begin_call(
        route.provider,
        route.api,
        route.model,
        payload=route.payload,
        max_output_tokens=route.output_cap,
        streamed=bool(kwargs.get("stream")),
        request_key=json_key("POST", route.api, body),
    )  # may raise BudgetExceeded: nothing has been sent
    return None if call is None else CallContext(call, route.api, body)


class _SdkTypes(NamedTuple):
    """The SDK's result classes an observer tells apart (imported on first use)."""

    streams: tuple[type[Any], ...]  # Stream, AsyncStream
    raw: type[Any]  # with_raw_response / with_streaming_response results
    http_response: type[Any]  # httpx2.Response


_sdk_types: _SdkTypes | None = None


def _types() -> _SdkTypes:
    """The SDK's result classes (imported when first needed: anthropic is loaded by then)."""
    global _sdk_types
    if _sdk_types is None:
        import httpx2
        from anthropic._response import BaseAPIResponse
        from anthropic._streaming import AsyncStream, Stream

        _sdk_types = _SdkTypes((Stream, AsyncStream), BaseAPIResponse, httpx2.Response)
    return _sdk_types


def _observe(ctx: CallContext, result: Any, *, is_async: bool) -> Any:
    """Settle now (complete results) or arrange to settle later (streams, raw bodies)."""
    try:
        sdk = _types()
        if isinstance(result, sdk.streams):
            observe_stream(ctx, result, is_async=is_async)
        elif isinstance(result, sdk.raw):
            observe_raw(ctx, result, result.http_response, is_async=is_async)
        elif isinstance(result, sdk.http_response):
            observe_raw(ctx, result, result, is_async=is_async)
        else:
            ctx.finish_result(result)
    except Exception as exc:  # recording must never break the caller's call
        internal_error(f"read an anthropic {ctx.api} result", exc)
        shielded(ctx.finish_reading, Reading(None), None, cut=False, what="estimate a call")
    return result


def _request(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``SyncAPIClient.request``: one billed call (retries included)."""
    if client_bound(instance):  # team mode: the gateway's call to record
        return via_gateway(lambda: wrapped(*args, **kwargs))
    ctx = _begin(instance, args, kwargs)
    if ctx is None:
        return wrapped(*args, **kwargs)
    if isinstance(ctx, BatchRequest):
        result = send_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
        shielded(ctx.done, result, what="read an anthropic batch")
        return result
    result = send_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
    return _observe(ctx, result, is_async=False)


async def _arequest(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncAPIClient.request``: one billed call (retries included)."""
    if client_bound(instance):  # team mode: the gateway's call to record
        return await avia_gateway(lambda: wrapped(*args, **kwargs))
    ctx = _begin(instance, args, kwargs)
    if ctx is None:
        return await wrapped(*args, **kwargs)
    if isinstance(ctx, BatchRequest):
        result = await asend_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
        shielded(ctx.done, result, what="read an anthropic batch")
        return result
    result = await asend_recorded(ctx.fail, lambda: wrapped(*args, **kwargs))
    return _observe(ctx, result, is_async=True)


class AnthropicPlugin:
    """The built-in ``anthropic`` SDK provider plugin."""

    name = "anthropic"

    def patches(self) -> list[Patch]:
        """The two request hooks (see the module docstring)."""
        return [
            Patch(MODULE, "SyncAPIClient.request", _request),
            Patch(MODULE, "AsyncAPIClient.request", _arequest),
        ]
