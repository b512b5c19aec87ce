"""Observing an SDK stream in place: the caller keeps the SDK's own stream object.

The stream's iterator is replaced by a generator that yields exactly the items the SDK
produced (an observer may hide one of llmspend's own making, see :meth:`see`) and shows
each to the observer; its HTTP response's byte stream is wrapped (:mod:`.bytestreams`) to
learn of a close. The call is settled exactly once: at the end of the stream, when reading
it fails or is cut (``partial``), when it is closed early, when it is collected unsettled
(on a short-lived thread: the collector may have interrupted code holding a lock that
recording needs), or when the caller's cell is interrupted after reading began.

The SDK taps (:mod:`.openai_streams`, :mod:`.anthropic_streams`) subclass
:class:`StreamObserver` with what their dialect reads and how their call is recorded.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..pipeline import watch_stream
from .bytestreams import Tee, decoded, library_of, tap_response

__all__ = ["StreamObserver", "tee_raw"]

log = logging.getLogger("llmspend")


class StreamObserver:
    """One stream's observer: what it saw, and its settlement (exactly once)."""

    __slots__ = ("__weakref__", "_fin", "iterating", "settled", "started")

    def __init__(self) -> None:
        self.iterating = False
        self.settled = False
        self.started = False  # the caller has received at least one item
        self._fin: weakref.finalize[Any, Any] | None = None

    # -- what a subclass says ------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Whether the stream's final item has been seen."""
        return False

    def see(self, item: Any) -> bool:
        """Account for one item; ``False`` hides it from the caller (never raises)."""
        return True

    def record(self, *, cut: bool, error: BaseException | None) -> None:
        """Record the call (once; called by :meth:`settle`)."""
        raise NotImplementedError

    # -- the lifecycle ---------------------------------------------------------------------
    def attach(self, stream: Any, *, is_async: bool) -> None:
        """Observe the SDK ``stream`` in place (same object for the caller)."""
        tap_response(stream.response, lambda _tee: self.closed(), is_async=is_async)
        source = stream._iterator  # (the SDK makes it on first use; a generator either way)
        stream._iterator = _async_items(source, self) if is_async else _sync_items(source, self)
        self._fin = weakref.finalize(stream, self.abandon)
        watch_stream(self)

    def end(self) -> None:
        """The stream was read to its end."""
        self.settle(cut=False)

    def fail(self, exc: BaseException) -> None:
        """Reading the stream raised (connection dropped, timeout, error event...)."""
        self.settle(cut=True, error=exc)

    def closed(self) -> None:
        """The HTTP response was closed; outside iteration that means closed by the caller."""
        if not self.iterating:
            self.settle(cut=not self.complete)

    def abandon(self) -> None:
        """Garbage collected before it was settled: settle on a short-lived thread."""
        if self.settled:
            return
        if sys.is_finalizing() or getattr(weakref.finalize, "_shutdown", False):
            self.settle(cut=True)  # interpreter exit: no thread would run
        else:
            threading.Thread(
                target=self.settle, kwargs={"cut": True}, name="llmspend-settle", daemon=True
            ).start()

    def interrupted(self, error: BaseException) -> bool:
        """The caller's cell was interrupted: settle as ``partial`` if it had started."""
        if self.started and not self.settled:
            self.settle(cut=True, error=error)
            return True
        return False

    def settle(self, *, cut: bool, error: BaseException | None = None) -> None:
        """Record the call once: usage if the provider sent it, else an estimate."""
        if self.settled:
            return
        self.settled = True
        if self._fin is not None:
            self._fin.detach()
        try:
            self.record(cut=cut, error=error)
        except Exception:  # recording never raises; belt and braces
            log.exception("llmspend could not settle a stream")


def _sync_items(source: Iterator[Any], obs: StreamObserver) -> Iterator[Any]:
    try:
        while True:
            obs.iterating = True
            try:
                item = next(source)
            except StopIteration:
                obs.iterating = False
                obs.end()
                return
            obs.iterating = False
            if obs.see(item):
                obs.started = True
                yield item
    except GeneratorExit:  # collected unfinished (the SDK never closes its iterator)
        obs.iterating = False
        obs.abandon()
        raise
    except BaseException as exc:
        obs.iterating = False
        obs.fail(exc)
        raise


async def _async_items(source: AsyncIterator[Any], obs: StreamObserver) -> AsyncIterator[Any]:
    try:
        while True:
            obs.iterating = True
            try:
                item = await source.__anext__()
            except StopAsyncIteration:
                obs.iterating = False
                obs.end()
                return
            obs.iterating = False
            if obs.see(item):
                obs.started = True
                yield item
    except GeneratorExit:
        obs.iterating = False
        obs.abandon()
        raise
    except BaseException as exc:
        obs.iterating = False
        obs.fail(exc)
        raise


def tee_raw(http: Any, settle: Callable[[bytes, bool], None], *, is_async: bool) -> None:
    """Keep a copy of a raw response's streamed body as the caller reads it, and call
    ``settle(body, ended)`` once: when the body is closed (``ended``: it reached its end),
    or when the response is collected unclosed (off the collector's thread). Watched on the
    HTTP response, not on the SDK's raw wrapper: a caller may parse the wrapper into a
    stream and drop it (litellm does) while the stream goes on reading the response."""
    done = threading.Lock()
    encoding = http.headers.get("content-encoding", "identity").strip().lower()
    library = library_of(http)

    def on_close(tee: Tee) -> None:
        if done.acquire(blocking=False):
            data = b"".join(tee.chunks) if tee.chunks is not None else b""
            settle(decoded(library, data, encoding), tee.eof)

    tee = tap_response(http, on_close, is_async=is_async, tee=True).tee

    def collected() -> None:
        if not done.locked():
            threading.Thread(target=on_close, args=(tee,), daemon=True).start()

    weakref.finalize(http, collected)
