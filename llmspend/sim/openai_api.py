"""The OpenAI dialect (also Azure OpenAI, OpenRouter and xAI): paths under ``/v1``.

Handlers receive the route after the prefix (``/chat/completions``...). The formulas are
documented in :mod:`llmspend.sim`; the JSON shapes follow the OpenAI API reference and
what the ``openai`` SDK parses.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time
import zlib
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

from ..dialects import openai as dialect
from .exchange import Exchange, iter_sse
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
from .openai_jobs import files_and_batches, fine_tuning, moderations, videos
from .openai_jobs import multipart as _multipart
from .openai_jobs import text_of as _text

__all__ = ["PNG", "error_body", "handle"]


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixel = zlib.compress(b"\x00\x10\xa3\x7f\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel) + chunk(b"IEND", b"")
    )


PNG = _png()
"""A 1x1 PNG: the image every image call returns."""

FINGERPRINT = "fp_llmspend_sim"
_ERRORS = {401: ("invalid_request_error", "invalid_api_key"), 403: ("permission_denied", None)}
_ERRORS |= {
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_IMAGE_TOKENS = {"low": (272, 408, 400), "medium": (1056, 1584, 1568), "high": (4160, 6240, 6208)}
_SIZES = ("1024x1024", "1024x1536", "1536x1024")
_AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "wav": "audio/wav"}
_MODELS: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "o4-mini", "tts-1")
_MODELS += ("text-embedding-3-small", "text-embedding-3-large", "gpt-image-1", "whisper-1")
_KNOWN = ("gpt-", "o1", "o3", "o4", "chatgpt", "text-embedding", "dall-e", "whisper", "tts")
_AZURE = {"/embeddings": "text-embedding-3-small", "/images/generations": "gpt-image-1"}
_AZURE |= {"/audio/transcriptions": "gpt-4o-transcribe", "/audio/speech": "tts-1"}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON, so the SDK raises its own ``APIStatusError`` subclass."""
    kind, code = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    text = message or f"{phrase} (simulated by llmspend.sim)."
    return {"error": {"message": text, "type": kind, "param": None, "code": code}}


class _Ctx:
    """One OpenAI-dialect request: its body, provider flavour and model."""

    def __init__(self, ex: Exchange, route: str, provider: str | None, deployment: str | None):
        self.ex = ex
        self.body: dict[str, Any] = ex.body if isinstance(ex.body, dict) else {}
        self.route = route
        chosen = ex.headers.get("x-sim-provider") or provider or ex.sim.behavior.provider
        self.provider = (chosen or "openai").lower()
        if provider == "azure" and deployment is None and self.body.get("model"):
            deployment = str(self.body["model"])  # Azure v1 paths name the deployment in the body
        self.deployment = deployment
        self.created = int(time.time())

    def model(self, default: str = "gpt-4o-mini") -> str:
        """The request's model; for an Azure deployment, the model it stands for."""
        if self.deployment is None:
            return str(self.body.get("model") or default)
        mapping = self.ex.sim.behavior.azure_deployments
        if self.deployment in mapping:
            return mapping[self.deployment]
        if self.deployment.startswith(_KNOWN):
            return self.deployment
        return _AZURE.get(self.route, "gpt-4o-mini")

    def reasoning(self, model: str, effort: Any) -> bool:
        """Whether this model reports reasoning tokens by default."""
        name = model.rsplit("/", 1)[-1]
        prefixes = (*self.ex.sim.behavior.reasoning_models, "grok-3-mini", "grok-4")
        return (
            name.startswith(prefixes) and "chat" not in name and effort not in ("none", "minimal")
        )

    def usage(self, plan: Plan, n: int = 1) -> dict[str, Any]:
        """Chat Completions usage, with the provider's extras."""
        out = plan.output * n
        details = dict(reasoning_tokens=plan.reasoning * n, audio_tokens=0)
        details |= dict(accepted_prediction_tokens=0, rejected_prediction_tokens=0)
        usage: dict[str, Any] = dict(prompt_tokens=plan.prompt, completion_tokens=out)
        usage |= dict(total_tokens=plan.prompt + out, completion_tokens_details=details)
        usage["prompt_tokens_details"] = dict(cached_tokens=plan.cached, audio_tokens=0)
        if self.provider == "xai":  # xAI: completion_tokens exclude reasoning; total includes it
            usage["completion_tokens"] = plan.text * n
            usage["prompt_tokens_details"] |= dict(text_tokens=plan.prompt, image_tokens=0)
            usage["num_sources_used"] = 0
        elif self.provider == "openrouter":
            usage |= dict(cost=self.cost(plan, out), is_byok=False)
            usage["cost_details"] = {"upstream_inference_cost": None}
        return usage

    @staticmethod
    def cost(plan: Plan, out: int) -> float:
        """OpenRouter's ``cost``: $1/M input, $0.25/M cached input, $2/M output."""
        return round((plan.prompt - plan.cached) * 1e-6 + plan.cached * 0.25e-6 + out * 2e-6, 12)


def _tier(body: dict[str, Any]) -> str:
    """The tier a response reports: the one asked for (``flex``, ``priority``), else default."""
    asked = body.get("service_tier")
    return asked if asked in ("flex", "priority", "scale") else "default"


def handle(
    ex: Exchange, route: str, *, provider: str | None = None, deployment: str | None = None
) -> None:
    """Answer one OpenAI-dialect request; ``route`` is the path after ``/v1``."""
    ex.error_body = error_body
    ex.extra_headers = {"x-request-id": ex.ident("req_"), "openai-processing-ms": "1"}
    ctx = _Ctx(ex, route, provider, deployment)
    api = dialect.api_of(route)  # the dialect's routes: the APIs the taps record
    if ex.method == "POST" and api in _POSTS:
        return _POSTS[api](ctx)
    if route.startswith("/responses/") and ex.method in ("GET", "DELETE"):
        return _stored_response(ctx, route.split("/")[2])
    if route.startswith(("/files", "/batches")):
        return files_and_batches(ctx, route.rstrip("/").split("/")[1:])
    if ex.method == "GET" and (route == "/models" or route.startswith("/models/")):
        return _models(ctx, route[len("/models/") :] if route.startswith("/models/") else None)
    return ex.send_error(404, f"Unknown route {ex.method} {route} (llmspend.sim)")


def _images_in(items: list[dict[str, Any]]) -> int:
    parts = [p for i in items if isinstance(i.get("content"), list) for p in i["content"]]
    return sum(
        1 for p in parts if isinstance(p, dict) and p.get("type") in ("image_url", "input_image")
    )


def _tool_call(tools: list[dict[str, Any]], choice: Any) -> tuple[str, str] | None:
    """``(name, arguments)`` of the function to call, or ``None``."""
    if not tools or choice == "none":
        return None
    wanted = None
    if isinstance(choice, dict):
        wanted = choice.get("name") or (choice.get("function") or {}).get("name")
    fns = [t.get("function", t) for t in tools]
    fn = next((f for f in fns if f.get("name") == wanted), fns[0])
    args = fill_schema(
        fn.get("parameters") or {"type": "object"}, required_only=not fn.get("strict")
    )
    return str(fn.get("name")), json.dumps(args)


# --------------------------------------------------------------------------- chat


def _chat(ctx: _Ctx) -> None:
    ex, body, model = ctx.ex, ctx.body, ctx.model()
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    calls = [[json.dumps(c.get("function")) for c in m.get("tool_calls") or []] for m in messages]
    texts = [_text(m.get("content")) + "".join(c) for m, c in zip(messages, calls, strict=True)]
    tools = [t for t in body.get("tools") or [] if t.get("type", "function") == "function"]
    tools += [{"type": "function", "function": f} for f in body.get("functions") or []]
    fmt = body.get("response_format") or {}
    schema = (
        (fmt.get("json_schema") or {}).get("schema", {})
        if fmt.get("type") == "json_schema"
        else None
    )
    extra = (
        85 * _images_in(messages) + 8 * len(tools) + (8 if fmt.get("type", "text") != "text" else 0)
    )
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    d = ex.directives(_text(user.get("content")))
    stream = bool(body.get("stream"))
    if not ex.prelude(d, stream=stream):
        return
    p = prompt_tokens(texts, extra)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    plan = make_plan(
        p, d, limit=limit, reasoning=ctx.reasoning(model, body.get("reasoning_effort"))
    )
    last_role = messages[-1].get("role") if messages else None
    call = None if last_role in ("tool", "function") else _tool_call(tools, body.get("tool_choice"))
    content: str | None = sim_text(plan.text, p)
    if call:
        content = None
    elif schema is not None:
        content = json.dumps(fill_schema(schema))
    elif fmt.get("type") == "json_object":
        content = json.dumps({"result": content})
    finish = "tool_calls" if call else "length" if plan.truncated else "stop"
    n = max(1, int(body.get("n") or 1))
    tool_calls = None
    if call:
        fn = {"name": call[0], "arguments": call[1]}
        tool_calls = [{"id": ex.ident("call_"), "type": "function", "function": fn}]
    head = dict(id=ex.ident("chatcmpl-"), created=ctx.created, model=model)
    head["service_tier"] = _tier(body)
    head["system_fingerprint"] = FINGERPRINT
    if ctx.provider == "openrouter":
        head["provider"] = "OpenAI"
    if stream:
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        usage = ctx.usage(plan, n) if include else None
        chunks = _chat_chunks(head, n, content, tool_calls, finish, usage)
        return ex.stream(iter_sse(chunks), d.cut, "text/event-stream")
    message: dict[str, Any] = dict(role="assistant", content=content, refusal=None, annotations=[])
    if tool_calls:
        message["tool_calls"] = tool_calls
    choices = [
        dict(index=i, message=message, logprobs=None, finish_reason=finish) for i in range(n)
    ]
    reply = dict(head, object="chat.completion", choices=choices, usage=ctx.usage(plan, n))
    if ctx.provider == "azure":
        reply["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
        for choice in choices:
            choice["content_filter_results"] = {}
    ex.send_json(reply)


def _chat_chunks(
    head: dict[str, Any],
    n: int,
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    finish: str,
    usage: dict[str, Any] | None,
) -> Iterator[Any]:
    """Role chunk, tool-call or content deltas, finish chunk; usage chunk; ``[DONE]``."""
    extra = {"usage": None} if usage else {}

    def chunk(i: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = dict(index=i, delta=delta, logprobs=None, finish_reason=reason)
        return dict(head, object="chat.completion.chunk", choices=[choice], **extra)

    for i in range(n):
        yield chunk(
            i, dict(role="assistant", content="" if content is not None else None, refusal=None)
        )
        for call in tool_calls or []:
            name, args = call["function"]["name"], call["function"]["arguments"]
            opening = dict(index=0, id=call["id"], type="function")
            yield chunk(i, {"tool_calls": [dict(opening, function=dict(name=name, arguments=""))]})
            for piece in text_chunks(args):
                yield chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for piece in text_chunks(content or ""):
            yield chunk(i, {"content": piece})
        yield chunk(i, {}, finish)
    if usage:
        yield dict(head, object="chat.completion.chunk", choices=[], usage=usage)
    yield b"data: [DONE]\n\n"


# --------------------------------------------------------------------------- responses


def _responses(ctx: _Ctx) -> None:
    ex, body, model = ctx.ex, ctx.body, ctx.model()
    raw = body.get("input")
    items = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw or []
    items = [i for i in items if isinstance(i, dict)]
    texts = [body["instructions"]] if body.get("instructions") else []
    texts += [
        _text(i["content"] if "content" in i else i.get("output") or i.get("arguments"))
        for i in items
    ]
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    schema = fmt.get("schema", {}) if fmt.get("type") == "json_schema" else None
    extra = (
        85 * _images_in(items) + 8 * len(body.get("tools") or []) + (8 if schema is not None else 0)
    )
    user: dict[str, Any] = next((i for i in reversed(items) if i.get("role") == "user"), {})
    d = ex.directives(_text(user.get("content")))
    stream = bool(body.get("stream"))
    if not ex.prelude(d, stream=stream):
        return
    p = prompt_tokens(texts, extra)
    effort = (body.get("reasoning") or {}).get("effort")
    plan = make_plan(
        p, d, limit=body.get("max_output_tokens"), reasoning=ctx.reasoning(model, effort)
    )
    answered = bool(items) and items[-1].get("type") == "function_call_output"
    call = None if answered else _tool_call(tools, body.get("tool_choice"))
    status = "incomplete" if plan.truncated and not call else "completed"
    output: list[dict[str, Any]] = []
    if plan.reasoning:
        output.append(
            dict(id=ex.ident("rs_"), type="reasoning", summary=[], encrypted_content=None)
        )
    if call:
        item = dict(id=ex.ident("fc_"), type="function_call", status="completed")
        output.append(dict(item, call_id=ex.ident("call_"), name=call[0], arguments=call[1]))
    else:
        text = json.dumps(fill_schema(schema)) if schema is not None else sim_text(plan.text, p)
        part = dict(type="output_text", text=text, annotations=[], logprobs=[])
        item = dict(id=ex.ident("msg_"), type="message", status=status, role="assistant")
        output.append(dict(item, content=[part]))
    usage: dict[str, Any] = dict(input_tokens=plan.prompt, output_tokens=plan.output)
    usage["input_tokens_details"] = {"cached_tokens": plan.cached}
    usage["output_tokens_details"] = {"reasoning_tokens": plan.reasoning}
    usage["total_tokens"] = plan.prompt + plan.output
    if ctx.provider == "openrouter":
        usage["cost"] = ctx.cost(plan, plan.output)
    resp: dict[str, Any] = dict(id=ex.ident("resp_"), object="response", status=status)
    resp["created_at"] = ctx.created
    resp |= dict(background=False, error=None, model=model, output=output, usage=usage)
    resp["incomplete_details"] = {"reason": "max_output_tokens"} if status == "incomplete" else None
    for key, default in _RESPONSE_ECHO.items():
        resp[key] = body.get(key, default)
    resp |= dict(reasoning={"effort": effort, "summary": None}, service_tier=_tier(body))
    resp |= dict(text={"format": fmt, "verbosity": "medium"}, truncation="disabled")
    ex.sim._remember(resp)
    if not stream:
        return ex.send_json(resp)
    ex.stream(iter_sse(_response_events(resp), named=True), d.cut, "text/event-stream")


_RESPONSE_ECHO: dict[str, Any] = dict(instructions=None, max_output_tokens=None, metadata={})
_RESPONSE_ECHO |= dict(parallel_tool_calls=True, previous_response_id=None, store=True, user=None)
_RESPONSE_ECHO |= dict(temperature=1.0, top_p=1.0, tool_choice="auto", tools=[])


def _response_events(resp: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Responses stream: created, in_progress, per item/part events, completed."""
    counter = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        return dict(type=f"response.{kind}", sequence_number=next(counter), **fields)

    early = dict(resp, status="in_progress", output=[], usage=None, incomplete_details=None)
    yield event("created", response=early)
    yield event("in_progress", response=early)
    for index, item in enumerate(resp["output"]):
        added = dict(item)
        if item["type"] == "message":
            added |= dict(status="in_progress", content=[])
        elif item["type"] == "function_call":
            added |= dict(status="in_progress", arguments="")
        yield event("output_item.added", output_index=index, item=added)
        ids = dict(item_id=item["id"], output_index=index)
        if item["type"] == "function_call":
            for piece in text_chunks(item["arguments"]):
                yield event("function_call_arguments.delta", **ids, delta=piece)
            yield event(
                "function_call_arguments.done",
                **ids,
                name=item["name"],
                arguments=item["arguments"],
            )
        for ci, part in enumerate(item.get("content") or []):
            yield event("content_part.added", **ids, content_index=ci, part=dict(part, text=""))
            for piece in text_chunks(part["text"]):
                yield event("output_text.delta", **ids, content_index=ci, delta=piece, logprobs=[])
            yield event("output_text.done", **ids, content_index=ci, text=part["text"], logprobs=[])
            yield event("content_part.done", **ids, content_index=ci, part=part)
        yield event("output_item.done", output_index=index, item=item)
    yield event("completed" if resp["status"] == "completed" else "incomplete", response=resp)


def _stored_response(ctx: _Ctx, rid: str) -> None:
    ex = ctx.ex
    resp = ex.sim.store.get(rid)
    if resp is None:
        return ex.send_error(404, f"Response with id '{rid}' not found.")
    if ex.method == "DELETE":
        ex.sim.store.pop(rid, None)
        return ex.send_json({"id": rid, "object": "response.deleted", "deleted": True})
    return ex.send_json(resp)


# --------------------------------------------------------------------------- other endpoints


def _embeddings(ctx: _Ctx) -> None:
    ex, body = ctx.ex, ctx.body
    model = ctx.model("text-embedding-3-small")
    raw = body.get("input")
    inputs: list[Any] = (
        [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw or []
    )
    d = ex.directives(" ".join(i for i in inputs if isinstance(i, str)))
    if not ex.prelude(d):
        return
    counts = [len(i) if isinstance(i, list) else max(1, tokens_of(str(i))) for i in inputs]
    total = d.tokens if d.tokens is not None else sum(counts)
    dims = int(body.get("dimensions") or (3072 if model.endswith("-large") else 1536))
    data = []
    for index, item in enumerate(inputs):
        vec: Any = vector(json.dumps(item), dims)
        if body.get("encoding_format") == "base64":
            vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vec})
    usage: dict[str, Any] = {"prompt_tokens": total, "total_tokens": total}
    if ctx.provider == "openrouter":
        usage["cost"] = round(total * 0.02e-6, 12)
    ex.send_json({"object": "list", "data": data, "model": model, "usage": usage})


def _images(ctx: _Ctx) -> None:
    ex, body = ctx.ex, ctx.body
    model = ctx.model("dall-e-2")
    prompt = str(body.get("prompt") or "")
    d = ex.directives(prompt)
    if not ex.prelude(d):
        return
    n = max(1, int(body.get("n") or 1))
    size = str(body.get("size")) if body.get("size") in _SIZES else "1024x1024"
    quality = str(body.get("quality")) if body.get("quality") in _IMAGE_TOKENS else "medium"
    fmt = body.get("response_format")
    as_url = fmt == "url" or (model.startswith("dall-e") and fmt != "b64_json")
    item = (
        {"url": ex.sim.url + "/sim/image.png"}
        if as_url
        else {"b64_json": base64.b64encode(PNG).decode()}
    )
    if model == "dall-e-3":
        item["revised_prompt"] = prompt
    reply: dict[str, Any] = {"created": ctx.created, "data": [item] * n}
    if model.startswith("gpt-image"):
        text_in = d.tokens if d.tokens is not None else tokens_of(prompt)
        out = (
            d.completion
            if d.completion is not None
            else _IMAGE_TOKENS[quality][_SIZES.index(size)] * n
        )
        reply |= dict(background="opaque", output_format="png", quality=quality, size=size)
        usage: dict[str, Any] = dict(
            input_tokens=text_in, output_tokens=out, total_tokens=text_in + out
        )
        usage["input_tokens_details"] = dict(text_tokens=text_in, image_tokens=0)
        usage["output_tokens_details"] = dict(image_tokens=out, text_tokens=0)
        reply["usage"] = usage
    ex.send_json(reply)


def _transcription(ctx: _Ctx) -> None:
    ex = ctx.ex
    form = _multipart(ex)
    field = {k: v.decode("utf-8", "replace") for k, v in form.items() if k != "file"}
    model = ctx.model() if ctx.deployment else field.get("model") or "whisper-1"
    prompt = field.get("prompt", "")
    d = ex.directives(prompt)
    stream = field.get("stream") == "true"
    if not ex.prelude(d, stream=stream):
        return
    size = len(form.get("file", b""))
    text_in = tokens_of(prompt)
    audio = math.ceil(size / 32) if d.tokens is None else d.tokens - min(text_in, d.tokens)
    total_in = audio + text_in if d.tokens is None else d.tokens
    out = d.completion if d.completion is not None else 20 + total_in % 40
    text = sim_text(out, total_in)
    usage: dict[str, Any] = dict(type="tokens", input_tokens=total_in, output_tokens=out)
    usage["total_tokens"] = total_in + out
    usage["input_token_details"] = dict(audio_tokens=audio, text_tokens=total_in - audio)
    seconds = float(math.ceil(size / 16000))
    if model == "whisper-1":
        usage = {"type": "duration", "seconds": seconds}
    if stream:
        events: list[Any] = [dict(type="transcript.text.delta", delta=c) for c in text_chunks(text)]
        events.append(dict(type="transcript.text.done", text=text, usage=usage))
        return ex.stream(iter_sse(events), d.cut, "text/event-stream")
    fmt = field.get("response_format", "json")
    if fmt in ("text", "srt", "vtt"):
        return ex.send_body(text.encode(), "text/plain; charset=utf-8")
    if fmt == "verbose_json":
        usage = {"type": "duration", "seconds": seconds}
        verbose = dict(task="transcribe", language="english", duration=seconds, segments=[])
        return ex.send_json(dict(verbose, text=text, usage=usage))
    ex.send_json({"text": text, "usage": usage})


def _speech(ctx: _Ctx) -> None:
    ex = ctx.ex
    text = str(ctx.body.get("input") or "")
    d = ex.directives(text)
    if not ex.prelude(d):
        return
    fmt = ctx.body.get("response_format") or "mp3"
    noise = bytes((i * 37 + len(text)) & 0xFF for i in range(256 + 64 * tokens_of(text)))
    ctype = _AUDIO_TYPES.get(fmt, "audio/pcm" if fmt == "pcm" else "audio/flac")
    ex.send_body(b"ID3\x04\x00\x00\x00\x00\x00\x00" + noise, ctype)


#: The simulated billed APIs (``api`` as the dialect names a route) and their handlers.
_POSTS = {
    "chat.completions": _chat, "responses": _responses, "embeddings": _embeddings,
    "images.generations": _images, "audio.transcriptions": _transcription,
    "audio.speech": _speech, "moderations": moderations, "fine_tuning.jobs": fine_tuning,
    "videos": videos,
}  # fmt: skip


def _models(ctx: _Ctx, model_id: str | None) -> None:
    def entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "system"}

    if model_id:
        return ctx.ex.send_json(entry(model_id))
    ctx.ex.send_json({"object": "list", "data": [entry(m) for m in _MODELS]})
