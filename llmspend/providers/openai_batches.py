"""OpenAI Batch API jobs: reserved at creation, settled when their results are read.

The SDK uploads a batch's input (JSONL) with ``files.create(purpose="batch")`` and then
calls ``batches.create(input_file_id=...)``. llmspend reads the upload as it leaves (the
bytes the caller handed the SDK) and keeps, by file id and in this process only, what the
file asks for: its model, a bound on its input tokens (``ceil(utf8_bytes / 4)`` of each
line's request text) and on its output (each line's ``max_tokens``-style cap, or
:data:`~llmspend.call.DEFAULT_OUTPUT_CAP`). ``batches.create`` is then begun as one call
(api ``batches``) reserving that worst case at the batch price. A batch whose input file
this process did not upload cannot be bounded: its model is unknown, so a hard budget
refuses it by default (``unpriced_policy``), as it does a call to an unknown model.

One row per batch: the call is parked under the batch id and settled, priced at the
``batch`` tier (:mod:`llmspend.pricing.tiers`), from the first of

* a retrieved or listed batch (``batches.retrieve`` / ``batches.list``) that is completed
  and carries ``usage``;
* the content of its output file (``files.content``): the usage of every result line,
  summed, the model from the first.

Once settled the batch is forgotten, so results read or listed twice count once. A batch
still parked when the interpreter exits is settled from its reservation's bound
(``partial``, ``usage_estimated``): llmspend would not see it end.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..call import DEFAULT_OUTPUT_CAP, Call, Usage
from ..dialects import field
from ..dialects import openai as dialect
from ..pipeline import begin_call, internal_error

__all__ = ["BATCHES", "BatchInput", "begin_batch", "created", "read_input", "watch"]

log = logging.getLogger("llmspend")

_ENDPOINT_APIS = {"/v1/chat/completions": "chat.completions", "/v1/responses": "responses",
                  "/v1/embeddings": "embeddings", "/v1/completions": "completions",
                  "/v1/moderations": "moderations"}  # fmt: skip


class BatchInput(NamedTuple):
    """What a batch input file asks for: its model and worst-case tokens."""

    model: str
    input_tokens: int
    output_tokens: int
    lines: int


def read_input(data: bytes) -> BatchInput | None:
    """The worst case of a batch input file (JSONL of ``{custom_id, method, url, body}``)."""
    model, inp, out, n = "", 0, 0, 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            return None
        body = field(line, "body")
        if not isinstance(body, Mapping):
            return None
        api = _ENDPOINT_APIS.get(str(field(line, "url") or "").split("?")[0], "chat.completions")
        name = body.get("model")
        model = model or (name if isinstance(name, str) else "")
        inp += dialect.input_estimate(body)
        out += dialect.max_output(api, body) or (0 if api == "embeddings" else DEFAULT_OUTPUT_CAP)
        n += 1
    return BatchInput(model, inp, out, n) if n else None


def _content_of(file: Any) -> bytes | None:
    """The bytes of a file the SDK was handed (bytes, a path, a file object, a tuple)."""
    if isinstance(file, tuple) and len(file) > 1:
        file = file[1]
    if isinstance(file, (bytes, bytearray)):
        return bytes(file)
    if isinstance(file, os.PathLike):
        with open(file, "rb") as fh:
            return fh.read()
    read, seek, tell = (getattr(file, n, None) for n in ("read", "seek", "tell"))
    if callable(read) and callable(seek) and callable(tell):
        at = tell()
        data = read()
        seek(at)
        return data if isinstance(data, bytes) else None
    return None


class _Batches:
    """Uploaded batch inputs (by file id) and batches awaiting their results (thread-safe)."""

    MAX = 1024

    def __init__(self) -> None:
        self.inputs: dict[str, BatchInput] = {}
        self.parked: dict[str, Call] = {}
        self.outputs: dict[str, str] = {}  # output file id -> batch id
        self._lock = threading.Lock()
        self._hooked = False

    def remember_input(self, file_id: str, summary: BatchInput) -> None:
        with self._lock:
            self.inputs[file_id] = summary
            while len(self.inputs) > self.MAX:
                self.inputs.pop(next(iter(self.inputs)))

    def park(self, batch_id: str, call: Call) -> None:
        with self._lock:
            self.parked[batch_id] = call
            if not self._hooked:
                atexit.register(self.flush)
                self._hooked = True

    def seen(self, batch: Any) -> None:
        """A retrieved or listed batch: settle it from its usage, or note its output file."""
        bid = field(batch, "id")
        if bid not in self.parked or field(batch, "status") not in ("completed", "expired"):
            return
        usage = dialect.normalize_usage(field(batch, "usage"), "responses")
        if usage is not None:
            self.settle(bid, usage, None)
            return
        out = field(batch, "output_file_id")
        if isinstance(out, str):
            with self._lock:
                self.outputs[out] = bid

    def results(self, file_id: str, data: bytes) -> None:
        """The content of an output file: settle its batch from the lines' usage."""
        with self._lock:
            bid = self.outputs.pop(file_id, None)
        if bid is None:
            return
        total, model = Usage(), None
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            body = field(field(line, "response"), "body")
            usage = dialect.normalize_usage(field(body, "usage"), "chat.completions")
            if usage is None:
                continue
            model = model or field(body, "model")
            total = Usage(*(a + b for a, b in zip(_tuple(total), _tuple(usage), strict=True)))
        self.settle(bid, total, model if isinstance(model, str) else None)

    def settle(self, batch_id: str, usage: Usage, model: str | None) -> None:
        with self._lock:
            call = self.parked.pop(batch_id, None)
            for out in [k for k, v in self.outputs.items() if v == batch_id]:
                del self.outputs[out]
        if call is not None:
            call.finish(usage, response_model=model, request_id=batch_id, service_tier="batch")

    def flush(self) -> None:
        """Settle every parked batch from its bound (at exit)."""
        with self._lock:
            items = list(self.parked.items())
            self.parked.clear()
        for bid, call in items:
            out = call.output_cap or 0
            call.finish(Usage(call.input_upper, 0, 0, out, 0), status="partial",
                        request_id=bid, usage_estimated=True, service_tier="batch")  # fmt: skip


def _tuple(u: Usage) -> tuple[int, int, int, int, int]:
    return (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
            u.reasoning_tokens)  # fmt: skip


BATCHES = _Batches()
"""The process-wide record of batch inputs and parked batches."""


def begin_batch(provider: str, body: Mapping[str, Any]) -> Call | None:
    """Begin ``batches.create``: reserve the worst case of its input file at batch rates."""
    file_id = body.get("input_file_id")
    summary = BATCHES.inputs.get(file_id) if isinstance(file_id, str) else None
    if summary is None:  # not uploaded here: unbounded, so priced as an unknown model
        return begin_call(provider, "batches", "", input_tokens=0, max_output_tokens=0,
                          service_tier="batch")  # fmt: skip
    return begin_call(provider, "batches", summary.model, input_tokens=summary.input_tokens,
                      max_output_tokens=summary.output_tokens, service_tier="batch")  # fmt: skip


def created(call: Call, batch: Any) -> None:
    """``batches.create`` returned: park the call under the batch id (or settle, if done)."""
    bid = field(batch, "id")
    if not isinstance(bid, str):
        call.finish(None, status="error")
        return
    BATCHES.park(bid, call)
    BATCHES.seen(batch)


def watch(method: str, url: str, options: Any) -> Any:
    """An observer of this request's result when it concerns batches, else ``None``."""
    path = url.split("?")[0].rstrip("/")
    if not path.startswith("/"):
        path = "/" + path
    parts = path.split("/")
    if method == "post" and path == "/files":
        body = options.json_data if isinstance(options.json_data, Mapping) else {}
        if body.get("purpose") != "batch":
            return None
        try:
            content = next((_content_of(f) for k, f in options.files or () if k == "file"), None)
        except Exception as exc:
            internal_error("read a batch input file", exc)
            return None
        summary = read_input(content) if content else None
        if summary is None:
            return None
        return lambda result: _uploaded(result, summary)
    if method != "get" or not BATCHES.parked:
        return None
    if path == "/batches" or (len(parts) == 3 and parts[1] == "batches"):
        return _batches_seen
    if (
        len(parts) == 4
        and parts[1] == "files"
        and parts[3] == "content"
        and (parts[2] in BATCHES.outputs)
    ):
        return lambda result: _output_read(parts[2], result)
    return None


def _uploaded(result: Any, summary: BatchInput) -> None:
    fid = field(result, "id")
    if isinstance(fid, str):
        BATCHES.remember_input(fid, summary)


def _batches_seen(result: Any) -> None:
    data = field(result, "data")
    for batch in data if isinstance(data, list) else [result]:
        BATCHES.seen(batch)


def _output_read(file_id: str, result: Any) -> None:
    response = getattr(result, "response", None)
    content = getattr(response, "content", None) if response is not None else None
    if isinstance(content, bytes):
        BATCHES.results(file_id, content)
