"""Anthropic Message Batches: reserved at creation, settled once when their results are read.

``client.messages.batches.create(requests=[{custom_id, params}])`` (``POST
/v1/messages/batches``) is begun as one call (api ``batches``) reserving the worst case of
its requests — each ``params`` bounded as the Messages dialect bounds a request
(:mod:`llmspend.dialects.anthropic`: text, images, tools; ``max_tokens`` for the output) —
at the ``batch`` tier (50% of standard prices). A batch that cannot be bounded offline (a
request with a PDF, URL or file, a server-side tool, or a batch mixing models, whose
prices the one reservation cannot hold) is begun for an unknown model: a hard budget
refuses it by default (``unpriced_policy``).

The call is parked under the batch id (:mod:`.batch_jobs`) and settled, at the batch
price, when ``batches.results(id)`` (``GET /v1/messages/batches/{id}/results``, a JSONL
stream) has been read to its end: the usage of every ``succeeded`` line, summed (errored,
canceled and expired requests are not billed), the model from the first. A batch
retrieved or listed ended with no request succeeded (every one errored, canceled or
expired) was billed nothing: it is recorded then, as an error at no cost. Reading the
results again, or retrieving and listing the batch, counts nothing more. Results read only
in part, or through ``with_raw_response``, leave the batch parked: it is settled from its
bound at exit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from ..call import Call, InputBound, Usage, measure_input
from ..dialects import Request, field
from ..dialects import anthropic as dialect
from .batch_jobs import BatchInput, BatchLedger, begin_batch, output_bound, total_usage

__all__ = ["BATCHES", "BatchRequest", "batch_request", "read_requests"]

BATCHES = BatchLedger()
"""The process-wide record of parked Anthropic batches."""

_BATCHES_PATH = "/v1/messages/batches"


def read_requests(body: Any) -> BatchInput | None:
    """The worst case of a batch's ``requests`` (``None``: it cannot be bounded offline)."""
    requests = field(body, "requests")
    if not isinstance(requests, list) or not requests:
        return None
    model, inp, out = "", 0, 0
    for item in requests:
        params = field(item, "params")
        if not isinstance(params, Mapping):
            return None
        route = dialect.route(Request("post", "/v1/messages", params))
        if route is None or not route.model or (model and route.model != model):
            return None
        bound = measure_input(route.payload) if route.payload is not None else None
        if bound is None:
            bound = InputBound(route.input_upper or 0)
        if bound.open_ended or bound.prior_ids:
            return None
        model = route.model
        inp += bound.tokens
        out += output_bound(model, route.output_cap)
    return BatchInput(model, inp, out, len(requests))


def _line_usage(line: Any) -> tuple[Usage | None, str | None]:
    """The usage and model of one results line (``None`` when it was not billed)."""
    result = field(line, "result")
    if field(result, "type") != "succeeded":
        return None, None
    message = field(result, "message")
    model = field(message, "model")
    return dialect.normalize_usage(field(message, "usage")), model if isinstance(
        model, str
    ) else None


class _Results:
    """Reads a results stream as the caller does; settles its batch at the end."""

    def __init__(self, batch_id: str) -> None:
        self.batch_id = batch_id
        self.buf = b""
        self.usages: list[Usage] = []
        self.model: str | None = None

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self._line(raw)

    def _line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            usage, model = _line_usage(json.loads(raw))
        except ValueError:
            return
        if usage is not None:
            self.usages.append(usage)
            self.model = self.model or model

    def end(self) -> None:
        self._line(self.buf)
        BATCHES.settle(self.batch_id, total_usage(self.usages), self.model)

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.feed(chunk)
            yield chunk
        self.end()

    async def awrap(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self.feed(chunk)
            yield chunk
        self.end()


def _seen(batch: Any) -> None:
    """A retrieved or listed batch: one that ended with no request succeeded costs nothing
    (the others are settled from their results)."""
    bid = field(batch, "id")
    if not isinstance(bid, str) or bid not in BATCHES.parked:
        return
    if field(batch, "processing_status") != "ended":
        return
    succeeded = field(field(batch, "request_counts"), "succeeded")
    if isinstance(succeeded, int) and succeeded == 0:
        BATCHES.settle(bid, Usage(), None, status="error")


class BatchRequest:
    """A batch request the tap sends: a creation (``call``), a results read (``batch_id``)
    or a retrieve or list (neither)."""

    __slots__ = ("batch_id", "call")

    def __init__(self, call: Call | None, batch_id: str | None) -> None:
        self.call = call
        self.batch_id = batch_id

    def fail(self, exc: BaseException) -> None:
        """The request failed: a creation is recorded as an error (nothing billed)."""
        if self.call is not None:
            self.call.finish(None, status="error", error=exc)

    def done(self, result: Any) -> None:
        """A creation returned its batch: park the call under its id. A results stream:
        read it as the caller does (``_raw_iterator`` of the SDK's JSONL decoder). A batch
        retrieved, or a page of them listed: see whether one ended without results."""
        if self.call is not None:
            BATCHES.created(self.call, field(result, "id"))
            return
        if self.batch_id is None:
            data = field(result, "data")
            for batch in data if isinstance(data, list) else [result]:
                _seen(batch)
            return
        raw = getattr(result, "_raw_iterator", None)
        if self.batch_id is None or raw is None or self.batch_id not in BATCHES.parked:
            return
        results = _Results(self.batch_id)
        if hasattr(raw, "__aiter__"):
            result._raw_iterator = results.awrap(raw)
        else:
            result._raw_iterator = results.wrap(iter(raw))


def batch_request(method: str, url: str, body: Any, provider: str) -> BatchRequest | None:
    """What a batch request is (beginning a creation's call: may raise ``BudgetExceeded``),
    or ``None`` when it is not one llmspend settles batches from."""
    path = urlsplit(url).path if ("://" in url or "?" in url) else url
    path = path.rstrip("/")
    at = path.find(_BATCHES_PATH)
    if at < 0:
        return None
    rest = path[at + len(_BATCHES_PATH) :].strip("/").split("/")
    method = method.lower()
    if method == "post" and rest == [""]:
        call = begin_batch(provider, read_requests(body))
        return None if call is None else BatchRequest(call, None)
    if method == "get" and len(rest) == 2 and rest[1] == "results" and rest[0] in BATCHES.parked:
        return BatchRequest(None, rest[0])
    listed = rest == [""] or (len(rest) == 1 and rest[0] in BATCHES.parked)
    if method == "get" and BATCHES.parked and listed:
        return BatchRequest(None, None)  # a retrieve or a list
    return None
