"""Byte-stream taps for httpx-family responses (``httpx`` and ``httpx2``).

A tap replaces ``response.stream``: it passes every chunk through unchanged, keeps a copy
when asked (up to :data:`TEE_LIMIT` bytes) in its :class:`Tee`, and reports the end of the
body and its close with that tee. The tee is apart from the tap so that a callback for a
response collected unclosed can hold it without holding the response (the library's stream
under the tap refers back to its response).
It is built on the base classes of the response's **own** library: each of httpx and
httpx2 checks ``isinstance(response.stream, SyncByteStream)`` of its own, and a tap of the
other library makes a working call fail ("Attempted to call a sync close on an async
stream"), so :func:`tap_response` picks the library from the response's type.
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["TEE_LIMIT", "Tee", "decoded", "library_of", "tap_response", "tap_types"]

log = logging.getLogger("llmspend")

#: Most bytes of a body kept to read its usage (beyond: settled from an estimate).
TEE_LIMIT = 32 * 1024 * 1024

_types: dict[str, tuple[type, type]] = {}
_types_lock = threading.Lock()


def library_of(response: Any) -> str:
    """``"httpx"`` or ``"httpx2"``: the library a response object belongs to."""
    return type(response).__module__.partition(".")[0]


class Tee:
    """What a tap saw: the body's bytes (``None`` when not kept, or past the limit), how
    many bytes passed, whether the body reached its end, and the error reading it raised."""

    __slots__ = ("chunks", "eof", "error", "size")

    def __init__(self, keep: bool) -> None:
        self.chunks: list[bytes] | None = [] if keep else None
        self.size = 0
        self.eof = False
        self.error: BaseException | None = None

    def keep(self, chunk: bytes) -> None:
        """Tee one chunk, up to :data:`TEE_LIMIT` bytes (then give up: estimate instead)."""
        self.size += len(chunk)
        if self.size > TEE_LIMIT:
            self.chunks = None
        elif self.chunks is not None:
            self.chunks.append(chunk)


def _notify(callback: Callable[[Tee], None], tee: Tee) -> None:
    try:
        callback(tee)
    except Exception:  # settlement never raises; if it did, the caller's close still goes on
        log.exception("llmspend could not settle a closed response")


def _build(library: str) -> tuple[type, type]:
    http = importlib.import_module(library)

    class SyncTap(http.SyncByteStream):  # type: ignore[name-defined]
        """Passes bytes through; tees them if asked; reports end and close."""

        def __init__(self, inner: Any, on_close: Callable[[Tee], None], tee: bool) -> None:
            self._inner = inner
            self._on_close = on_close
            self.tee = Tee(tee)

        def __iter__(self) -> Iterator[bytes]:
            tee = self.tee
            try:
                for chunk in self._inner:
                    if tee.chunks is not None:
                        tee.keep(chunk)
                    yield chunk
            except Exception as exc:  # a dropped connection, a timeout: on the row
                tee.error = exc
                raise
            tee.eof = True

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                _notify(self._on_close, self.tee)

        def __getattr__(self, name: str) -> Any:  # e.g. ``elapsed``
            if name.startswith("__") or name in ("_inner", "_on_close", "tee"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    class AsyncTap(http.AsyncByteStream):  # type: ignore[name-defined]
        """The async twin of ``SyncTap``."""

        def __init__(self, inner: Any, on_close: Callable[[Tee], None], tee: bool) -> None:
            self._inner = inner
            self._on_close = on_close
            self.tee = Tee(tee)

        async def __aiter__(self) -> AsyncIterator[bytes]:
            tee = self.tee
            try:
                async for chunk in self._inner:
                    if tee.chunks is not None:
                        tee.keep(chunk)
                    yield chunk
            except Exception as exc:
                tee.error = exc
                raise
            tee.eof = True

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                _notify(self._on_close, self.tee)

        def __getattr__(self, name: str) -> Any:
            if name.startswith("__") or name in ("_inner", "_on_close", "tee"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    return SyncTap, AsyncTap


def tap_types(library: str) -> tuple[type, type]:
    """``(SyncTap, AsyncTap)`` built on ``library``'s byte-stream classes (made once)."""
    made = _types.get(library)
    if made is None:
        with _types_lock:
            made = _types.get(library)
            if made is None:
                made = _types[library] = _build(library)
    return made


def tap_response(
    response: Any, on_close: Callable[[Tee], None], *, is_async: bool, tee: bool = False
) -> Any:
    """Wrap ``response.stream`` so that ``on_close(tap.tee)`` runs when it is closed."""
    sync_tap, async_tap = tap_types(library_of(response))
    tap = (async_tap if is_async else sync_tap)(response.stream, on_close, tee)
    response.stream = tap
    return tap


def decoded(library: str, data: bytes, encoding: str) -> bytes:
    """``data`` decoded per its ``Content-Encoding`` (a tee sees the raw wire bytes) by
    ``library``'s own decoders (``httpx``, ``httpx2``, ``urllib3``), or by the standard
    library's (gzip, deflate) for any other; ``b""`` when it cannot be decoded."""
    if not encoding or encoding == "identity":
        return data
    try:
        if library in ("httpx", "httpx2"):
            http = importlib.import_module(library)
            return bytes(
                http.Response(200, headers={"content-encoding": encoding}, content=data).read()
            )
        if library == "urllib3":
            import urllib3

            raw = urllib3.HTTPResponse(
                io.BytesIO(data), headers={"content-encoding": encoding}, preload_content=False
            )
            return bytes(raw.read(decode_content=True))
        return _stdlib_decoded(data, encoding)
    except Exception:
        return b""


def _stdlib_decoded(data: bytes, encoding: str) -> bytes:
    """gzip and deflate (zlib or raw), applied in the reverse of their listed order."""
    for coding in reversed([c.strip() for c in encoding.lower().split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
        elif coding == "deflate":
            try:
                data = zlib.decompressobj().decompress(data)
            except zlib.error:
                data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
        elif coding != "identity":
            return b""
    return data
