"""Transport taps for ``httpx`` and ``httpx2``: every request any client sends through them.

Hook points (class level, applied by ``install()``, removed exactly by ``uninstall()``):
``Client.send`` and ``AsyncClient.send`` of each library. Every request of a client
passes there — whatever transport the client has (a mock, a proxy, a custom one) — after
the client built it and before it goes out; a redirect is followed inside ``send``, so one
call is one row. What a request is and what its response used is read by its dialect
(:mod:`.http`); only requests to a provider endpoint are looked at.

The response is the library's own object: a body read whole (``stream=False``) is read
from ``response.content``; a streamed body's ``response.stream`` is replaced by a tap of
the same library (:mod:`.bytestreams`) that passes every chunk through and settles the
call when the body ends, is closed (``partial`` before its end), or is collected unclosed.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from typing import Any

from ..pipeline import is_handled, shielded, watch_stream
from ..plugins import Patch
from .bytestreams import tap_response
from .http import Ending, Seen, asend_seen, see, send_seen, unbilled

__all__ = ["Httpx2Plugin", "HttpxPlugin"]

log = logging.getLogger("llmspend")


def _see(request: Any) -> Seen | None:
    """Begin the call ``request`` makes (``None``: not a provider call). A budget refusal
    propagates: nothing is sent."""
    url = request.url
    try:
        content = request.content  # not there for a streamed upload: estimated
    except Exception:
        content = None
    query = dict(url.params) if url.query else None
    return see(
        request.method, url.scheme, url.host, url.port, url.path, query, content,
        request.headers.get("content-type", ""),
    )  # fmt: skip


def _request_id(headers: Any) -> str | None:
    rid = headers.get("x-request-id") or headers.get("request-id")
    return rid if isinstance(rid, str) else None


def _observe(seen: Seen, response: Any, library: str, *, is_async: bool) -> None:
    """Settle now (an error status, a body read whole) or when the streamed body ends."""
    code = response.status_code
    if unbilled(code):
        http = importlib.import_module(library)
        error = http.HTTPStatusError(f"HTTP {code}", request=response.request, response=response)
        seen.finish_status(error)
        return
    headers = response.headers
    content_type = headers.get("content-type", "")
    request_id = _request_id(headers)
    try:
        data = response.content  # read by send() unless streamed
    except Exception:
        data = None
    if data is not None:
        seen.finish_body(data, content_type, request_id)
        return
    encoding = headers.get("content-encoding", "identity").strip().lower()
    ending = Ending(seen, content_type, request_id, library, encoding)
    ending.tee = tap_response(response, ending.closed, is_async=is_async, tee=True).tee
    weakref.finalize(response, ending.collected)
    watch_stream(ending)


def _sync(library: str) -> Any:
    reading = f"read an {library} response"

    def observe(seen: Seen, response: Any) -> None:
        _observe(seen, response, library, is_async=False)

    def send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if is_handled():  # an SDK tap records it (the usual case under the openai SDK)
            return wrapped(*args, **kwargs)
        request = args[0] if args else kwargs.get("request")
        seen = shielded(_see, request, what="read an HTTP request")
        return send_seen(seen, lambda: wrapped(*args, **kwargs), observe, reading)

    return send


def _async(library: str) -> Any:
    reading = f"read an {library} response"

    def observe(seen: Seen, response: Any) -> None:
        _observe(seen, response, library, is_async=True)

    async def send(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if is_handled():  # an SDK tap records it
            return await wrapped(*args, **kwargs)
        request = args[0] if args else kwargs.get("request")
        seen = shielded(_see, request, what="read an HTTP request")
        return await asend_seen(seen, lambda: wrapped(*args, **kwargs), observe, reading)

    return send


class _Plugin:
    library = ""

    def __init__(self) -> None:
        self.name = self.library
        self._patches = [
            Patch(self.library, "Client.send", _sync(self.library)),
            Patch(self.library, "AsyncClient.send", _async(self.library)),
        ]

    def patches(self) -> list[Patch]:
        """``Client.send`` and ``AsyncClient.send`` (see the module docstring)."""
        return self._patches


class HttpxPlugin(_Plugin):
    """The ``httpx`` transport tap (litellm, dspy, LangChain's and other direct callers)."""

    library = "httpx"


class Httpx2Plugin(_Plugin):
    """The ``httpx2`` transport tap (the client library under the openai SDK)."""

    library = "httpx2"
