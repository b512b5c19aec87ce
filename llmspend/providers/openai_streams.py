"""Observing OpenAI SDK streams and raw responses without changing what the caller sees.

* ``Stream`` / ``AsyncStream``: the stream's ``_iterator`` is replaced by a generator that
  yields exactly the items the SDK produced (bar the usage-only chunk llmspend itself asked
  for, see ``LLMSPEND_STREAM_USAGE``) and reads usage and text on the way. The caller keeps
  the SDK's own stream object (``isinstance(s, openai.Stream)`` holds).
* Closing: the helpers (``chat.completions.stream()``, ``responses.stream()``) close the
  underlying HTTP response rather than the ``Stream``; so llmspend wraps that response's
  byte stream with a tap of the response's own library (``httpx2``, or plain ``httpx``
  when a caller such as litellm passes an ``httpx.Client``; see :mod:`.bytestreams`).
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
from typing import Any

from ..dialects import Reading
from ..dialects import openai as dialect
from ..errors import ResponseFailedError
from ..pipeline import internal_error
from . import observing
from .openai_calls import LEDGER, CallContext

__all__ = ["StreamObserver", "observe_raw", "observe_stream", "settle_bytes"]

log = logging.getLogger("llmspend")


class StreamObserver(observing.StreamObserver):
    """Shows one stream's items to the dialect's reader and settles its call exactly once."""

    __slots__ = ("ctx", "reader", "request_id", "resume")

    def __init__(self, ctx: CallContext, request_id: str | None, *, resume: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        self.reader = dialect.reader(ctx.api, ctx.body.get("n"))
        self.request_id = request_id
        self.resume = resume

    @property
    def complete(self) -> bool:
        """Whether the final item (usage, or every choice finished) has been seen."""
        return self.reader.complete

    # -- reading items -------------------------------------------------------------------
    def see(self, item: Any) -> bool:
        """Account for one item; ``False`` means: hide it (llmspend's own usage chunk)."""
        try:
            usage_only = self.reader.feed(item)
        except Exception:  # an odd item must never break the caller's stream
            log.debug("llmspend could not read a stream item", exc_info=True)
            return True
        return not (usage_only and self.ctx.injected)

    # -- settling ------------------------------------------------------------------------
    def record(self, *, cut: bool, error: BaseException | None) -> None:
        ctx = self.ctx
        reader = self.reader
        rid = reader.response_id
        if self.resume:  # a resumed background response: settle it only when final
            if reader.complete and rid and ctx is LEDGER.take(rid):
                self._record(ctx, cut=False, error=None)
            return
        if reader.usage is None and not reader.complete and ctx.background and rid:
            LEDGER.park(rid, ctx, reader.out_bytes, reader.model, self.request_id)
            return
        self._record(ctx, cut=cut, error=error)

    def _record(self, ctx: CallContext, *, cut: bool, error: BaseException | None) -> None:
        rid = self.request_id
        try:
            reading = self.reader.result()
        except Exception as exc:  # a bug reading usage: settle from the text received
            internal_error("read an openai stream's usage", exc)
            reader = self.reader
            reading = Reading(None, reader.model, complete=reader.complete,
                              out_bytes=reader.out_bytes)  # fmt: skip
        if reading.error is not None:  # the provider said the response failed
            failed = ResponseFailedError(reading.error)
            ctx.finish_reading(reading, request_id=rid, status="error", error=failed)
        elif reading.usage is not None:
            ctx.finish_reading(reading, request_id=rid)
        elif cut and not reading.complete:
            ctx.finish_estimate(
                "partial", reading.out_bytes, model=reading.model, request_id=rid, error=error
            )
        else:  # complete, but the provider sent no usage
            ctx.finish_estimate("ok", reading.out_bytes, model=reading.model, request_id=rid)


# -- Stream / AsyncStream ----------------------------------------------------------------------


def observe_stream(ctx: CallContext, stream: Any, *, is_async: bool, resume: bool = False) -> None:
    """Observe an SDK ``Stream``/``AsyncStream`` in place (same object for the caller)."""
    obs = StreamObserver(ctx, stream.response.headers.get("x-request-id"), resume=resume)
    obs.attach(stream, is_async=is_async)


# -- raw responses (with_raw_response / with_streaming_response) -------------------------------


def settle_bytes(
    ctx: CallContext, data: bytes, content_type: str, request_id: str | None, *, ended: bool
) -> None:
    """Settle a call from its raw body (JSON, SSE, or anything else), read whole or not."""
    if "event-stream" in content_type or data.startswith((b"data:", b"event:")):
        obs = StreamObserver(ctx, request_id)
        items, done = dialect.sse_events(data)
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
    observing.tee_raw(
        http,
        lambda data, ended: settle_bytes(ctx, data, content_type, request_id, ended=ended),
        is_async=is_async,
    )
