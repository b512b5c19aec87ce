"""A local, deterministic, simulated LLM provider for tests and demos.

Point the real SDK clients at it::

    from llmspend.sim import SimServer

    with SimServer() as sim:
        openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
        openai.AzureOpenAI(azure_endpoint=sim.url, api_version="2024-10-21", api_key="x")
        openai.OpenAI(api_key="x", base_url=sim.openrouter_base_url)      # OpenRouter usage
        google.genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url))
        google.generativeai.configure(api_key="k", transport="rest",
                                      client_options={"api_endpoint": sim.url})

Standard library only (``http.server``, HTTP/1.1 keep-alive, chunked SSE); binds loopback
only. ``python -m llmspend.sim --port 8765`` or ``llmspend sim serve`` run it in the
foreground (:func:`serve`; Ctrl-C stops it).

Observe and steer it from Python: ``sim.url``, ``sim.openai_base_url`` (``url + "/v1"``),
``sim.openrouter_base_url`` (``url + "/api/v1"``), ``sim.request_count`` (HTTP requests
received, failed ones included), ``sim.connection_count`` (TCP connections accepted),
``sim.requests`` (the last 1000 :class:`SimRequest` ``(method, path_with_query, json_body,
lower_case_headers)``), ``sim.set_behavior(**defaults)``, ``sim.reset()`` (log, counts,
stored responses and behaviour).

Paths served
------------
OpenAI dialect, under ``/v1`` (OpenAI, xAI), ``/api/v1`` (OpenRouter), ``/openai/v1`` and
``/openai`` (Azure v1) and ``/openai/deployments/{deployment}`` (Azure, any query)::

    POST /chat/completions      POST /responses        GET|DELETE /responses/{id}
    POST /embeddings            POST /images/generations
    POST /audio/transcriptions  POST /audio/speech     GET /models   GET /models/{id}

Gemini dialect, under ``/v1``, ``/v1beta`` and ``/v1alpha`` (google-genai 3.x uses
``/v1``, google-generativeai uses ``/v1beta``)::

    POST /models/{model}:generateContent     POST /models/{model}:streamGenerateContent
    POST /models/{model}:countTokens         POST /models/{model}:embedContent
    POST /models/{model}:batchEmbedContents  GET /models, GET /models/{model} (Google key)

(``GET .../models`` is Gemini's when the request carries ``x-goog-api-key`` or ``?key=``.)

``streamGenerateContent?alt=sse`` streams SSE (google-genai); without ``alt=sse`` it streams
one JSON array piecewise (the legacy REST transport). Also ``GET /health`` and
``GET /sim/image.png``.

Usage formulas (``tokens_of(s) = ceil(utf8_bytes(s) / 4)``)
-----------------------------------------------------------
* Prompt ``P = 3 + Σ (4 + tokens_of(message_text)) + extra`` over the messages: chat
  ``messages`` (an assistant message's ``tool_calls`` add their ``function`` JSON),
  Responses ``instructions`` + ``input`` items (function calls/outputs: their arguments/
  output), Gemini ``systemInstruction`` + ``contents`` (``functionCall``/``functionResponse``
  parts: their JSON). ``extra`` = 85 per image part (OpenAI), 258 per ``inlineData``/
  ``fileData`` part (Gemini), 8 per declared tool/function, 8 for a JSON schema response
  format (or OpenAI ``json_object``). ``#sim:tokens=N`` forces ``P = N``.
* Visible output ``T = 20 + P % 40`` (``#sim:completion=N`` forces it).
* Reasoning ``R = 32 + P % 32`` for reasoning models (OpenAI model names starting with
  ``o1 o3 o4 gpt-5 grok-3-mini grok-4`` except ``*chat*``, unless ``reasoning_effort`` is
  ``none``/``minimal``; Gemini names containing ``pro``, ``thinking`` or ``2.5`` unless
  ``thinkingBudget`` is 0, and capped by a positive budget), else 0. ``#sim:reasoning=N``
  (alias ``#sim:thoughts=N``) forces it for any model.
* With a limit ``M`` (``max_completion_tokens``/``max_tokens``/``max_output_tokens``/
  ``maxOutputTokens``) and ``T + R > M``: ``R = min(R, M)``, ``T = M - R``, finish reason
  ``length`` / ``MAX_TOKENS`` / Responses status ``incomplete``.
* Cached ``C = min(P, #sim:cached=N)``; Gemini requests naming ``cachedContent`` default to
  ``P // 2``; else 0.
* OpenAI chat usage: ``prompt_tokens=P``, ``completion_tokens=T+R`` (× ``n`` choices),
  ``cached_tokens=C``, ``reasoning_tokens=R``. xAI (header ``X-Sim-Provider: xai``):
  ``completion_tokens=T`` (reasoning excluded, as xAI reports it), ``total=P+T+R``.
  OpenRouter (path ``/api/v1`` or ``X-Sim-Provider: openrouter``): adds
  ``cost = (P-C)·1e-6 + C·0.25e-6 + (T+R)·2e-6`` USD and ``is_byok``.
* Responses: ``input_tokens=P``, ``output_tokens=T+R``, ``reasoning_tokens=R``.
* Gemini: ``promptTokenCount=P``, ``candidatesTokenCount=T`` (× candidates),
  ``thoughtsTokenCount=R`` (only when > 0), ``cachedContentTokenCount=C`` (only when > 0),
  ``totalTokenCount=P+T+R``. Stream chunks carry cumulative counts; the last is complete.
* Text: exactly ``4·T`` ASCII characters of lorem ipsum, ``sim_text(T, P)`` (structured
  output and tool calls are JSON instead, not padded; Gemini ``includeThoughts`` adds a
  short ``thought`` part). Streams send 16-character (4-token) deltas.
* Embeddings: ``Σ max(1, tokens_of(input))`` (token-id inputs count their length);
  deterministic unit vectors (1536 dims, 3072 for ``text-embedding-3-large`` and
  ``gemini-embedding*``, 768 for other Gemini models, or as requested).
* Images (``gpt-image*``): ``input_tokens = text_tokens = tokens_of(prompt)``, output tokens
  by quality × size (low 272/408/400, medium 1056/1584/1568, high 4160/6240/6208 for
  1024x1024/1024x1536/1536x1024; auto = medium) × n. ``dall-e*`` return no usage.
* Transcriptions (``gpt-4o*``): ``audio_tokens = ceil(file_bytes/32)``, ``text_tokens =
  tokens_of(prompt)``, ``output = 20 + input % 40``; ``whisper-1``: duration usage,
  ``seconds = ceil(file_bytes / 16000)``.

Tools and structured output: declared functions are called (first one, or the one
``tool_choice`` names) with required parameters filled with dummy values until the last
message is a tool/function result; JSON schemas are answered with a matching object.

Directives
----------
In the prompt text (the last user message / content that has text; embeddings: all inputs;
images, speech: the prompt / input; transcriptions: ``prompt``), in the request header
``X-Sim-Directives: error=429 delay=0.5`` (later wins: defaults < prompt < header), or
server-wide via :meth:`SimServer.set_behavior` (``error_times=N`` limits ``error`` to N
requests):

* ``#sim:error=CODE``: the provider's error JSON with that HTTP status, so the SDKs raise
  their own types (``openai.RateLimitError``, ``google.genai.errors.ClientError``,
  ``google.api_core.exceptions.TooManyRequests``...).
* ``#sim:delay=S``: wait S seconds (at most 30) before answering.
* ``#sim:hang``: never answer; the connection is dropped after ``hang_limit`` (30 s), when
  the client goes away, or when the server stops.
* ``#sim:cut=N``: streams send N events (SSE events / JSON-array elements) and then drop the
  connection (no ``[DONE]``, no final chunk); non-streaming calls are dropped at once.
* ``#sim:cached=N``, ``#sim:reasoning=N`` (alias ``#sim:thoughts=N``), ``#sim:tokens=N``,
  ``#sim:completion=N``: as in the formulas above.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..dialects import tokens_from_bytes
from .server import Behavior, Directives, SimRequest, SimServer, serve

__all__ = [
    "Behavior",
    "Directives",
    "Plan",
    "SimRequest",
    "SimServer",
    "fill_schema",
    "make_plan",
    "prompt_tokens",
    "serve",
    "sim_text",
    "text_chunks",
    "tokens_of",
    "vector",
]

_LOREM = """lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor
incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud"""
_WORDS = re.findall(r"[a-z]+", _LOREM)


def tokens_of(text: str) -> int:
    """``ceil(utf8_bytes / 4)``: the token count of one piece of text (llmspend's one
    bytes→tokens estimate)."""
    return tokens_from_bytes(len(text.encode("utf-8")))


def prompt_tokens(messages: Iterable[str], extra: int = 0) -> int:
    """``3 + sum(4 + tokens_of(m)) + extra`` over the messages' texts."""
    return 3 + sum(4 + tokens_of(m) for m in messages) + extra


@dataclasses.dataclass(frozen=True)
class Plan:
    """The usage of one simulated generation."""

    prompt: int
    cached: int
    text: int
    reasoning: int
    truncated: bool

    @property
    def output(self) -> int:
        """Visible plus reasoning tokens."""
        return self.text + self.reasoning


def make_plan(
    prompt: int,
    d: Directives,
    *,
    limit: int | None = None,
    reasoning: bool = False,
    reasoning_cap: int | None = None,
    cached: int = 0,
) -> Plan:
    """Apply the documented formulas (see :mod:`llmspend.sim`)."""
    p = d.tokens if d.tokens is not None else prompt
    text = d.completion if d.completion is not None else 20 + p % 40
    r = d.reasoning if d.reasoning is not None else (32 + p % 32 if reasoning else 0)
    if reasoning_cap is not None and d.reasoning is None:
        r = min(r, reasoning_cap)
    c = min(p, d.cached if d.cached is not None else cached)
    truncated = False
    if limit is not None and text + r > limit:
        truncated = True
        r = min(r, limit)
        text = limit - r
    return Plan(
        prompt=p, cached=max(c, 0), text=max(text, 0), reasoning=max(r, 0), truncated=truncated
    )


def sim_text(n_tokens: int, seed: int = 0) -> str:
    """Deterministic filler text of exactly ``4 * n_tokens`` ASCII characters."""
    size = 4 * max(n_tokens, 0)
    words: list[str] = []
    total, i = 0, seed % len(_WORDS)
    while total < size + 1:
        words.append(_WORDS[i % len(_WORDS)])
        total += len(words[-1]) + 1
        i += 1
    text = " ".join(words)[:size]
    if text.endswith(" "):
        text = text[:-1] + "."
    return text[:1].upper() + text[1:]


def vector(seed_text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from ``seed_text``."""
    state = zlib.crc32(seed_text.encode("utf-8")) or 1
    values = []
    for _ in range(dims):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        values.append(state / 0x3FFFFFFF - 1.0)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def text_chunks(text: str, size: int = 16) -> list[str]:
    """Stream deltas: pieces of ``size`` characters (4 tokens each)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


_TYPE_INTS = {1: "string", 2: "number", 3: "integer", 4: "boolean", 5: "array", 6: "object"}


def fill_schema(
    schema: Any, root: Any = None, *, required_only: bool = False, depth: int = 0
) -> Any:
    """A value matching a (JSON or Gemini) schema, with type-appropriate dummy values."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return fill_schema(target, root, required_only=required_only, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf", "any_of"):
        options = [o for o in schema.get(key) or [] if isinstance(o, Mapping)]
        options = [o for o in options if str(o.get("type", "")).lower() != "null"] or options
        if options:
            return fill_schema(options[0], root, required_only=required_only, depth=depth + 1)
    kind: Any = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = _TYPE_INTS.get(kind, kind) if isinstance(kind, int) else str(kind or "").lower()
    if kind == "object" or (not kind and "properties" in schema):
        props = schema.get("properties") or {}
        names = list(schema.get("required") or []) if required_only else list(props)
        names += [n for n in schema.get("required") or [] if n not in names]
        return {
            n: fill_schema(props.get(n, {"type": "string"}), root, depth=depth + 1) for n in names
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems") or schema.get("min_items") or 1))
        item = fill_schema(schema.get("items") or {"type": "string"}, root, depth=depth + 1)
        return [item] * count
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        value = max(1, math.ceil(float(low))) if low is not None else 1
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    return {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01"}.get(fmt or "", "sim")
