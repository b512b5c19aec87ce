"""Transport tap for ``requests``: every request any ``Session`` sends (``requests.post`` too).

Hook point (class level, applied by ``install()``, removed exactly by ``uninstall()``):
``requests.Session.send``, which every request of every session passes through once its
``PreparedRequest`` is built; redirects are sent by a nested ``send`` inside it and belong
to the same call (one row). Only requests to a provider endpoint are looked at (:mod:`.http`).

A body read whole (``stream=False``, the default) is read by ``send`` itself and settled
from ``response.content``. A streamed body is read through ``response.raw`` (urllib3's
response, whose ``stream()`` and ``read()`` ``iter_content``/``iter_lines`` use): the raw
response is wrapped in a transparent proxy (``isinstance`` still holds) that passes every
chunk through, keeps a copy, and settles the call when the body ends, is closed
(``partial`` before its end), or is collected unclosed — however it is read
(``stream``, ``read``, ``read1``, ``readinto``, ``readline``, iteration,
``read_chunked``). Bytes read still compressed
(``response.raw.read()``: requests asks urllib3 not to decode) are decoded to be read.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import wrapt

from ..pipeline import is_handled, shielded, watch_stream
from ..plugins import Patch
from .http import Ending, Seen, see, send_seen, unbilled

__all__ = ["RequestsPlugin"]


def _see(request: Any) -> Seen | None:
    url = urlsplit(request.url)
    body = request.body
    content = body.encode("utf-8") if isinstance(body, str) else body
    if not isinstance(content, bytes | bytearray):
        content = None  # a streamed upload: estimated
    query = dict(parse_qsl(url.query)) if url.query else None
    return see(
        str(request.method or "GET"), url.scheme, url.hostname or "", url.port, url.path,
        query, bytes(content) if content is not None else None,
        request.headers.get("content-type", ""),
    )  # fmt: skip


class _RawTap(wrapt.ObjectProxy):
    """urllib3's response, with its body teed (see the module docstring)."""

    def __init__(self, raw: Any, ending: Ending, compressed: bool) -> None:
        super().__init__(raw)
        self._self_ending = ending
        self._self_compressed = compressed
        self._self_raw: bool | None = None  # whether the bytes kept are still compressed

    def _self_keep(self, data: bytes, decode_content: Any) -> None:
        ending = self._self_ending
        if data and self._self_compressed:
            if decode_content is None:  # urllib3's default: the response's own setting
                decode_content = getattr(self.__wrapped__, "decode_content", True)
            raw = not decode_content
            if self._self_raw is None:
                self._self_raw = raw
                ending.library = "urllib3" if raw else ""  # decoded when settled
            elif self._self_raw != raw:
                ending.readable = False  # compressed and decoded bytes mixed: estimated
        if data and ending.tee.chunks is not None:
            ending.tee.keep(bytes(data))

    def _self_read(self, read: Any, *args: Any, decode_content: Any = None, **kw: Any) -> Any:
        """``read(*args, ...)`` of urllib3's, its bytes kept; ``b""`` is the end."""
        try:
            data = read(*args, **kw)
        except Exception as exc:  # a dropped connection, a timeout: on the row
            self._self_ending.end(False, exc)
            raise
        self._self_keep(data, decode_content)
        if not data:
            self._self_ending.end(True)
        return data

    def _self_chunks(self, chunks: Iterator[bytes], decode_content: Any) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                self._self_keep(chunk, decode_content)
                yield chunk
        except Exception as exc:
            self._self_ending.end(False, exc)
            raise
        self._self_ending.end(True)

    def stream(self, amt: int | None = 2**16, decode_content: Any = None) -> Iterator[bytes]:
        chunks = self.__wrapped__.stream(amt, decode_content=decode_content)
        return self._self_chunks(chunks, decode_content)

    def read_chunked(self, amt: int | None = None, decode_content: Any = None) -> Iterator[bytes]:
        chunks = self.__wrapped__.read_chunked(amt, decode_content=decode_content)
        return self._self_chunks(chunks, decode_content)

    def read(self, amt: int | None = None, decode_content: Any = None, **kwargs: Any) -> bytes:
        data: bytes = self._self_read(
            self.__wrapped__.read, amt, decode_content=decode_content, **kwargs
        )
        if amt is None and data:
            self._self_ending.end(True)
        return data

    def read1(self, amt: int | None = None, decode_content: Any = None) -> bytes:
        read1 = self.__wrapped__.read1
        return self._self_read(read1, amt, decode_content=decode_content)

    def readline(self, size: int | None = -1) -> bytes:
        if size == 0:
            return b""
        return self._self_read(self.__wrapped__.readline, size)

    def readinto(self, b: Any) -> int:
        # urllib3's own, with this proxy as ``self``: it reads through :meth:`read`
        return type(self.__wrapped__).readinto(self, b)

    def __iter__(self) -> Iterator[bytes]:
        # urllib3's own line iteration over ``self.stream(decode_content=True)``: this one's
        return type(self.__wrapped__).__iter__(self)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_ending.end(False)


def _observe(seen: Seen, response: Any) -> None:
    code = response.status_code
    if unbilled(code):
        import requests

        seen.finish_status(requests.HTTPError(f"HTTP {code}", response=response))
        return
    headers = response.headers
    content_type = headers.get("content-type", "")
    rid = headers.get("x-request-id") or headers.get("request-id")
    request_id = rid if isinstance(rid, str) else None
    if response._content is not False:  # read by send() (stream=False)
        seen.finish_body(response.content or b"", content_type, request_id)
        return
    encoding = headers.get("content-encoding", "identity").strip().lower()
    ending = Ending(seen, content_type, request_id, encoding=encoding)
    response.raw = _RawTap(response.raw, ending, encoding not in ("", "identity"))
    weakref.finalize(response, ending.collected)
    watch_stream(ending)


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = args[0] if args else kwargs.get("request")
    seen = None if is_handled() else shielded(_see, request, what="read a requests request")
    # Redirects are sent by a nested send, inside: the same call.
    return send_seen(seen, lambda: wrapped(*args, **kwargs), _observe, "read a requests response")


class RequestsPlugin:
    """The ``requests`` transport tap."""

    name = "requests"

    def patches(self) -> list[Patch]:
        """``Session.send`` (see the module docstring)."""
        return [Patch("requests.sessions", "Session.send", _send)]
