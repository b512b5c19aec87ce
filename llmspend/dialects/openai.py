"""The OpenAI-compatible HTTP dialect (OpenAI, Azure OpenAI, xAI, OpenRouter, any host).

Requests: only POSTs to the paths of :data:`ROUTES` are billed calls; the body says the
model, the worst-case input (the text of :data:`INPUT_FIELDS`, media and references by
:func:`input_upper`) and the output cap
(``max_completion_tokens``/``max_tokens`` × ``n``, or ``max_output_tokens``).

Usage (llmspend convention: input includes cached and cache-write tokens, output includes
reasoning)::

    chat, completions, embeddings:  input = prompt_tokens       output = completion_tokens
    responses, images, audio:       input = input_tokens        output = output_tokens
    cached = *_details.cached_tokens   cache_write = *_details.cache_write_tokens
    reasoning = *_details.reasoning_tokens, plus total − input − output when positive (xAI)

A usage that is missing, null, negative, of the wrong type or duration-only reads as
``None``: the caller estimates (``ceil(utf8_bytes / 4)`` of the request text and of the
text received). Streams are read event by event with :class:`Reader` (chat chunks,
Responses events, other SSE events). Nothing here raises on malformed data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..call import InputBound, Payload, Usage, count_parts, estimate_input_tokens
from . import Reading, Request, Route, count, field, media, text_bytes, tokens_from_bytes

__all__ = [
    "ID_ROUTES",
    "INPUT_FIELDS",
    "PENDING",
    "ROUTES",
    "TERMINAL",
    "Reader",
    "api_of",
    "input_estimate",
    "input_upper",
    "max_output",
    "normalize_path",
    "normalize_usage",
    "provider_for_host",
    "read",
    "reader",
    "requested_tier",
    "result_text_bytes",
    "route",
    "sse_events",
]

#: Request path → the ``api`` recorded. Only POSTs to these paths are billed calls.
ROUTES: dict[str, str] = {
    "/chat/completions": "chat.completions",
    "/completions": "completions",
    "/responses": "responses",
    "/responses/compact": "responses.compact",
    "/embeddings": "embeddings",
    "/images/generations": "images.generations",
    "/images/edits": "images.edits",
    "/images/variations": "images.variations",
    "/audio/transcriptions": "audio.transcriptions",
    "/audio/translations": "audio.translations",
    "/audio/speech": "audio.speech",
    "/moderations": "moderations",
    "/batches": "batches",
    "/fine_tuning/jobs": "fine_tuning.jobs",
    "/videos": "videos",
    "/threads/runs": "beta.threads.create_and_run",
}
#: Billed routes with an id in the path: (the path's parts around the id) → ``api``.
ID_ROUTES: dict[tuple[str, str], str] = {
    ("/threads/", "/runs"): "beta.threads.runs",
    ("/videos/", "/remix"): "videos.remix",
}
# Longest first, so that a suffix match picks ``/chat/completions`` over ``/completions``.
_BY_LENGTH = sorted(ROUTES.items(), key=lambda kv: -len(kv[0]))
#: Request fields whose text is billed as input (used for estimates).
INPUT_FIELDS = (
    "messages", "input", "instructions", "prompt", "tools", "functions", "response_format",
    "text", "system",
)  # fmt: skip
#: Responses API statuses after which the usage is final, and those before.
TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
PENDING = frozenset({"queued", "in_progress"})
#: APIs whose output cap is ``max_completion_tokens``/``max_tokens`` and whose streams are
#: chat-style chunks.
CHAT_APIS = frozenset({"chat.completions", "completions"})
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_HEAD_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})


# -- requests --------------------------------------------------------------------------------


def provider_for_host(host: str) -> str:
    """The llmspend provider name for an API host."""
    host = host.lower().rstrip(".")
    if host == "api.openai.com" or host.endswith(".api.openai.com"):
        return "openai"
    if host == "x.ai" or host.endswith(".x.ai"):
        return "xai"
    if host.endswith("openrouter.ai"):
        return "openrouter"
    if host.endswith(_AZURE_HOSTS):
        return "azure"
    return "openai-compatible"


def normalize_path(path: str) -> str:
    """A request path as the routes name it: the path of a full URL, without its query or
    fragment or trailing slash, with a leading ``/`` (``chat/completions?x=1`` →
    ``/chat/completions``). Prefixes (``/v1``, Azure's ``/openai/deployments/{d}``) stay."""
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    return path if path.startswith("/") else "/" + path


def api_of(path: str) -> str | None:
    """The ``api`` of a request path (relative like ``/chat/completions`` or
    ``chat/completions?x=1``, with a prefix such as ``/v1`` or Azure's
    ``/openai/deployments/{d}``, or a full URL); ``None`` when it is not a billed route."""
    api = ROUTES.get(path)
    if api is not None:
        return api
    path = normalize_path(path)
    api = ROUTES.get(path)
    if api is None:
        api = next((v for k, v in _BY_LENGTH if path.endswith(k)), None)
    if api is None:
        for (head, tail), name in ID_ROUTES.items():
            if path.endswith(tail) and head in path:
                ident = path[: -len(tail)].rsplit(head, 1)[-1]
                if ident and "/" not in ident:
                    return name
    return api


def max_output(api: str, body: Mapping[str, Any]) -> int | None:
    """The output cap a request sets (× ``n`` choices), or ``None``."""
    if api.startswith("responses"):
        value = body.get("max_output_tokens")
    elif api in CHAT_APIS:
        value = body.get("max_completion_tokens") or body.get("max_tokens")
    else:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return None
    n = body.get("n")
    return value * n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else value


def requested_tier(api: str, body: Any) -> str | None:
    """The service tier a request asks for: its ``service_tier``, else ``auto`` (the API's
    default: the project's tier, which may be priority — reserved as such) where a request
    may name a tier (chat completions, responses); ``None`` elsewhere."""
    tier = body.get("service_tier") if isinstance(body, Mapping) else None
    if isinstance(tier, str):
        return tier
    return "auto" if api in ("chat.completions", "responses") else None


def route(request: Request, *, provider: str | None = None) -> Route | None:
    """What a request is, or ``None`` when it is not a billed call (not a POST to a route).

    ``provider`` overrides detection by host (an Azure client class on any host).
    """
    api = api_of(request.path)
    if api is None or request.method.lower() != "post":
        return None
    body = request.body
    if type(body) is not dict and not isinstance(body, Mapping):  # (a dict: skip the ABC)
        body = {}
    model = body.get("model")
    return Route(
        provider or provider_for_host(request.host),
        api,
        model if isinstance(model, str) else "",
        streamed=body.get("stream") is True,
        payload=Payload([body[k] for k in INPUT_FIELDS if k in body], input_upper, body),
        output_cap=max_output(api, body),
    )


#: Part and tool types whose content the request does not hold (stored items, server-side
#: tools that fetch or run things): bounded by the model's context window.
_OPEN_TYPES = frozenset({
    "item_reference", "web_search", "web_search_preview", "web_search_2025_08_26",
    "web_search_preview_2025_03_11", "file_search", "mcp", "code_interpreter",
    "computer_use_preview", "image_generation", "local_shell",
})  # fmt: skip


def _image_tokens(url: Any, model: str, detail: Any) -> int:
    """An image part: its size read from a data URL's bytes, else the worst size."""
    size = None
    inline = media.split_data_url(url)
    if inline is not None:
        size = media.image_size(media.decode_b64(inline[1]))
    return media.openai_image_tokens(model, size, detail)


def _file_tokens(data: Any) -> int:
    """A file part: text counts its bytes; a PDF, other files and files by id are open."""
    inline = media.split_data_url(data)
    if inline is None:
        return media.OPEN
    mime, payload = inline
    if mime.startswith("image/"):
        return media.inline_tokens(mime, payload, "", media.openai_image_tokens)
    return media.inline_tokens(mime, payload, "")


def _part_rule(model: str) -> Any:
    def part(p: Mapping[str, Any]) -> int | None:
        kind = p.get("type")
        if type(kind) is not str:
            return None
        if kind == "image_url":
            image = p.get("image_url")
            if isinstance(image, Mapping):
                return _image_tokens(image.get("url"), model, image.get("detail"))
            return _image_tokens(image, model, p.get("detail"))
        if kind == "input_image":
            return _image_tokens(p.get("image_url"), model, p.get("detail"))
        if kind == "input_audio":
            audio = p.get("input_audio")
            data = (audio if isinstance(audio, Mapping) else p).get("data")
            if type(data) is not str:
                return None
            return media.audio_tokens(media.decode_b64(data[:64]), media.b64_size(data))
        if kind == "file" or kind == "input_file":
            f = p.get("file") if kind == "file" else p
            return _file_tokens(f.get("file_data") if isinstance(f, Mapping) else None)
        if kind in _OPEN_TYPES:
            return media.OPEN
        return None

    return part


def input_upper(payload: Payload) -> InputBound:
    """The offline bound of a request's input (its :class:`~llmspend.call.Payload`): text
    one token per byte, images/audio/files by :mod:`.media`'s rules for the request's
    model, and what it refers to: ``previous_response_id`` (``prior_ids``), a
    ``conversation``, a stored ``prompt``, stored items or server-side tools (open-ended)."""
    body = payload.body if isinstance(payload.body, Mapping) else {}
    model = body.get("model")
    bound = count_parts(list(payload), _part_rule(model if type(model) is str else ""))
    prior = body.get("previous_response_id")
    prior_ids = (prior,) if type(prior) is str and prior else ()
    open_ended = bound.open_ended or body.get("conversation") is not None
    if body.get("web_search_options") is not None:  # chat search models: fetched pages
        open_ended = True
    if isinstance(body.get("prompt"), Mapping):  # a stored prompt template, by id
        open_ended = True
    return InputBound(bound.tokens, prior_ids, open_ended)


def _token_ids(value: Any) -> int:
    """How many token ids an embeddings ``input`` given as ids holds (0 for text)."""
    if not isinstance(value, list) or not value:
        return 0
    if isinstance(value[0], int):
        return len(value)
    return sum(len(v) for v in value if isinstance(v, list))


def input_estimate(body: Mapping[str, Any]) -> int:
    """Estimated input tokens of a request: ``ceil(utf8_bytes / 4)`` of its text (token
    id inputs count one each). Never raises."""
    try:
        ids = _token_ids(body.get("input"))
        skip = "input" if ids else ""  # token ids: counted one each, not by their digits
        payload = [body[k] for k in INPUT_FIELDS if k in body and k != skip]
        return tokens_from_bytes(estimate_input_tokens(payload)) + ids
    except Exception:
        return 0


# -- responses -------------------------------------------------------------------------------


def normalize_usage(usage: Any, api: str = "") -> Usage | None:
    """llmspend :class:`Usage` from a chat/completions/embeddings or Responses-style usage.

    Input includes cached and cache-write tokens, output includes reasoning tokens; tokens
    a provider reports beyond ``prompt + completion`` in ``total_tokens`` (xAI reasoning)
    are added to output and counted as reasoning. Returns ``None`` when the usage is
    absent or malformed (then the caller estimates) — including duration-only usage.
    """
    if usage is None or field(usage, "type") == "duration":
        return None
    prompt = count(field(usage, "prompt_tokens"))
    if prompt is not None:  # chat completions, completions, embeddings
        out = count(field(usage, "completion_tokens"))
        if out is None:
            if api != "embeddings" or field(usage, "completion_tokens") is not None:
                return None
            out = 0
        in_details = field(usage, "prompt_tokens_details")
        out_details = field(usage, "completion_tokens_details")
        inp = prompt
    else:  # Responses, images, transcriptions
        inp_or_none = count(field(usage, "input_tokens"))
        out_or_none = count(field(usage, "output_tokens"))
        if inp_or_none is None or out_or_none is None:
            return None
        inp, out = inp_or_none, out_or_none
        in_details = field(usage, "input_tokens_details") or field(usage, "input_token_details")
        out_details = field(usage, "output_tokens_details")
    cached = count(field(in_details, "cached_tokens")) or 0
    cache_write = count(field(in_details, "cache_write_tokens")) or 0
    reasoning = count(field(out_details, "reasoning_tokens")) or 0
    total = count(field(usage, "total_tokens"))
    if total is not None and total - inp - out > 0:  # reasoning reported outside output
        extra = total - inp - out
        out += extra
        reasoning = max(reasoning, extra)
    # audio and image tokens, billed at their own rates (gpt-4o-transcribe, gpt-audio,
    # gpt-image-1...): parts of input, cached input and output
    cached_details = field(in_details, "cached_tokens_details")
    return Usage(
        inp, cached, cache_write, out, reasoning, 0,
        count(field(in_details, "audio_tokens")) or 0,
        count(field(cached_details, "audio_tokens")) or 0,
        count(field(out_details, "audio_tokens")) or 0,
        count(field(in_details, "image_tokens")) or 0,
        count(field(cached_details, "image_tokens")) or 0,
        count(field(out_details, "image_tokens")) or 0,
    ).clamp()  # fmt: skip


def result_text_bytes(api: str, obj: Any) -> int:
    """Bytes of generated text in a complete result (for estimates when usage is absent)."""
    if type(obj) is str:
        return text_bytes(obj)
    n = 0
    if api in CHAT_APIS:
        for choice in field(obj, "choices") or ():
            msg = field(choice, "message")
            n += text_bytes(field(choice, "text")) + text_bytes(field(msg, "content"))
            n += text_bytes(field(msg, "refusal"))
            for tc in field(msg, "tool_calls") or ():
                n += text_bytes(field(field(tc, "function"), "arguments"))
    elif api.startswith("responses"):
        for item in field(obj, "output") or ():
            n += text_bytes(field(item, "arguments"))
            for part in field(item, "content") or ():
                n += text_bytes(field(part, "text"))
    elif api.startswith("audio."):
        n += text_bytes(field(obj, "text"))
    return n


def _str(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _error_message(response: Any) -> str:
    message = field(field(response, "error"), "message")
    return message if type(message) is str else "response failed"


def read(api: str, body: Any) -> Reading:
    """What a complete result said: a JSON dict, an SDK model, or a plain-text transcript.

    ``out_bytes`` (the text generated, for an estimate) is counted only when the usage is
    absent. ``status``/``error`` are the Responses API's.
    """
    if type(body) is str:
        return Reading(None, out_bytes=text_bytes(body))
    usage = normalize_usage(field(body, "usage"), api)
    status = error = None
    if api.startswith("responses"):
        status = field(body, "status")
        status = status if type(status) is str else None
        if status == "failed":
            error = _error_message(body)
    out = 0
    if usage is None:
        try:
            out = result_text_bytes(api, body)
        except Exception:  # malformed result: count nothing
            out = 0
    model, rid, tier = field(body, "model"), field(body, "id"), field(body, "service_tier")
    return Reading(
        usage,
        model if type(model) is str and model else None,
        rid if type(rid) is str and rid else None,
        tier if type(tier) is str and tier else None,
        status,
        error,
        status not in PENDING,
        out,
    )


class Reader:
    """Reads one stream's events (chat chunks, Responses events or other SSE events).

    ``n`` is the number of choices a chat request asked for: the stream is complete once
    each has finished. The raw usage is kept until :meth:`result` normalizes it.
    """

    __slots__ = (
        "api", "complete", "error", "finished", "kind", "model", "n", "out_bytes",
        "response_id", "service_tier", "status", "usage",
    )  # fmt: skip

    def __init__(self, api: str, n: Any = None) -> None:
        self.api = api
        self.kind = "chat" if api in CHAT_APIS else api.split(".")[0]
        self.n = n if type(n) is int else 1
        self.usage: Any = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.service_tier: str | None = None
        self.status: str | None = None
        self.error: str | None = None
        self.complete = False
        self.finished: set[Any] = set()
        self.out_bytes = 0

    def feed(self, event: Any) -> bool:
        """Account for one event; ``True`` for a chat chunk with usage and no choices."""
        if self.kind == "chat":
            return self._chat(event)
        if self.kind == "responses":
            self._response_event(event)
        else:
            self._event(event)
        return False

    def _chat(self, chunk: Any) -> bool:
        usage = field(chunk, "usage")
        choices = field(chunk, "choices")
        if usage is not None:
            self.usage = usage
        if self.model is None:
            self.model = _str(field(chunk, "model"))
            self.service_tier = _str(field(chunk, "service_tier"))
            self.response_id = _str(field(chunk, "id"))
        if not choices:
            return usage is not None
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
        if self.finished and len(self.finished) >= self.n:
            self.complete = True
        return False

    def _response_event(self, event: Any) -> None:
        kind = field(event, "type")
        if kind in _FINAL_EVENTS:
            response = field(event, "response")
            self.usage = field(response, "usage")
            self._head(response)
            self.complete = True
            if kind == "response.failed":
                self.error = _error_message(response)
        elif kind in _HEAD_EVENTS:
            self._head(field(event, "response"))
        elif kind == "error":
            message = field(event, "message")
            self.error = message if type(message) is str else "error event"
        else:
            self.out_bytes += text_bytes(field(event, "delta"))

    def _head(self, response: Any) -> None:
        self.response_id = _str(field(response, "id")) or self.response_id
        self.model = _str(field(response, "model")) or self.model
        self.service_tier = _str(field(response, "service_tier")) or self.service_tier
        self.status = _str(field(response, "status")) or self.status

    def _event(self, event: Any) -> None:
        usage = field(event, "usage")
        if usage is not None:
            self.usage = usage
            self.complete = True
        if self.api != "audio.speech":  # speech deltas are audio, not text
            self.out_bytes += text_bytes(field(event, "delta"))

    def result(self) -> Reading:
        """The reading so far; ``usage`` is ``None`` until a usable one arrived."""
        return Reading(
            normalize_usage(self.usage, self.api),
            self.model,
            self.response_id,
            self.service_tier,
            self.status,
            self.error,
            self.complete,
            self.out_bytes,
        )


def reader(api: str, n: Any = None) -> Reader:
    """A :class:`Reader` for a stream of ``api`` (``n``: the choices asked for)."""
    return Reader(api, n)


def sse_events(data: bytes) -> tuple[list[Any], bool]:
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
