"""Transport tap for ``aiohttp``: every request a ``ClientSession`` sends.

Hook points (class level, applied by ``install()``, removed exactly by ``uninstall()``):

* ``ClientSession._request`` — every ``session.get/post/request(...)`` passes there, with
  the URL and the ``json=``/``data=`` body; redirects are followed inside it (one call,
  one row). Only requests to a provider endpoint are looked at (:mod:`.http`).
* ``StreamReader.feed_data`` — the body's bytes as the connection delivers them
  (decompressed; with ``auto_decompress=False``, decoded when settled), kept for the
  responses being tracked (a weak map: nothing else is touched); the call is settled when
  the body ends (``on_eof``), whoever reads it and however (``read()``, ``json()``,
  ``content.iter_*``, ``readline``).
* ``ClientResponse.release`` and ``close`` — a response let go before its body ended is
  settled then (``partial``); one collected unreleased, when it is collected.

A body read whole before ``_request`` returns (by a ``raise_for_status`` callable) is
settled from ``response._body``.

The caller gets aiohttp's own objects, untouched.
"""

from __future__ import annotations

import json as _json
import weakref
from typing import Any

from ..pipeline import is_handled, shielded, watch_stream
from ..plugins import Patch
from .http import Ending, Seen, asend_seen, see, unbilled

__all__ = ["AiohttpPlugin"]

# id(StreamReader) of a tracked response → (that reader, what settles it); a reader takes no
# weak reference, so it is held until its response is settled (then dropped from here).
_tracked: dict[int, tuple[Any, _Ending]] = {}
_by_response: weakref.WeakKeyDictionary[Any, _Ending] = weakref.WeakKeyDictionary()


class _Ending(Ending):
    """An :class:`~.http.Ending` tracked under its response's StreamReader (dropped from
    the map when it settles)."""

    __slots__ = ("key",)

    def __init__(
        self, seen: Seen, content_type: str, request_id: str | None, encoding: str = ""
    ) -> None:
        # ``encoding``: a Content-Encoding aiohttp leaves undone (``auto_decompress=False``)
        super().__init__(seen, content_type, request_id, "aiohttp" if encoding else "", encoding)
        self.key = 0  # id() of the StreamReader it is tracked under

    def end(self, eof: bool, error: BaseException | None = None) -> None:
        _tracked.pop(self.key, None)
        super().end(eof, error)


def _body(kwargs: dict[str, Any]) -> tuple[bytes | None, str]:
    """The request's body bytes and content type, as aiohttp will send them."""
    headers = kwargs.get("headers") or {}
    content_type = ""
    for key, value in dict(headers).items():
        if str(key).lower() == "content-type":
            content_type = str(value)
    if kwargs.get("json") is not None:
        return _json.dumps(kwargs["json"]).encode("utf-8"), content_type or "application/json"
    data = kwargs.get("data")
    if isinstance(data, str):
        return data.encode("utf-8"), content_type
    if isinstance(data, bytes | bytearray):
        return bytes(data), content_type
    return None, content_type  # a form, a stream or nothing: estimated


def _see(session: Any, method: str, url: Any, kwargs: dict[str, Any]) -> Seen | None:
    from yarl import URL

    target = URL(str(url)) if not isinstance(url, URL) else url
    base = getattr(session, "_base_url", None)
    if not target.is_absolute() and base is not None:
        target = base.join(target)
    query = dict(target.query)
    params = kwargs.get("params")
    if isinstance(params, dict):
        query.update({str(k): str(v) for k, v in params.items()})
    content, content_type = _body(kwargs)
    return see(
        method.upper(), target.scheme, target.host or "", target.explicit_port, target.path,
        query or None, content, content_type,
    )  # fmt: skip


def _observe(seen: Seen, response: Any, decompressed: bool = True) -> None:
    code = response.status
    if unbilled(code):
        import aiohttp

        seen.finish_status(
            aiohttp.ClientResponseError(
                response.request_info, response.history, status=code, message=f"HTTP {code}"
            )
        )
        return
    headers = response.headers
    rid = headers.get("x-request-id") or headers.get("request-id")
    encoding = "" if decompressed else headers.get("content-encoding", "").strip().lower()
    ending = _Ending(
        seen, headers.get("content-type", ""), rid if isinstance(rid, str) else None,
        "" if encoding == "identity" else encoding,
    )  # fmt: skip
    body = getattr(response, "_body", None)
    if isinstance(body, bytes | bytearray):  # read before it came back (raise_for_status=f)
        ending.tee.keep(bytes(body))
        ending.end(True)
        return
    content = response.content
    buffered = list(getattr(content, "_buffer", ()))  # what arrived before we looked
    for chunk in buffered:
        ending.tee.keep(bytes(chunk))
    ending.key = id(content)
    _tracked[ending.key] = (content, ending)
    _by_response[response] = ending
    content.on_eof(lambda: ending.end(True))
    weakref.finalize(response, ending.collected)
    watch_stream(ending)


async def _request(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    seen = None
    if not is_handled() and len(args) >= 2:
        seen = shielded(
            _see, instance, str(args[0]), args[1], kwargs, what="read an aiohttp request"
        )
    if seen is None:
        return await wrapped(*args, **kwargs)
    decompressed = kwargs.get("auto_decompress")
    if decompressed is None:
        decompressed = getattr(instance, "_auto_decompress", True)

    def observe(seen: Seen, response: Any) -> None:
        _observe(seen, response, bool(decompressed))

    return await asend_seen(
        seen, lambda: wrapped(*args, **kwargs), observe, "read an aiohttp response"
    )


def _feed_data(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _tracked:
        hit = _tracked.get(id(instance))
        if hit is not None and hit[0] is instance and args and args[0]:
            hit[1].tee.keep(bytes(args[0]))
    return wrapped(*args, **kwargs)


def _let_go(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    result = wrapped(*args, **kwargs)
    ending = _by_response.get(instance) if _by_response else None
    if ending is not None:
        ending.end(False, _read_error(instance))
    return result


def _read_error(response: Any) -> BaseException | None:
    """The error reading ``response``'s body raised (a dropped connection...), if any."""
    try:
        error = response.content.exception()
    except Exception:
        return None
    return error if isinstance(error, BaseException) else None


class AiohttpPlugin:
    """The ``aiohttp`` transport tap."""

    name = "aiohttp"

    def patches(self) -> list[Patch]:
        """See the module docstring."""
        return [
            Patch("aiohttp.client", "ClientSession._request", _request),
            Patch("aiohttp.streams", "StreamReader.feed_data", _feed_data),
            Patch("aiohttp.client_reqrep", "ClientResponse.release", _let_go),
            Patch("aiohttp.client_reqrep", "ClientResponse.close", _let_go),
        ]
