"""The Anthropic Messages dialect: ``POST /v1/messages`` and its relatives.

Requests: ``/v1/messages`` (api ``messages``) and the legacy ``/v1/complete`` (api
``completions``) are billed; ``/v1/messages/count_tokens`` (``count_tokens``) is free. A
path may carry a prefix (a base URL with a path: ``/anthropic/v1/messages``) and a query
(``?beta=true``). ``/v1/messages/batches`` is not routed here: a batch is reserved at
creation and settled when its results are read, at batch prices, by the SDK tap
(:mod:`llmspend.providers.anthropic_batches`). The worst-case input is
the text of ``system``, ``messages`` and ``tools`` (``prompt`` for completions), images and
documents by :func:`input_upper`; the output cap ``max_tokens`` (``max_tokens_to_sample``),
which the API requires.

Usage normalization (llmspend convention: input includes cached and cache-write tokens,
output includes reasoning). Anthropic's ``input_tokens`` EXCLUDES cache reads and writes::

    input       = input_tokens + cache_read_input_tokens + cache_creation_input_tokens
    cached      = cache_read_input_tokens
    cache_write = cache_creation.ephemeral_5m_input_tokens + ephemeral_1h_input_tokens
                  when that breakdown is given, else cache_creation_input_tokens
    output      = output_tokens          (extended thinking is already inside it)
    reasoning   = output_tokens_details.thinking_tokens when reported, else 0

A usage that is missing, null, negative, boolean or of the wrong type reads as ``None``:
the caller estimates. ``service_tier`` is read from the usage. Streams (SSE) are read event
by event with :class:`Reader`: ``message_start`` carries the message head and input usage,
``message_delta`` the cumulative ``output_tokens`` (newer APIs repeat the input and cache
counts there: the latest non-null value wins), ``message_stop`` ends the stream and an
``error`` event ends it with an error. Nothing here raises on malformed data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..call import InputBound, Payload, Usage, count_parts
from . import Reading, Request, Route, count, field, media, text_bytes

__all__ = [
    "INPUT_FIELDS",
    "PROVIDER",
    "ROUTES",
    "Reader",
    "api_of",
    "input_upper",
    "max_output",
    "normalize_usage",
    "output_bytes",
    "read",
    "reader",
    "route",
    "sse_events",
]

PROVIDER = "anthropic"
#: Request path (after any prefix) → (``api`` recorded, billed). Batches are not here (see
#: the module docstring).
ROUTES: dict[str, tuple[str, bool]] = {
    "/v1/messages": ("messages", True),
    "/v1/messages/count_tokens": ("count_tokens", False),
    "/v1/complete": ("completions", True),
}
#: Request fields whose text is billed as input, per api (used for the worst case).
INPUT_FIELDS: dict[str, tuple[str, ...]] = {
    "messages": ("system", "messages", "tools"),
    "count_tokens": ("system", "messages", "tools"),
    "completions": ("prompt",),
}
_COUNTS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
           "cache_creation_input_tokens")  # fmt: skip
_CACHE_WRITES = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


# -- requests --------------------------------------------------------------------------------


def api_of(path: str) -> tuple[str, bool] | None:
    """``(api, billed)`` of a request path or full URL, ``None`` when it is not routed.

    The query is ignored; the path may have a prefix before ``/v1/...``.
    """
    hit = ROUTES.get(path)
    if hit is not None:
        return hit
    if "://" in path or "?" in path:
        path = urlsplit(path).path
    path = path.rstrip("/")
    hit = ROUTES.get(path)
    if hit is None:
        hit = next((v for k, v in ROUTES.items() if path.endswith(k)), None)
    return hit


def max_output(api: str, body: Mapping[str, Any]) -> int | None:
    """The output cap a request sets (``max_tokens``; ``max_tokens_to_sample`` for the
    legacy completions), or ``None``."""
    key = "max_tokens_to_sample" if api == "completions" else "max_tokens"
    value = count(body.get(key))
    return value or None


def route(request: Request, *, provider: str | None = None) -> Route | None:
    """What a request is, or ``None`` when it is not a routed POST.

    ``provider`` overrides the label (a Bedrock or Vertex client of the anthropic SDK).
    """
    hit = api_of(request.path)
    if hit is None or request.method.lower() != "post":
        return None
    api, billed = hit
    body = request.body
    if type(body) is not dict and not isinstance(body, Mapping):
        body = {}
    model = body.get("model")
    return Route(
        provider or PROVIDER,
        api,
        model if isinstance(model, str) else "",
        billed=billed,
        streamed=body.get("stream") is True,
        payload=Payload([body[k] for k in INPUT_FIELDS[api] if k in body], input_upper, body),
        output_cap=max_output(api, body) if billed else None,
    )


#: Server-side tools (type prefixes) whose results the request does not hold.
_SERVER_TOOLS = ("web_search_", "web_fetch_", "code_execution_")


def _part(p: Mapping[str, Any]) -> int | None:
    kind = p.get("type")
    if type(kind) is not str:
        return None
    if kind == "image":
        source = p.get("source")
        size = None
        if isinstance(source, Mapping) and source.get("type") == "base64":
            size = media.image_size(media.decode_b64(source.get("data")))
        return media.anthropic_image_tokens(size)
    if kind == "document":
        source = p.get("source")
        if not isinstance(source, Mapping) or source.get("type") in ("text", "content"):
            return None  # text: counted as such
        if source.get("type") == "base64":
            return media.inline_tokens(source.get("media_type"), source.get("data"), "")
        return media.OPEN  # a PDF, a URL, a file by id
    if kind == "container_upload" or kind.startswith(_SERVER_TOOLS):
        return media.OPEN
    return None


def input_upper(payload: Payload) -> InputBound:
    """The offline bound of a request's input (its :class:`~llmspend.call.Payload`): text
    one token per byte, images by Anthropic's rule (:mod:`.media`), documents by their
    text or open-ended (PDFs, URLs, files), server-side tools and MCP servers open-ended."""
    bound = count_parts(list(payload), _part)
    body = payload.body if isinstance(payload.body, Mapping) else {}
    return InputBound(bound.tokens, (), bound.open_ended or bool(body.get("mcp_servers")))


# -- responses -------------------------------------------------------------------------------


def _count_or_zero(obj: Any, name: str) -> int | None:
    """A count that may be absent (0); ``None`` when present but malformed."""
    value = field(obj, name)
    return 0 if value is None else count(value)


def normalize_usage(usage: Any) -> Usage | None:
    """llmspend :class:`Usage` from an Anthropic ``usage`` (object or dict), or ``None``."""
    if usage is None:
        return None
    inp, out = count(field(usage, "input_tokens")), count(field(usage, "output_tokens"))
    read = _count_or_zero(usage, "cache_read_input_tokens")
    write = _count_or_zero(usage, "cache_creation_input_tokens")
    if inp is None or out is None or read is None or write is None:
        return None
    write_1h = 0
    breakdown = field(usage, "cache_creation")
    if breakdown is not None:
        parts = [field(breakdown, name) for name in _CACHE_WRITES]
        if any(p is not None for p in parts):
            counted = [0 if p is None else count(p) for p in parts]
            if None in counted:
                return None
            write = sum(c for c in counted if c is not None)
            write_1h = counted[1] or 0  # billed at 2x input, the 5-minute ones at 1.25x
    thinking = count(field(field(usage, "output_tokens_details"), "thinking_tokens")) or 0
    return Usage(inp + read + write, read, write, out, thinking, write_1h).clamp()


def _str(value: Any) -> str | None:
    return value if type(value) is str and value else None


def _jsonish(value: Any) -> int:
    if value is None:
        return 0
    try:
        return text_bytes(json.dumps(value, default=str))
    except Exception:
        return 0


def output_bytes(body: Any) -> int:
    """UTF-8 bytes of the generated content of a message (text, thinking, tool inputs), or
    of a legacy completion."""
    n = text_bytes(field(body, "completion"))
    for block in field(body, "content") or ():
        n += text_bytes(field(block, "text")) + text_bytes(field(block, "thinking"))
        if field(block, "type") in ("tool_use", "server_tool_use"):
            n += _jsonish(field(block, "input"))
    return n


def _error_message(obj: Any) -> str:
    message = field(field(obj, "error"), "message")
    return message if type(message) is str else "error"


def read(api: str, body: Any) -> Reading:
    """What a complete response said: a JSON dict or an SDK model (``Message``...).

    ``out_bytes`` (the text generated, for an estimate) is counted only when usage is
    absent; an error body (``{"type": "error", ...}``) sets ``error``.
    """
    if api == "count_tokens":
        return Reading(None)
    raw = field(body, "usage")
    usage = normalize_usage(raw)
    error = _error_message(body) if field(body, "type") == "error" else None
    out = 0
    if usage is None:
        try:
            out = output_bytes(body)
        except Exception:  # malformed result: count nothing
            out = 0
    return Reading(
        usage,
        _str(field(body, "model")),
        _str(field(body, "id")),
        _str(field(raw, "service_tier")),
        error=error,
        out_bytes=out,
    )


class Reader:
    """Reads one Messages stream's events (dicts or the SDK's event models).

    The usage fields are merged as they arrive (the latest non-null value of each wins) and
    normalized by :meth:`result`.
    """

    __slots__ = ("api", "complete", "error", "model", "out_bytes", "response_id", "usage")

    def __init__(self, api: str = "messages") -> None:
        self.api = api
        self.usage: dict[str, Any] = {}
        self.model: str | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.complete = False
        self.out_bytes = 0

    def _merge(self, usage: Any) -> None:
        if usage is None:
            return
        for name in (*_COUNTS, "cache_creation", "output_tokens_details", "service_tier"):
            value = field(usage, name)
            if value is not None:
                self.usage[name] = value

    def feed(self, event: Any) -> bool:
        """Account for one event (never a usage-only one to hide: ``False``)."""
        kind = field(event, "type")
        if kind == "content_block_delta":
            delta = field(event, "delta")
            self.out_bytes += text_bytes(field(delta, "text")) + text_bytes(
                field(delta, "partial_json")
            )
            self.out_bytes += text_bytes(field(delta, "thinking"))
        elif kind == "message_delta":
            self._merge(field(event, "usage"))
        elif kind == "message_start":
            message = field(event, "message")
            self.response_id = _str(field(message, "id")) or self.response_id
            self.model = _str(field(message, "model")) or self.model
            self._merge(field(message, "usage"))
        elif kind == "content_block_start":
            block = field(event, "content_block")
            self.out_bytes += text_bytes(field(block, "text")) + text_bytes(
                field(block, "thinking")
            )
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            self.error = _error_message(event)
        elif kind == "completion":  # the legacy completions stream
            self.out_bytes += text_bytes(field(event, "completion"))
            self.model = _str(field(event, "model")) or self.model
            self.response_id = _str(field(event, "id")) or self.response_id
            if field(event, "stop_reason"):
                self.complete = True
        return False

    def result(self) -> Reading:
        """The reading so far; ``usage`` is ``None`` until a usable one arrived."""
        usage = self.usage
        return Reading(
            normalize_usage(usage) if usage else None,
            self.model,
            self.response_id,
            _str(usage.get("service_tier")),
            error=self.error,
            complete=self.complete,
            out_bytes=self.out_bytes,
        )


def reader(api: str = "messages") -> Reader:
    """A :class:`Reader` for a stream of ``api``."""
    return Reader(api)


def sse_events(data: bytes) -> list[Any]:
    """The JSON ``data:`` payloads of an SSE body (Anthropic's events carry their ``type``
    in the payload too; ``ping`` events included)."""
    items: list[Any] = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [ln[5:].lstrip() for ln in block.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            continue
        try:
            items.append(json.loads(b"\n".join(lines)))
        except ValueError:
            continue
    return items
