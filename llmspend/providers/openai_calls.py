"""Settling OpenAI-style calls: the tap's side of a call, and background responses.

What a request and a response say is read by :mod:`llmspend.dialects.openai` (usage
normalization, routes, estimates); a :class:`CallContext` holds one tracked call until it
is settled: with the provider's usage, or from an estimate (``usage_estimated=True``):
``ceil(utf8_bytes / 4)`` of the request text for input and of the text received for output.

Background responses (``responses.create(background=True)``) keep generating on the server
after the HTTP call returns or its stream is cut. Their call is parked in :data:`LEDGER`
until a later ``retrieve``/``cancel`` (or a resumed ``retrieve(stream=True)``) of the same
id shows the final usage; whatever is still parked at interpreter exit is settled from an
estimate. So one background generation gives one row, with the provider's usage when this
process ever sees it.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..call import Call, Usage
from ..dialects import Reading, field, tokens_from_bytes
from ..dialects import openai as dialect
from ..errors import ResponseFailedError

__all__ = ["LEDGER", "CallContext"]

log = logging.getLogger("llmspend")


class CallContext:
    """One tracked call and what its request said, until it is settled."""

    __slots__ = ("api", "background", "body", "call", "injected", "provider")

    def __init__(
        self,
        call: Call,
        api: str,
        provider: str,
        body: Mapping[str, Any],
        *,
        injected: bool = False,
    ) -> None:
        self.call = call
        self.api = api
        self.provider = provider
        self.body = body
        self.injected = injected
        self.background = body.get("background") is True

    def input_estimate(self) -> int:
        """Estimated input tokens: ``ceil(utf8_bytes / 4)`` of the request's text."""
        return dialect.input_estimate(self.body)

    # -- settling ------------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """The call raised: record an error without usage (costs 0)."""
        self.call.finish(None, status="error", error=exc)

    def finish_estimate(
        self,
        status: str,
        out_bytes: int = 0,
        *,
        model: str | None = None,
        request_id: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Settle from an estimate: request text for input, received text for output."""
        usage = Usage(self.input_estimate(), 0, 0, tokens_from_bytes(out_bytes), 0)
        self.call.finish(
            usage,
            status=status,
            response_model=model,
            request_id=request_id,
            error=error,
            usage_estimated=True,
        )

    def finish_reading(
        self,
        reading: Reading,
        *,
        request_id: str | None,
        status: str = "ok",
        error: BaseException | None = None,
    ) -> None:
        """Settle with the usage the dialect read (priced at the tier the provider reports
        it served), or an estimate when it had none."""
        if reading.service_tier is not None:
            self.call.service_tier = reading.service_tier
        if self.api.startswith("responses") and reading.response_id:
            # A response's own id is what a later request names (previous_response_id):
            # recorded as its request id, the estimate of that request can find it.
            request_id = reading.response_id
        if reading.usage is None:
            self.finish_estimate(
                status, reading.out_bytes, model=reading.model, request_id=request_id, error=error
            )
            return
        self.call.finish(
            reading.usage,
            status=status,
            response_model=reading.model,
            request_id=request_id,
            error=error,
            service_tier=reading.service_tier,
        )

    def finish_result(self, obj: Any, request_id: str | None = None) -> None:
        """Settle from a complete (non-streamed) result: a model, a dict or a string."""
        if request_id is None:
            rid = getattr(obj, "_request_id", None)
            request_id = rid if type(rid) is str else None
        reading = dialect.read(self.api, obj)
        status, error = "ok", None
        state = reading.status
        if state is not None:  # the Responses API
            rid = reading.response_id
            if state in dialect.PENDING and self.background and rid is not None:
                LEDGER.park(rid, self, 0, reading.model, request_id)
                return
            if state == "failed":
                status, error = "error", ResponseFailedError(reading.error)
        self.finish_reading(reading, request_id=request_id, status=status, error=error)


class _Parked(NamedTuple):
    """A background response awaiting its final usage, and what is known so far."""

    ctx: CallContext
    out_bytes: int
    model: str | None
    request_id: str | None


class _Ledger:
    """Background responses parked until their final usage is seen (bounded, thread-safe)."""

    MAX = 1024

    def __init__(self) -> None:
        self._items: dict[str, _Parked] = {}
        self._lock = threading.Lock()
        self._hooked = False

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, response_id: str) -> CallContext | None:
        """The parked call of ``response_id``, left in place."""
        item = self._items.get(response_id)
        return item.ctx if item is not None else None

    def park(
        self,
        response_id: str,
        ctx: CallContext,
        out_bytes: int,
        model: str | None,
        request_id: str | None,
    ) -> None:
        """Keep ``ctx`` unsettled until ``response_id``'s final usage shows up."""
        evicted = []
        with self._lock:
            self._items[response_id] = _Parked(ctx, out_bytes, model, request_id)
            while len(self._items) > self.MAX:
                evicted.append(self._items.pop(next(iter(self._items))))
            if not self._hooked:
                atexit.register(self.flush)
                self._hooked = True
        for item in evicted:
            self._settle_estimate(item)

    def take(self, response_id: str) -> CallContext | None:
        """Remove and return the parked call of ``response_id``, if any."""
        with self._lock:
            item = self._items.pop(response_id, None)
        return item.ctx if item is not None else None

    def resolve(self, response_id: str, response: Any) -> None:
        """Settle the parked call from a retrieved response once it is terminal."""
        if field(response, "status") not in dialect.TERMINAL:
            return
        with self._lock:
            item = self._items.pop(response_id, None)
        if item is not None:
            item.ctx.background = False  # terminal now: settle, never park again
            item.ctx.finish_result(response, item.request_id)

    @staticmethod
    def _settle_estimate(item: _Parked) -> None:
        item.ctx.finish_estimate(
            "partial", item.out_bytes, model=item.model, request_id=item.request_id
        )

    def flush(self) -> None:
        """Settle every parked call from an estimate (at exit)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for item in items:
            try:
                self._settle_estimate(item)
            except Exception:  # pragma: no cover - finish never raises
                log.exception("llmspend could not settle a background response")


LEDGER = _Ledger()
"""The process-wide ledger of background responses awaiting their final usage."""
