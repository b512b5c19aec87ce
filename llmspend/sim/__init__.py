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
        anthropic.Anthropic(api_key="x", base_url=sim.url, max_retries=0)

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

Anthropic Messages API, at ``/v1`` (or any prefix before it)::

    POST /v1/messages (JSON, or SSE with ``stream: true``)   POST /v1/messages/count_tokens

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
* Anthropic: ``input_tokens=P-C-W`` (Anthropic's input excludes cache reads and writes),
  ``cache_read_input_tokens=C``, ``cache_creation_input_tokens=W`` with ``W =
  min(#sim:cache_write=N, P-C)``, split in ``cache_creation`` as 1-hour writes when a
  ``cache_control`` asks ``ttl: "1h"``, else 5-minute ones; ``output_tokens=T+R`` with
  ``R`` for ``thinking: {type: enabled}`` (capped by ``budget_tokens``), also reported as
  ``output_tokens_details.thinking_tokens``; ``service_tier="standard"``; +85 prompt tokens
  per image/document block, +8 per tool. Streams: ``message_start`` (input and cache counts,
  ``output_tokens=1``), ``content_block_start``, ``ping``, ``content_block_delta``…,
  ``content_block_stop``, ``message_delta`` (stop reason, cumulative usage),
  ``message_stop``. ``count_tokens`` answers ``{"input_tokens": P}``.
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
  ``google.api_core.exceptions.TooManyRequests``, ``anthropic.OverloadedError`` for 529...).
* ``#sim:delay=S``: wait S seconds (at most 30) before answering.
* ``#sim:hang``: never answer; the connection is dropped after ``hang_limit`` (30 s), when
  the client goes away, or when the server stops.
* ``#sim:cut=N``: streams send N events (SSE events / JSON-array elements) and then drop the
  connection (no ``[DONE]``, no final chunk); non-streaming calls are dropped at once.
* ``#sim:cached=N``, ``#sim:reasoning=N`` (alias ``#sim:thoughts=N``), ``#sim:tokens=N``,
  ``#sim:completion=N``, ``#sim:cache_write=N`` (Anthropic): as in the formulas above.
"""

from __future__ import annotations

from .exchange import Behavior, Directives, SimRequest
from .formulas import (
    Plan,
    fill_schema,
    make_plan,
    prompt_tokens,
    sim_text,
    text_chunks,
    tokens_of,
    vector,
)
from .server import SimServer, serve

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
