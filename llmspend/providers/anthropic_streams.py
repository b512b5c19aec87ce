"""Settling anthropic SDK calls: complete results, event streams and raw responses.

What a response or stream says is read by :mod:`llmspend.dialects.anthropic`; a
:class:`CallContext` holds one tracked call until it is settled, once:

* a complete ``Message`` (or a dict): its usage, or an estimate when it has none;
* ``Stream`` / ``AsyncStream``: the stream's ``_iterator`` is replaced by a generator that
  yields exactly the events the SDK produced (the same objects, in the same order, with the
  same exceptions) and shows each to the dialect's reader on the way. The caller keeps the
  SDK's own stream object. ``messages.stream()`` helpers iterate that same ``Stream`` and
  close it through its ``httpx2.Response``, whose byte stream is wrapped (as httpx2 itself
  does, see :func:`~.bytestreams.tap_response`) to learn about every close;
* raw responses (``with_raw_response`` / ``with_streaming_response``): the body bytes are
  teed as the caller reads them and parsed (JSON or SSE) when the body ends or is closed.

A stream read to ``message_stop`` is ``ok`` with the provider's usage; one closed early,
cut or abandoned (garbage collected unclosed) is ``partial``; one ended by the provider's
``error`` event is ``error``. Either keeps the input and cache counts ``message_start``
reported and estimates the output from the text received when no final count arrived
(``usage_estimated``). Settlement triggered by the garbage collector runs on a short-lived
thread, so it can never re-enter a lock held by the code the collector interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from ..call import Call, Usage
from ..dialects import Reading, tokens_from_bytes
from ..dialects import anthropic as dialect
from ..errors import ResponseFailedError
from ..pipeline import internal_error
from . import observing

__all__ = ["CallContext", "StreamObserver", "observe_raw", "observe_stream", "settle_bytes"]

log = logging.getLogger("llmspend")


class CallContext:
    """One tracked anthropic call and what its request said, until it is settled."""

    __slots__ = ("api", "body", "call")

    def __init__(self, call: Call, api: str, body: Mapping[str, Any]) -> None:
        self.call = call
        self.api = api
        self.body = body

    def input_estimate(self) -> int:
        """Estimated input tokens: ``ceil(utf8_bytes / 4)`` of the request's text."""
        try:
            fields = dialect.INPUT_FIELDS.get(self.api, ())
            text = json.dumps([self.body.get(k) for k in fields], default=str)
            return tokens_from_bytes(len(text.encode("utf-8", "surrogatepass")))
        except Exception:
            return 0

    def fail(self, exc: BaseException) -> None:
        """The call raised: record an error without usage (costs 0)."""
        self.call.finish(None, status="error", error=exc)

    def finish_result(self, obj: Any, request_id: str | None = None) -> None:
        """Settle from a complete (non-streamed) result: an SDK model or a dict."""
        if request_id is None:
            rid = getattr(obj, "_request_id", None)
            request_id = rid if type(rid) is str else None
        self.finish_reading(dialect.read(self.api, obj), request_id, cut=False)

    def finish_reading(
        self,
        reading: Reading,
        request_id: str | None,
        *,
        cut: bool,
        error: BaseException | None = None,
    ) -> None:
        """Record what the dialect read: ``ok``, ``partial`` (cut before the end) or
        ``error`` (the provider's error event); estimated where counts are missing."""
        status = "ok"
        if reading.error is not None or getattr(error, "status_code", None) is not None:
            status = "error"  # the provider's error event (the SDK raises APIStatusError)
            error = error or ResponseFailedError(reading.error)
        elif cut and not reading.complete:
            status = "partial"
        usage, estimated = reading.usage, False
        out = tokens_from_bytes(reading.out_bytes)
        if usage is None:
            usage, estimated = Usage(self.input_estimate(), 0, 0, out, 0), True
        elif not reading.complete:  # no final output count: at least the text received
            output = max(out, usage.output_tokens)
            usage, estimated = dataclasses.replace(usage, output_tokens=output), True
        self.call.finish(
            usage,
            status=status,
            response_model=reading.model,
            request_id=request_id,
            error=error,
            usage_estimated=estimated,
            service_tier=reading.service_tier,
        )


class StreamObserver(observing.StreamObserver):
    """Shows one stream's events to the dialect's reader and settles its call once."""

    __slots__ = ("ctx", "reader", "request_id")

    def __init__(self, ctx: CallContext, request_id: str | None) -> None:
        super().__init__()
        self.ctx = ctx
        self.reader = dialect.reader(ctx.api)
        self.request_id = request_id

    @property
    def complete(self) -> bool:
        return bool(self.reader.complete)

    def see(self, item: Any) -> bool:
        """Account for one event (an odd one never breaks the caller's stream)."""
        try:
            self.reader.feed(item)
        except Exception:
            log.debug("llmspend could not read an anthropic stream event", exc_info=True)
        return True

    def record(self, *, cut: bool, error: BaseException | None) -> None:
        try:
            reading = self.reader.result()
        except Exception as exc:  # a bug reading usage: settle from the text received
            internal_error("read an anthropic stream's usage", exc)
            reading = Reading(None, complete=self.reader.complete,
                              out_bytes=self.reader.out_bytes)  # fmt: skip
        self.ctx.finish_reading(reading, self.request_id, cut=cut, error=error)


def observe_stream(ctx: CallContext, stream: Any, *, is_async: bool) -> None:
    """Observe an SDK ``Stream``/``AsyncStream`` in place (same object for the caller)."""
    StreamObserver(ctx, stream.response.headers.get("request-id")).attach(stream, is_async=is_async)


# -- raw responses (with_raw_response / with_streaming_response) -------------------------------


def settle_bytes(
    ctx: CallContext, data: bytes, content_type: str, request_id: str | None, *, ended: bool
) -> None:
    """Settle a call from its raw body (JSON or SSE), read whole or not."""
    if "event-stream" in content_type or data.startswith((b"event:", b"data:")):
        obs = StreamObserver(ctx, request_id)
        for item in dialect.sse_events(data):
            obs.see(item)
        obs.settle(cut=not ended)
        return
    parsed = None
    if "json" in content_type:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
    if isinstance(parsed, dict):
        ctx.finish_result(parsed, request_id)
    else:
        ctx.finish_reading(Reading(None, complete=ended), request_id, cut=not ended)


def observe_raw(ctx: CallContext, raw: Any, http: Any, *, is_async: bool) -> None:
    """Observe a raw response (an ``APIResponse`` ``raw`` over the ``httpx2.Response``
    ``http``) without reading its body for the caller."""
    request_id = http.headers.get("request-id")
    content_type = http.headers.get("content-type", "")
    try:
        body = http.content  # already read unless the body is streamed
    except Exception:
        body = None
    if body is not None:
        settle_bytes(ctx, body, content_type, request_id, ended=True)
        return
    observing.tee_raw(
        http,
        lambda data, ended: settle_bytes(ctx, data, content_type, request_id, ended=ended),
        is_async=is_async,
    )
