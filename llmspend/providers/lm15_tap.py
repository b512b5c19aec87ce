"""Transport tap for dspy's own HTTP client (lm15, vendored in ``dspy._vendor.lm15``).

dspy's default LM engine sends over a standard-library socket transport of its own, which
no other tap sees. Hook points (class level, guarded by name: a dspy without them is not
hooked there, and ``install()`` says so once):

* ``StdlibTransport.stream(request)`` (sync) and ``StdlibAsyncTransport._do_stream(request)``
  (async: both ``await transport.stream(...)`` and ``async with`` go through it) — every
  request, with its method, URL, headers and body bytes, before it is sent.

The response's body iterator is wrapped (same chunks, in order) to keep a copy and settle
the call when the body ends, or fails; its release (``close()``/``aclose()``, the end of
``with``) settles a body not read to its end (``partial``), and so does its collection.
Only requests to a provider endpoint are looked at (:mod:`.http`).
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import ProviderError
from ..pipeline import is_handled, shielded, watch_stream
from ..plugins import Patch
from .http import Ending, Seen, asend_seen, see, send_seen, unbilled

__all__ = ["DspyPlugin"]

_SYNC = "dspy._vendor.lm15.transports._sync"
_ASYNC = "dspy._vendor.lm15.transports._async"


def _header(headers: Any, name: str) -> str:
    for key, value in headers or ():
        if str(key).lower() == name:
            return str(value)
    return ""


def _see(request: Any) -> Seen | None:
    url = urlsplit(request.url)
    body = request.body
    query = dict(parse_qsl(url.query)) if url.query else None
    return see(
        str(request.method), url.scheme, url.hostname or "", url.port, url.path, query,
        bytes(body) if isinstance(body, bytes | bytearray) else None,
        _header(request.headers, "content-type"),
    )  # fmt: skip


def _ending(seen: Seen, response: Any) -> Ending | None:
    """Settle an error status now; else an :class:`Ending` for the body."""
    code = int(response.status)
    if unbilled(code):
        seen.finish_status(ProviderError(f"HTTP {code} {response.reason}"))
        return None
    rid = _header(response.headers, "x-request-id") or _header(response.headers, "request-id")
    ending = Ending(seen, _header(response.headers, "content-type"), rid or None)
    weakref.finalize(response, ending.collected)
    watch_stream(ending)
    return ending


def _chunks(source: Iterator[bytes], ending: Ending) -> Iterator[bytes]:
    try:
        for chunk in source:
            ending.tee.keep(chunk)
            yield chunk
    except GeneratorExit:
        ending.end(False)
        raise
    except BaseException as exc:
        ending.end(False, exc)
        raise
    ending.end(True)


async def _achunks(source: AsyncIterator[bytes], ending: Ending) -> AsyncIterator[bytes]:
    try:
        async for chunk in source:
            ending.tee.keep(chunk)
            yield chunk
    except GeneratorExit:
        ending.end(False)
        raise
    except BaseException as exc:
        ending.end(False, exc)
        raise
    ending.end(True)


def _observe(seen: Seen, response: Any) -> None:
    ending = _ending(seen, response)
    if ending is not None:
        response._chunks = _chunks(response._chunks, ending)
        release = response._release

        def released(body_consumed: bool) -> Any:  # closed, read or not: settled now
            try:
                return release(body_consumed)
            finally:
                ending.end(False)

        response._release = released


def _aobserve(seen: Seen, response: Any) -> None:
    ending = _ending(seen, response)
    if ending is not None:
        response._chunks = _achunks(response._chunks, ending)
        release = response._release

        async def released(body_consumed: bool) -> Any:
            try:
                return await release(body_consumed)
            finally:
                ending.end(False)

        response._release = released


def _stream(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = args[0] if args else kwargs.get("request")
    seen = None if is_handled() else shielded(_see, request, what="read a dspy request")
    return send_seen(seen, lambda: wrapped(*args, **kwargs), _observe, "read a dspy response")


async def _ado_stream(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    request = args[0] if args else kwargs.get("request")
    seen = None if is_handled() else shielded(_see, request, what="read a dspy request")
    return await asend_seen(
        seen, lambda: wrapped(*args, **kwargs), _aobserve, "read a dspy response"
    )


class DspyPlugin:
    """The tap on dspy's own HTTP transport (its default LM engine)."""

    name = "dspy"

    def patches(self) -> list[Patch]:
        """See the module docstring."""
        return [
            Patch(_SYNC, "StdlibTransport.stream", _stream),
            Patch(_ASYNC, "StdlibAsyncTransport._do_stream", _ado_stream),
        ]
