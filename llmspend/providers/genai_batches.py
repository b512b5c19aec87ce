"""google-genai Batch Mode: jobs reserved at creation, settled once when read completed.

Hooks (``google.genai.batches``, class level, sync and async): ``Batches._create`` (what
``client.batches.create`` sends: ``POST models/{model}:batchGenerateContent``),
``Batches._create_embeddings`` (``client.batches.create_embeddings``: ``POST
models/{model}:asyncBatchEmbedContent``), ``Batches.get`` (``GET batches/{name}``),
``Batches._list`` (``GET batches``, each page of ``client.batches.list``), and
``google.genai.files``' ``Files.download`` (a results file).

A job of inline requests (``src=[{contents, config}, ...]``) is begun as one call (api
``batches``) reserving the worst case of its requests — each bounded as the Gemini dialect
bounds a ``generateContent`` request (:mod:`llmspend.dialects.gemini`: text, inline media,
tools, schemas; ``max_output_tokens`` or the model's output cap) — at the ``batch`` tier
(50% of standard). A job whose requests cannot be bounded offline — a file source
(``src="files/..."``: its contents were not seen here), a request with a file by URI,
cached content or a search tool, or requests for several models — is begun for an unknown
model: a hard budget refuses it by default (``unpriced_policy``). An embeddings job
(``src={"inlined_requests": {"contents": [...]}}``) reserves its contents' bound (input
only); one of a file is unbounded the same way. Its usage is each embedding's
``token_count``.

The call is parked under the job's name (:mod:`.batch_jobs`) and settled, at the batch
price, when a ``get`` or ``list`` first returns the job finished: the ``usage_metadata`` of
every inline response, summed, the model from the first. A finished job whose results are
in a file (``dest.file_name``) is settled when that file is downloaded
(``Files.download`` returning the bytes: the usage of every line's response), else from
its bound at exit; a failed, cancelled or expired one without results costs nothing.
Reading it again counts nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..call import Call, Usage
from ..dialects import field
from ..dialects import gemini as dialect
from ..pipeline import handled, shielded
from ..plugins import Patch
from .batch_jobs import BatchInput, BatchLedger, begin_batch, output_bound, total_usage
from .gemini_usage import arun_recorded, route, run_recorded

__all__ = ["BATCHES", "patches", "read_embed_source", "read_source"]

MODULE = "google.genai.batches"
FILES = "google.genai.files"

BATCHES = BatchLedger()
"""The process-wide record of parked Gemini batch jobs."""

_ENDED = ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "PARTIALLY_SUCCEEDED")


def _model_name(model: Any) -> str:
    name = model if isinstance(model, str) else ""
    return name.rsplit("/", 1)[-1]


def read_source(model: Any, src: Any) -> BatchInput | None:
    """The worst case of a job's inline requests (``None``: it cannot be bounded here)."""
    name = _model_name(model)
    requests = field(src, "inlined_requests")
    if src is None or isinstance(src, str) or not isinstance(requests, list):
        requests = src if isinstance(src, list) else None
    if not name or not requests:
        return None
    inp = out = 0
    for item in requests:
        own = _model_name(field(item, "model"))
        if own and own != name:
            return None
        config = field(item, "config")
        body = {"contents": field(item, "contents"), "generation_config": config,
                "system_instruction": field(config, "system_instruction"),
                "tools": field(config, "tools")}  # fmt: skip
        r = route("generateContent", name, body)
        if r is None or r.payload is not None:  # open-ended (a file, a cache, a search)
            return None
        inp += r.input_upper or 0
        out += output_bound(name, r.output_cap)
    return BatchInput(name, inp, out, len(requests))


def read_embed_source(model: Any, src: Any) -> BatchInput | None:
    """The worst case of an embeddings job's inline contents (``None``: a file source, or
    content that cannot be bounded here); embeddings bill input only."""
    name = _model_name(model)
    contents = field(field(src, "inlined_requests"), "contents")
    if isinstance(contents, (str, dict)) or not isinstance(contents, list):
        contents = [contents] if contents is not None else None
    if not name or not contents:
        return None
    requests = [{"content": c} for c in contents]
    r = route("batchEmbedContents", name, {"requests": requests})
    if r is None or r.payload is not None:
        return None
    return BatchInput(name, r.input_upper or 0, 0, len(contents))


def _embed_usage(response: Any) -> Usage | None:
    """The usage of one embedding result: its ``token_count``."""
    count = field(response, "token_count")
    return Usage(count) if isinstance(count, int) and count >= 0 else None


def _state(job: Any) -> str:
    state = field(job, "state")
    return str(getattr(state, "value", state) or "").upper()


def seen(job: Any) -> None:
    """A job read (created, got or listed): settle it once it has finished."""
    name = field(job, "name")
    state = _state(job)
    if name not in BATCHES.parked or not state.endswith(_ENDED):
        return
    embedded = field(field(job, "dest"), "inlined_embed_content_responses")
    if isinstance(embedded, list):
        found = [_embed_usage(field(item, "response")) for item in embedded]
        BATCHES.settle(name, total_usage(u for u in found if u is not None), None)
        return
    responses = field(field(job, "dest"), "inlined_responses")
    if isinstance(responses, list):
        usages: list[Usage] = []
        model = None
        for item in responses:
            response = field(item, "response")
            usage = dialect.usage_of(response) if response is not None else None
            if usage is not None:
                usages.append(usage)
                model = model or field(response, "model_version")
        BATCHES.settle(name, total_usage(usages), model if isinstance(model, str) else None)
        return
    file_name = field(field(job, "dest"), "file_name")
    if isinstance(file_name, str) and file_name:
        BATCHES.note_file(_file_id(file_name), name)  # settled when it is downloaded
    elif not state.endswith("SUCCEEDED"):
        BATCHES.settle(name, Usage(), status="error")


def _file_id(file: Any) -> str:
    """``files/abc`` for a file name, ``abc``, or a File object."""
    name = field(file, "name") if not isinstance(file, str) else file
    name = name if isinstance(name, str) else ""
    return name if name.startswith("files/") else f"files/{name}"


def results(file: Any, data: Any) -> None:
    """A downloaded results file (JSONL of ``{key, response}``): settle its job from the
    responses' usage, the model from the first."""
    job = BATCHES.job_of_file(_file_id(file))
    if job is None or not isinstance(data, bytes):
        return
    usages: list[Usage] = []
    model = None
    for raw in data.splitlines():
        try:
            response = field(json.loads(raw), "response")
        except ValueError:
            continue
        usage = dialect.usage_of(response) if isinstance(response, dict) else None
        usage = usage or (_embed_usage(response) if isinstance(response, dict) else None)
        if usage is not None:
            usages.append(usage)
            model = model or field(response, "model_version")
    BATCHES.settle(job, total_usage(usages), model if isinstance(model, str) else None)


def _created(call: Call, job: Any) -> None:
    if BATCHES.created(call, field(job, "name")):
        seen(job)


def _listed(result: Any) -> None:
    for job in field(result, "batch_jobs") or ():
        seen(job)


def _begin(kwargs: dict[str, Any]) -> Call | None:
    summary = shielded(read_source, kwargs.get("model"), kwargs.get("src"),
                       what="read a Gemini batch")  # fmt: skip
    return begin_batch(dialect.PROVIDER, summary)


def _begin_embed(kwargs: dict[str, Any]) -> Call | None:
    summary = shielded(read_embed_source, kwargs.get("model"), kwargs.get("src"),
                       what="read a Gemini embeddings batch")  # fmt: skip
    return begin_batch(dialect.PROVIDER, summary)


def _create(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Batches._create``: reserve the job's worst case, park it under its name."""
    return run_recorded(_begin(kwargs), lambda: wrapped(*args, **kwargs), _created)


async def _acreate(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncBatches._create``."""
    return await arun_recorded(_begin(kwargs), lambda: wrapped(*args, **kwargs), _created)


def _create_embeddings(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Batches._create_embeddings``: an embeddings job, reserved and parked the same way."""
    return run_recorded(_begin_embed(kwargs), lambda: wrapped(*args, **kwargs), _created)


async def _acreate_embeddings(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``AsyncBatches._create_embeddings``."""
    return await arun_recorded(_begin_embed(kwargs), lambda: wrapped(*args, **kwargs), _created)


def _reader(read: Callable[[dict[str, Any], Any], None], waiting: dict[str, Any]) -> Any:
    """Sync and async hooks that send the request, then hand ``read(kwargs, result)`` the
    result — only while ``waiting`` (parked jobs, or results files) is not empty."""

    def sync(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not waiting:
            return wrapped(*args, **kwargs)
        with handled():
            result = wrapped(*args, **kwargs)
        shielded(read, kwargs, result, what="read a Gemini batch")
        return result

    async def asyn(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not waiting:
            return await wrapped(*args, **kwargs)
        with handled():
            result = await wrapped(*args, **kwargs)
        shielded(read, kwargs, result, what="read a Gemini batch")
        return result

    return sync, asyn


_get, _aget = _reader(lambda kw, job: seen(job), BATCHES.parked)
_list, _alist = _reader(lambda kw, page: _listed(page), BATCHES.parked)
# ``Files.download``: a batch's results file, read as the caller reads it.
_download, _adownload = _reader(lambda kw, data: results(kw.get("file"), data), BATCHES.files)


def patches() -> list[Patch]:
    """The batch hooks of the google-genai plugin."""
    return [
        Patch(MODULE, "Batches._create", _create),
        Patch(MODULE, "AsyncBatches._create", _acreate),
        Patch(MODULE, "Batches._create_embeddings", _create_embeddings),
        Patch(MODULE, "AsyncBatches._create_embeddings", _acreate_embeddings),
        Patch(MODULE, "Batches.get", _get),
        Patch(MODULE, "AsyncBatches.get", _aget),
        Patch(MODULE, "Batches._list", _list),
        Patch(MODULE, "AsyncBatches._list", _alist),
        Patch(FILES, "Files.download", _download),
        Patch(FILES, "AsyncFiles.download", _adownload),
    ]
