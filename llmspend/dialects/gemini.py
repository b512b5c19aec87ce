"""The Gemini REST dialect: ``/{v1,v1beta,v1alpha}/models/{model}:{method}``.

Requests: ``generateContent`` and ``streamGenerateContent`` (api ``generate_content``),
``embedContent`` and ``batchEmbedContents`` (``embed_content``) are billed;
``countTokens`` is free. The worst-case input is the byte length of ``contents``,
``systemInstruction`` and ``tools`` (a BPE token covers at least a byte), inline media by
:mod:`.media`'s rules, and the model's context window for content of unknown size (files by
URI, cached content, search tools: :func:`input_bound`); the output cap is
``generationConfig.maxOutputTokens``.

Responses are read through :func:`~llmspend.dialects.field`, so the REST JSON (camelCase),
``google-genai``'s pydantic objects and ``google-generativeai``'s proto-plus messages (both
snake_case) read alike. Usage normalization (input includes cached, output includes
reasoning)::

    input     = prompt_token_count + tool_use_prompt_token_count
    cached    = cached_content_token_count
    output    = candidates_token_count + thoughts
    reasoning = thoughts

``thoughts`` is ``thoughts_token_count`` when reported, else ``total − prompt − tool_use −
candidates`` when positive (the legacy SDK's proto drops ``thoughtsTokenCount``). Malformed
usage (negative counts, wrong types, no prompt count) reads as ``None``: the caller
estimates. Stream chunks carry cumulative usage: the last one is the best report.

The tier served (:func:`served_tier`, which chooses the price): the Gemini API's
``usageMetadata.serviceTier`` (``standard``, ``flex``, ``priority``; asked for with
``serviceTier`` in the request, google-genai's ``config.service_tier``), else Vertex AI's
``usageMetadata.trafficType`` (``ON_DEMAND_FLEX`` → ``flex``, ``ON_DEMAND_PRIORITY`` →
``priority``, ``ON_DEMAND_OFFPEAK`` → ``offpeak``, ``PROVISIONED_THROUGHPUT`` →
``provisioned_throughput``, ``ON_DEMAND`` → ``standard``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..call import InputBound, Usage, count_parts
from . import Reading, Request, Route, count, field, media, text_bytes

__all__ = [
    "MEDIA_TOKENS",
    "METHODS",
    "PROVIDER",
    "Reader",
    "Target",
    "input_bound",
    "input_upper",
    "max_output_tokens",
    "output_bytes",
    "parse_path",
    "parse_usage",
    "read",
    "reader",
    "route",
    "route_for",
    "served_tier",
    "terminal",
    "usage_of",
]

log = logging.getLogger("llmspend")

PROVIDER = "google"
#: Tokens Gemini bills per image tile (768×768); also used for media passed by reference.
MEDIA_TOKENS = 258
#: REST method → (``api`` recorded, billed).
METHODS: dict[str, tuple[str, bool]] = {
    "generateContent": ("generate_content", True),
    "streamGenerateContent": ("generate_content", True),
    "embedContent": ("embed_content", True),
    "batchEmbedContents": ("embed_content", True),
    "countTokens": ("count_tokens", False),
}
_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/(?:models|tunedModels)/([^/:]+):([A-Za-z]+)$")


class Target(NamedTuple):
    """What a Gemini path names: the model and the REST method."""

    model: str
    method: str


def parse_path(path: str) -> Target | None:
    """``/v1beta/models/gemini-2.5-flash:generateContent`` → (model, method), else ``None``."""
    m = _PATH.match(path)
    return Target(m.group(1), m.group(2)) if m else None


# -- requests --------------------------------------------------------------------------------


def max_output_tokens(*configs: Any) -> int | None:
    """The first positive ``max_output_tokens`` among the given generation configs."""
    for config in configs:
        value = count(field(config, "max_output_tokens"))
        if value:
            return value
    return None


#: Tools that bring in content the request does not hold (search results, fetched pages,
#: code output), in either spelling: the bound is then open-ended.
_OPEN_TOOLS = (
    "google_search", "googleSearch", "google_search_retrieval", "googleSearchRetrieval",
    "url_context", "urlContext", "code_execution", "codeExecution", "file_search",
    "fileSearch", "google_maps", "googleMaps", "retrieval",
)  # fmt: skip


def _part_rule(model: str) -> Any:
    def part(p: Any) -> int | None:
        inline = p.get("inline_data") or p.get("inlineData")
        if inline is not None:
            mime = field(inline, "mime_type")
            tokens = media.inline_tokens(mime, field(inline, "data"), model)
            fps = count(field(field(p, "video_metadata"), "fps")) or 0
            if fps > 1 and type(mime) is str and mime.startswith("video/"):
                tokens *= fps  # 263 tokens a second at the default 1 frame a second
            return tokens
        if p.get("file_data") is not None or p.get("fileData") is not None:
            return media.OPEN
        if any(p.get(name) is not None for name in _OPEN_TOOLS):
            return media.OPEN
        return None

    return part


def input_bound(model: str, *parts: Any) -> InputBound:
    """An offline bound on the input of a request made of plain ``parts`` (contents, system
    instruction, tools...): text one token per byte, inline images, audio and video by
    :mod:`.media`'s rules; files by URI, PDFs and search/URL/code tools open-ended. Never
    raises (what cannot be read is open-ended)."""
    try:
        return count_parts(list(parts), _part_rule(model))
    except Exception:
        return InputBound(0, (), True)


def input_upper(*parts: Any) -> int:
    """The tokens of :func:`input_bound` for any model (see there). Never raises."""
    return input_bound("", *parts).tokens


def route_for(method: str, model: str, body: Mapping[str, Any] | None) -> Route | None:
    """The route of REST ``method`` on ``model`` with this JSON ``body`` (snake_case or
    camelCase keys; values plain data, or SDK objects for the generation config), or
    ``None`` when the method is not one llmspend knows."""
    if method not in METHODS:
        return None
    api, billed = METHODS[method]
    if not isinstance(body, Mapping):
        body = {}
    if method == "batchEmbedContents":
        parts = [[field(r, "content") for r in field(body, "requests") or ()]]
    elif api == "embed_content":
        parts = [field(body, "content")]
    else:
        inner = field(body, "generate_content_request")
        if api == "count_tokens" and isinstance(inner, Mapping):
            body = inner
        parts = [field(body, "contents"), field(body, "system_instruction"), field(body, "tools")]
    config = field(body, "generation_config")
    if api == "generate_content":  # a schema and tool config are read by the model too
        parts += [field(body, "tool_config"), field(body, "response_schema")
                  or field(config, "response_schema"), field(body, "response_json_schema")
                  or field(config, "response_json_schema")]  # fmt: skip
    cap = max_output_tokens(config) if api == "generate_content" else None
    bound = input_bound(model, *parts)
    if field(body, "cached_content") or field(config, "cached_content"):
        bound = bound._replace(open_ended=True)  # a cache's content, by name
    return Route(
        PROVIDER,
        api,
        model,
        billed=billed,
        streamed=method == "streamGenerateContent",
        input_upper=bound.tokens,
        payload=bound if bound.open_ended else None,
        output_cap=cap,
    )


def route(request: Request) -> Route | None:
    """What a Gemini REST request is, or ``None`` when it is not a generate/embed/count call."""
    target = parse_path(request.path)
    if target is None or request.method.lower() != "post":
        return None
    return route_for(target.method, target.model, request.body)


# -- responses -------------------------------------------------------------------------------


_COUNTS = (
    "prompt_token_count", "candidates_token_count", "thoughts_token_count",
    "cached_content_token_count", "tool_use_prompt_token_count", "total_token_count",
)  # fmt: skip


def parse_usage(md: Any) -> Usage | None:
    """Normalize a Gemini ``usage_metadata`` (object or dict); None if absent or malformed."""
    if md is None:
        return None
    counts: list[int | None] = []
    for name in _COUNTS:
        value = field(md, name)
        n = count(value)
        if n is None and value is not None:
            log.debug("llmspend: malformed Gemini usage (%s); estimating", name)
            return None
        counts.append(n)
    prompt, candidates, thoughts, cached, tool_use, total = counts
    if not prompt:  # no prompt count (or an empty proto default): not a usable report
        return None
    candidates, cached, tool_use = candidates or 0, cached or 0, tool_use or 0
    if thoughts is None:
        rest = (total or 0) - prompt - tool_use - candidates
        thoughts = rest if rest > 0 else 0
    prompt_parts = _modalities(md, "prompt_tokens_details", "tool_use_prompt_tokens_details")
    cached_parts = _modalities(md, "cache_tokens_details")
    out_parts = _modalities(md, "candidates_tokens_details")
    return Usage(
        input_tokens=prompt + tool_use,
        cached_input_tokens=cached,
        output_tokens=candidates + thoughts,
        reasoning_tokens=thoughts,
        input_audio_tokens=prompt_parts.get("AUDIO", 0),
        cache_audio_read_tokens=cached_parts.get("AUDIO", 0),
        output_audio_tokens=out_parts.get("AUDIO", 0),
        input_image_tokens=prompt_parts.get("IMAGE", 0),
        cache_image_read_tokens=cached_parts.get("IMAGE", 0),
        output_image_tokens=out_parts.get("IMAGE", 0),
    ).clamp()  # a broken report never yields subsets above totals or absurd counts


def _modalities(md: Any, *names: str) -> dict[str, int]:
    """Token counts by modality (``AUDIO``, ``IMAGE``...) of ``usage_metadata`` lists such
    as ``prompt_tokens_details``: audio and image tokens are billed at their own rates."""
    found: dict[str, int] = {}
    for name in names:
        items = field(md, name)
        if items is None or isinstance(items, (str, bytes, Mapping)):
            continue
        try:
            for item in items:
                mod = field(item, "modality")
                key = mod if type(mod) is str else getattr(mod, "name", None)
                n = count(field(item, "token_count"))
                if type(key) is str and n:
                    found[key.upper()] = found.get(key.upper(), 0) + n
        except Exception:  # malformed details: priced at the text rates
            continue
    return found


def _raw_body_usage(response: Any) -> Any:
    """``usageMetadata`` from a raw HTTP body (google-genai ``should_return_http_response``)."""
    body = field(field(response, "sdk_http_response"), "body")
    if not isinstance(body, (str, bytes)) or not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return field(data, "usage_metadata") if isinstance(data, Mapping) else None


_TRAFFIC = {
    "ON_DEMAND": "standard", "ON_DEMAND_FLEX": "flex", "ON_DEMAND_PRIORITY": "priority",
    "ON_DEMAND_OFFPEAK": "offpeak", "PROVISIONED_THROUGHPUT": "provisioned_throughput",
}  # fmt: skip


def _name(value: Any) -> str | None:
    value = getattr(value, "value", value)  # the SDK's enums
    return value if isinstance(value, str) and value else None


def served_tier(md: Any) -> str | None:
    """The tier a ``usage_metadata`` says the call was served at (see the module
    docstring), lower case; ``None`` when it does not say."""
    if md is None:
        return None
    tier = _name(field(md, "service_tier"))
    if tier is not None and tier.lower() != "unspecified":
        return tier.lower()
    traffic = _name(field(md, "traffic_type"))
    return _TRAFFIC.get(traffic.upper()) if traffic is not None else None


def usage_of(response: Any) -> Usage | None:
    """The normalized usage a generate/embed response reports, or None."""
    usage = parse_usage(field(response, "usage_metadata"))
    if usage is None:
        usage = parse_usage(_raw_body_usage(response))
    return usage


def _jsonish(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except Exception:
        return str(value)


def output_bytes(response: Any) -> int:
    """UTF-8 bytes of the visible output (text, function calls) of one response or chunk."""
    total = 0
    for cand in field(response, "candidates") or ():
        for part in field(field(cand, "content"), "parts") or ():
            total += text_bytes(field(part, "text"))
            call = field(part, "function_call")
            if call:
                total += len(str(field(call, "name") or "")) + len(_jsonish(field(call, "args")))
    return total


def terminal(response: Any) -> bool:
    """Whether a (streamed) response says the generation is over."""
    if field(field(response, "prompt_feedback"), "block_reason"):
        return True
    return any(field(c, "finish_reason") for c in field(response, "candidates") or ())


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _statistics_usage(response: Any) -> Usage | None:
    """Embedding usage from per-embedding ``statistics.token_count`` (Vertex AI)."""
    counts = [
        field(field(e, "statistics"), "token_count") for e in field(response, "embeddings") or ()
    ]
    if counts and all(isinstance(c, (int, float)) and c >= 0 for c in counts):
        return Usage(int(sum(counts)))
    return None


def read(api: str, body: Any) -> Reading:
    """What a complete generate/embed response said (``out_bytes`` only when no usage)."""
    if api == "embed_content" and field(body, "usage_metadata") is None:
        stats = _statistics_usage(body)
        if stats is not None:
            return Reading(stats)
    usage = usage_of(body)
    return Reading(
        usage,
        _str(field(body, "model_version")),
        _str(field(body, "response_id")),
        served_tier(field(body, "usage_metadata")),
        out_bytes=output_bytes(body) if usage is None else 0,
    )


class Reader:
    """Reads one stream's chunks: the last usage, the model, the response id, the text
    received and whether the terminal chunk (finish reason or blocked prompt) arrived."""

    __slots__ = ("chunks", "complete", "model", "out_bytes", "response_id", "tier", "usage")

    def __init__(self, api: str = "generate_content") -> None:
        self.chunks = 0
        self.out_bytes = 0
        self.usage: Usage | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.tier: str | None = None
        self.complete = False

    def feed(self, chunk: Any) -> bool:
        """Account for one chunk (never a usage-only one in this dialect: ``False``)."""
        self.chunks += 1
        self.out_bytes += output_bytes(chunk)
        md = field(chunk, "usage_metadata")
        usage = parse_usage(md)
        if usage is not None:
            self.usage = usage
            self.tier = served_tier(md) or self.tier
        self.model = _str(field(chunk, "model_version")) or self.model
        self.response_id = _str(field(chunk, "response_id")) or self.response_id
        if terminal(chunk):
            self.complete = True
        return False

    def result(self) -> Reading:
        """The reading so far."""
        return Reading(
            self.usage,
            self.model,
            self.response_id,
            self.tier,
            complete=self.complete,
            out_bytes=self.out_bytes,
        )


def reader(api: str = "generate_content") -> Reader:
    """A :class:`Reader` for a ``streamGenerateContent`` stream."""
    return Reader(api)
