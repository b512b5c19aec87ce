"""OpenAI Batch API jobs: reserved at creation, settled when their results are read.

The SDK uploads a batch's input (JSONL) with ``files.create(purpose="batch")`` and then
calls ``batches.create(input_file_id=...)``. llmspend reads the upload as it leaves (the
bytes the caller handed the SDK) and keeps, by file id and in this process only, what the
file asks for: its model, a bound on its input tokens (each line's request bounded as the
openai dialect bounds a request: text, images, tools) and on its output (each line's
``max_tokens``-style cap, else the model's published cap, else
:data:`~llmspend.call.DEFAULT_OUTPUT_CAP`). ``batches.create`` is then begun as one call
(api ``batches``) reserving that worst case at the batch price. A batch whose input file
this process did not upload cannot be bounded, nor one whose lines name several models or
content of unknown size (files, stored responses): it is begun for an unknown model, so a
hard budget refuses it by default (``unpriced_policy``), as it does a call to an unknown
model.

One row per batch: the call is parked under the batch id (:mod:`.batch_jobs`, the
machinery every provider's batches share) and settled, priced at the ``batch`` tier
(:mod:`llmspend.pricing.tiers`), from the first of

* a retrieved or listed batch (``batches.retrieve`` / ``batches.list``, raw too) that has ended
  (completed, expired, cancelled) and carries ``usage``;
* the content of its output file (``files.content``, also ``with_raw_response``, or
  ``with_streaming_response`` once read to its end): the usage of every result line,
  summed, the model from the first;
* a retrieved or listed batch that ended without an output file (``failed``, or cancelled,
  expired or completed with no request answered): nothing was billed, it is recorded as an
  error at no cost.

Once settled the batch is forgotten, so results read or listed twice count once. A batch
still parked when the interpreter exits is settled from its reservation's bound
(``partial``, ``usage_estimated``): llmspend would not see it end.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from ..call import Call, Usage, measure_input
from ..dialects import Request, field
from ..dialects import openai as dialect
from ..pipeline import internal_error
from . import observing
from .batch_jobs import BatchInput, BatchLedger, output_bound, total_usage
from .batch_jobs import begin_batch as start_batch

__all__ = ["BATCHES", "BatchInput", "begin_batch", "created", "read_input", "watch"]

log = logging.getLogger("llmspend")

_CHAT = "/v1/chat/completions"
_ENDED = ("completed", "expired", "cancelled", "failed")  # a batch's final states
_ENDPOINT_APIS = {"/v1/chat/completions": "chat.completions", "/v1/responses": "responses",
                  "/v1/embeddings": "embeddings", "/v1/completions": "completions",
                  "/v1/moderations": "moderations"}  # fmt: skip


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
        path = str(field(line, "url") or "").split("?")[0]
        api = _ENDPOINT_APIS.get(path, "chat.completions")
        name = body.get("model")
        if not isinstance(name, str) or not name or (model and name != model):
            return None  # one reservation holds one model's prices
        model = name
        r = dialect.route(Request("post", path if path in _ENDPOINT_APIS else _CHAT, body))
        bound = measure_input(r.payload) if r is not None else None
        if bound is None or bound.open_ended or bound.prior_ids:
            return None  # content of unknown size: no offline bound
        inp += bound.tokens
        cap = dialect.max_output(api, body)
        out += cap or (0 if api == "embeddings" else output_bound(model, None))
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


class _Batches(BatchLedger):
    """Uploaded batch inputs (by file id) and batches awaiting their results (thread-safe);
    output files are the ledger's ``files``."""

    MAX = 1024

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, BatchInput] = {}

    @property
    def outputs(self) -> dict[str, str]:
        """Output file id -> batch id."""
        return self.files

    def remember_input(self, file_id: str, summary: BatchInput) -> None:
        with self._lock:
            self.inputs[file_id] = summary
            while len(self.inputs) > self.MAX:
                self.inputs.pop(next(iter(self.inputs)))

    def seen(self, batch: Any) -> None:
        """A retrieved or listed batch that has ended: settle it from its usage, or note
        its output file; one that ended without results (failed, or cancelled, expired or
        completed with every request failed) costs nothing."""
        bid = field(batch, "id")
        if bid not in self.parked or field(batch, "status") not in _ENDED:
            return
        usage = dialect.normalize_usage(field(batch, "usage"), "responses")
        if usage is not None:
            self.settle(bid, usage, None)
            return
        out = field(batch, "output_file_id")
        if isinstance(out, str) and out:
            self.note_file(out, bid)
        else:
            self.settle(bid, Usage(), None, status="error")

    def results(self, file_id: str, data: bytes) -> None:
        """The content of an output file: settle its batch from the lines' usage."""
        bid = self.job_of_file(file_id)
        if bid is None:
            return
        usages, model = [], None
        for raw in data.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            body = field(field(line, "response"), "body")
            api = "embeddings" if field(body, "object") == "list" else "chat.completions"
            usage = dialect.normalize_usage(field(body, "usage"), api)
            if usage is None:
                continue
            model = model or field(body, "model")
            usages.append(usage)
        self.settle(bid, total_usage(usages), model if isinstance(model, str) else None)


BATCHES = _Batches()
"""The process-wide record of batch inputs and parked batches."""


def begin_batch(provider: str, body: Mapping[str, Any]) -> Call | None:
    """Begin ``batches.create``: reserve the worst case of its input file at batch rates."""
    file_id = body.get("input_file_id")
    summary = BATCHES.inputs.get(file_id) if isinstance(file_id, str) else None
    return start_batch(provider, summary)  # not uploaded here: unbounded (unknown model)


def created(call: Call, batch: Any) -> None:
    """``batches.create`` returned: park the call under the batch id (or settle, if done)."""
    if BATCHES.created(call, field(batch, "id")):
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


def _http_of(result: Any) -> tuple[Any, bytes | None]:
    """The HTTP response under an SDK result (``files.content``'s binary content, or a
    ``with_raw_response`` / ``with_streaming_response`` wrapper) and its body, ``None``
    while the caller has not read it (a streamed body)."""
    http = getattr(result, "http_response", None) or getattr(result, "response", None)
    if http is None or not hasattr(http, "headers"):
        return None, None
    try:
        body = http.content
    except Exception:  # a streamed body not read yet
        body = None
    return http, body if isinstance(body, bytes) else None


def _batches_seen(result: Any) -> None:
    if hasattr(result, "http_response"):  # with_raw_response: the JSON body, when read
        body = _http_of(result)[1]
        try:
            result = json.loads(body) if body is not None else None
        except ValueError:
            return
    data = field(result, "data")
    for batch in data if isinstance(data, list) else [result]:
        BATCHES.seen(batch)


def _output_read(file_id: str, result: Any) -> None:
    """An output file read: settle its batch now (a read body) or when a streamed body has
    been read to its end (``with_streaming_response``; one read in part settles nothing)."""
    http, content = _http_of(result)
    if content is not None:
        BATCHES.results(file_id, content)
    elif http is not None:
        is_async = inspect.iscoroutinefunction(getattr(result, "parse", None))

        def settle(data: bytes, ended: bool) -> None:
            if ended:
                BATCHES.results(file_id, data)

        observing.tee_raw(http, settle, is_async=is_async)
