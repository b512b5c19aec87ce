"""Observing OpenAI SDK streams and raw responses without changing what the caller sees.

* ``Stream`` / ``AsyncStream``: the stream's ``_iterator`` is replaced by a generator that
  yields exactly the items the SDK produced (bar the usage-only chunk llmspend itself asked
  for, see ``LLMSPEND_STREAM_USAGE``) and reads usage and text on the way. The caller keeps
  the SDK's own stream object (``isinstance(s, openai.Stream)`` holds).
* Closing: the helpers (``chat.completions.stream()``, ``responses.stream()``) close the
  underlying ``httpx2.Response`` rather than the ``Stream``; so llmspend wraps that
  response's byte stream (as httpx2 itself does) to learn about every close.
* Raw responses (``with_raw_response`` / ``with_streaming_response``): the body bytes are
  teed as the caller reads them and parsed (JSON or SSE) when the body ends or is closed.
* Settlement happens once: at the end of the stream (provider usage, else an estimate),
  when the stream fails or is cut (``partial``, estimated from the text received), when
  it is closed early, or when it is garbage collected unclosed. Settlement triggered by the
  garbage collector runs on a short-lived thread, so it can never re-enter a lock held by
  the code the collector interrupted.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .openai_calls import (
    LEDGER,
    CallContext,
    ResponseFailedError,
    failed_error,
    field,
    text_bytes,
)

__all__ = ["StreamObserver", "observe_raw", "observe_stream", "settle_bytes"]

log = logging.getLogger("llmspend")

_RESPONSE_FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSE_HEAD = frozenset({"response.created", "response.in_progress", "response.queued"})


class StreamObserver:
    """Reads one stream's items and settles its call exactly once."""

    __slots__ = (
        "__weakref__", "_fin", "complete", "ctx", "error", "finished", "iterating", "kind",
        "model", "out_bytes", "request_id", "response_id", "resume", "settled", "usage",
        "started",
    )  # fmt: skip

    def __init__(self, ctx: CallContext, request_id: str | None, *, resume: bool = False) -> None:
        self.ctx = ctx
        api = ctx.api
        self.kind = "chat" if api in ("chat.completions", "completions") else api.split(".")[0]
        self.request_id = request_id
        self.resume = resume
        self.out_bytes = 0
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.complete = False
        self.error: BaseException | None = None
        self.finished: set[Any] = set()
        self.iterating = False
        self.settled = False
        self._fin: weakref.finalize[Any, Any] | None = None
        self.started = False  # the caller has received at least one item

    # -- reading items -------------------------------------------------------------------
    def see(self, item: Any) -> bool:
        """Account for one item; ``False`` means: hide it (llmspend's own usage chunk)."""
        try:
            if self.kind == "chat":
                return self._see_chat(item)
            if self.kind == "responses":
                self._see_response_event(item)
            else:
                self._see_event(item)
        except Exception:  # an odd item must never break the caller's stream
            log.debug("llmspend could not read a stream item", exc_info=True)
        return True

    def _see_chat(self, chunk: Any) -> bool:
        usage = field(chunk, "usage")
        choices = field(chunk, "choices")
        if usage is not None:
            self.usage = usage
            if self.ctx.injected and not choices:
                return False
        if self.model is None:
            model = field(chunk, "model")
            if type(model) is str and model:
                self.model = model
        if not choices:
            return True
        try:
            n = 0
            for choice in choices:
                delta = field(choice, "delta")
                if delta is not None:
                    n += text_bytes(field(delta, "content")) + text_bytes(field(delta, "refusal"))
                    n += text_bytes(field(delta, "reasoning_content"))
                    for tc in field(delta, "tool_calls") or ():
                        n += text_bytes(field(field(tc, "function"), "arguments"))
                else:
                    n += text_bytes(field(choice, "text"))
                if field(choice, "finish_reason"):
                    self.finished.add(field(choice, "index"))
            self.out_bytes += n
            want = self.ctx.body.get("n")
            if self.finished and len(self.finished) >= (want if type(want) is int else 1):
                self.complete = True
        except Exception:
            log.debug("llmspend could not read a chat chunk", exc_info=True)
        return True

    def _see_response_event(self, event: Any) -> None:
        kind = field(event, "type")
        if kind in _RESPONSE_FINAL:
            response = field(event, "response")
            self.usage = field(response, "usage")
            self._head(response)
            self.complete = True
            if kind == "response.failed":
                self.error = failed_error(response)
        elif kind in _RESPONSE_HEAD:
            self._head(field(event, "response"))
        elif kind == "error":
            message = field(event, "message")
            self.error = ResponseFailedError(message if type(message) is str else "error event")
        else:
            self.out_bytes += text_bytes(field(event, "delta"))

    def _head(self, response: Any) -> None:
        rid, model = field(response, "id"), field(response, "model")
        if type(rid) is str and rid:
            self.response_id = rid
        if type(model) is str and model:
            self.model = model

    def _see_event(self, event: Any) -> None:
        usage = field(event, "usage")
        if usage is not None:
            self.usage = usage
            self.complete = True
        if self.ctx.api != "audio.speech":  # speech deltas are audio, not text
            self.out_bytes += text_bytes(field(event, "delta"))

    # -- settling ------------------------------------------------------------------------
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
        """Garbage collected before it was settled: settle on a short-lived thread (the
        collector may have interrupted code holding a lock that recording needs)."""
        if self.settled:
            return
        if sys.is_finalizing() or getattr(weakref.finalize, "_shutdown", False):
            self.settle(cut=True)  # interpreter exit: no thread would run
        else:
            threading.Thread(
                target=self.settle, kwargs={"cut": True}, name="llmspend-settle", daemon=True
            ).start()

    def settle(self, *, cut: bool, error: BaseException | None = None) -> None:
        """Record the call once: usage if the provider sent it, else an estimate."""
        if self.settled:
            return
        self.settled = True
        OPEN.discard(self)
        if self._fin is not None:
            self._fin.detach()
        ctx = self.ctx
        try:
            if self.resume:  # a resumed background response: settle it only when final
                if self.complete and self.response_id and ctx is LEDGER.take(self.response_id):
                    self._record(ctx, cut=False, error=None)
                return
            if (
                self.usage is None
                and not self.complete
                and ctx.background
                and self.response_id is not None
            ):
                LEDGER.park(self.response_id, ctx, self.out_bytes, self.model, self.request_id)
                return
            self._record(ctx, cut=cut, error=error)
        except Exception:  # pragma: no cover - finish never raises; belt and braces
            log.exception("llmspend could not settle a stream")

    def _record(self, ctx: CallContext, *, cut: bool, error: BaseException | None) -> None:
        model, rid, out = self.model, self.request_id, self.out_bytes
        if self.error is not None:  # the provider said the response failed
            ctx.finish_usage(
                self.usage, model=model, request_id=rid, status="error", error=self.error,
                out_bytes=out,
            )  # fmt: skip
        elif self.usage is not None:
            ctx.finish_usage(self.usage, model=model, request_id=rid, out_bytes=out)
        elif cut and not self.complete:
            ctx.finish_estimate("partial", out, model=model, request_id=rid, error=error)
        else:  # complete, but the provider sent no usage
            ctx.finish_estimate("ok", out, model=model, request_id=rid)


# -- Stream / AsyncStream ----------------------------------------------------------------------


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


def observe_stream(ctx: CallContext, stream: Any, *, is_async: bool, resume: bool = False) -> None:
    """Observe an SDK ``Stream``/``AsyncStream`` in place (same object for the caller)."""
    response = stream.response
    obs = StreamObserver(ctx, response.headers.get("x-request-id"), resume=resume)
    tap_response(response, lambda _tap: obs.closed(), is_async=is_async)
    source = stream._iterator
    stream._iterator = _async_items(source, obs) if is_async else _sync_items(source, obs)
    obs._fin = weakref.finalize(stream, obs.abandon)
    OPEN.add(obs)


#: Streams handed to the caller and not settled yet (held weakly).
OPEN: weakref.WeakSet[StreamObserver] = weakref.WeakSet()


def settle_interrupted(error: BaseException) -> int:
    """Settle, as ``partial``, every stream the caller had started reading and left
    unsettled: a notebook cell ended by ``error`` (Ctrl-C) is done with them, though its
    globals and ``sys.last_traceback`` keep them alive. Returns how many were settled."""
    n = 0
    for obs in list(OPEN):
        if obs.started and not obs.settled:
            obs.settle(cut=True, error=error)
            n += 1
    return n


# -- byte taps on httpx2 responses -----------------------------------------------------------

_tap_types: tuple[type, type] | None = None
#: Most bytes of a raw body kept to read its usage (beyond: settled from an estimate).
TEE_LIMIT = 32 * 1024 * 1024


def _taps() -> tuple[type, type]:
    """The byte-stream wrappers, built on first use (httpx2 is imported by openai)."""
    global _tap_types
    if _tap_types is None:
        import httpx2

        class SyncTap(httpx2.SyncByteStream):
            """Passes bytes through; tees them if asked; reports end and close."""

            def __init__(self, inner: Any, on_close: Callable[[Any], None], tee: bool) -> None:
                self._inner = inner
                self._on_close = on_close
                self.chunks: list[bytes] | None = [] if tee else None
                self.size = 0
                self.eof = False

            def __iter__(self) -> Iterator[bytes]:
                for chunk in self._inner:
                    if self.chunks is not None:
                        _keep(self, chunk)
                    yield chunk
                self.eof = True

            def close(self) -> None:
                try:
                    self._inner.close()
                finally:
                    _notify(self._on_close, self)

            def __getattr__(self, name: str) -> Any:  # e.g. ``elapsed``
                if name.startswith("__") or name in ("_inner", "_on_close"):
                    raise AttributeError(name)
                return getattr(self._inner, name)

        class AsyncTap(httpx2.AsyncByteStream):
            """The async twin of ``SyncTap``."""

            def __init__(self, inner: Any, on_close: Callable[[Any], None], tee: bool) -> None:
                self._inner = inner
                self._on_close = on_close
                self.chunks: list[bytes] | None = [] if tee else None
                self.size = 0
                self.eof = False

            async def __aiter__(self) -> AsyncIterator[bytes]:
                async for chunk in self._inner:
                    if self.chunks is not None:
                        _keep(self, chunk)
                    yield chunk
                self.eof = True

            async def aclose(self) -> None:
                try:
                    await self._inner.aclose()
                finally:
                    _notify(self._on_close, self)

            def __getattr__(self, name: str) -> Any:
                if name.startswith("__") or name in ("_inner", "_on_close"):
                    raise AttributeError(name)
                return getattr(self._inner, name)

        _tap_types = (SyncTap, AsyncTap)
    return _tap_types


def _keep(tap: Any, chunk: bytes) -> None:
    """Tee one chunk, up to :data:`TEE_LIMIT` bytes (then give up: estimate instead)."""
    tap.size += len(chunk)
    if tap.size > TEE_LIMIT:
        tap.chunks = None
    else:
        tap.chunks.append(chunk)


def _notify(callback: Callable[[Any], None], tap: Any) -> None:
    try:
        callback(tap)
    except Exception:  # pragma: no cover - settlement never raises
        log.exception("llmspend could not settle a closed response")


def tap_response(
    response: Any, on_close: Callable[[Any], None], *, is_async: bool, tee: bool = False
) -> Any:
    """Wrap ``response.stream`` so that ``on_close(tap)`` runs when it is closed."""
    sync_tap, async_tap = _taps()
    tap = (async_tap if is_async else sync_tap)(response.stream, on_close, tee)
    response.stream = tap
    return tap


# -- raw responses (with_raw_response / with_streaming_response) -------------------------------


def _sse_items(data: bytes) -> tuple[list[Any], bool]:
    """The JSON ``data:`` payloads of an SSE body, and whether ``[DONE]`` was seen."""
    items: list[Any] = []
    done = False
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            continue
        payload = b"\n".join(lines)
        if payload.startswith(b"[DONE]"):
            done = True
            continue
        try:
            items.append(json.loads(payload))
        except ValueError:
            continue
    return items, done


def settle_bytes(
    ctx: CallContext, data: bytes, content_type: str, request_id: str | None, *, ended: bool
) -> None:
    """Settle a call from its raw body (JSON, SSE, or anything else), read whole or not."""
    if "event-stream" in content_type or data.startswith((b"data:", b"event:")):
        obs = StreamObserver(ctx, request_id)
        items, done = _sse_items(data)
        for item in items:
            obs.see(item)
        obs.settle(cut=not (ended or done))
        return
    if "json" in content_type:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            ctx.finish_result(parsed, request_id)
            return
    elif ended and ctx.api.startswith("audio.") and ctx.api != "audio.speech":
        ctx.finish_result(data.decode("utf-8", "replace"), request_id)  # text transcripts
        return
    if ctx.api == "audio.speech":  # audio bytes: no usage, priced from the input text
        ctx.finish_estimate("ok", request_id=request_id)
        return
    ctx.finish_estimate("ok" if ended else "partial", request_id=request_id)


def _decoded(data: bytes, encoding: str) -> bytes:
    """``data`` decoded per its ``Content-Encoding`` (the tee sees the raw wire bytes)."""
    import httpx2

    try:
        return httpx2.Response(200, headers={"content-encoding": encoding}, content=data).read()
    except Exception:
        return b""


def observe_raw(ctx: CallContext, raw: Any, http: Any, *, is_async: bool) -> None:
    """Observe a raw response (``LegacyAPIResponse``, ``APIResponse`` or ``httpx2.Response``
    ``http``) without reading its body for the caller."""
    request_id = http.headers.get("x-request-id")
    content_type = http.headers.get("content-type", "")
    try:
        body = http.content  # already read unless the body is streamed
    except Exception:
        body = None
    if body is not None:
        settle_bytes(ctx, body, content_type, request_id, ended=True)
        return
    if ctx.api == "audio.speech" and "event-stream" not in content_type:
        ctx.finish_estimate("ok", request_id=request_id)
        return
    state = {"done": False}
    encoding = http.headers.get("content-encoding", "identity").strip().lower()

    def on_close(tap: Any) -> None:
        if not state["done"]:
            state["done"] = True
            data = b"".join(tap.chunks) if tap.chunks is not None else b""
            if encoding != "identity":
                data = _decoded(data, encoding)
            settle_bytes(ctx, data, content_type, request_id, ended=tap.eof)

    tap = tap_response(http, on_close, is_async=is_async, tee=True)

    def collected() -> None:
        if not state["done"]:  # collected unclosed: settle off the collector's thread
            threading.Thread(target=on_close, args=(tap,), daemon=True).start()

    weakref.finalize(raw, collected)
