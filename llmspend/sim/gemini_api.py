"""The Gemini Developer API dialect: ``/{v1,v1beta,v1alpha}/models/{model}:{method}``.

Serves ``google-genai`` (JSON, ``alt=sse`` streams) and the legacy ``google-generativeai``
REST transport (protobuf JSON with ``$alt=json;enum-encoding=int``; its streams are one
JSON array sent piecewise). The formulas are documented in :mod:`llmspend.sim`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..dialects import gemini
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

__all__ = ["error_body", "handle", "handle_batches", "handle_download", "handle_models"]

MEDIA_TOKENS = gemini.MEDIA_TOKENS
"""Prompt tokens counted for each ``inlineData`` / ``fileData`` part (the dialect's)."""

_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out."),
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Google's error JSON (``{"error": {code, message, status}}``)."""
    name, text = _STATUS.get(
        status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", "Error.")
    )
    return {"error": {"code": status, "message": message or f"{text} (simulated)", "status": name}}


def _body(ex: Exchange) -> dict[str, Any]:
    return ex.body if isinstance(ex.body, dict) else {}


def _get(obj: Any, camel: str) -> Any:
    """``obj[camel]`` or its snake_case twin."""
    if not isinstance(obj, dict):
        return None
    if camel in obj:
        return obj[camel]
    return obj.get("".join("_" + c.lower() if c.isupper() else c for c in camel))


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return ""
    if "text" in part:
        return str(part["text"])
    for key in ("functionCall", "functionResponse"):
        if _get(part, key) is not None:
            return json.dumps(_get(part, key), sort_keys=True)
    return ""


def _texts(body: dict[str, Any]) -> tuple[list[str], int, str, list[dict[str, Any]]]:
    """(message texts, media parts, directive text, contents)."""
    contents = _get(body, "contents") or []
    if isinstance(contents, dict):
        contents = [contents]
    contents = [c for c in contents if isinstance(c, dict)]
    texts, media, directive = [], 0, ""
    system = _get(body, "systemInstruction")
    if isinstance(system, dict):
        texts.append("".join(_part_text(p) for p in system.get("parts") or []))
    for content in contents:
        parts = [p for p in content.get("parts") or [] if isinstance(p, dict)]
        texts.append("".join(_part_text(p) for p in parts))
        media += sum(1 for p in parts if _get(p, "inlineData") or _get(p, "fileData"))
        words = "".join(str(p["text"]) for p in parts if "text" in p)
        if content.get("role", "user") == "user" and words:
            directive = words
    return texts, media, directive, contents


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for tool in _get(body, "tools") or []:
        found += [f for f in _get(tool, "functionDeclarations") or [] if isinstance(f, dict)]
    return found


def handle(ex: Exchange, model: str, method: str) -> None:
    """Answer ``POST .../models/{model}:{method}``."""
    ex.error_body = error_body
    if method in ("generateContent", "streamGenerateContent"):
        return _generate(ex, model, stream=method == "streamGenerateContent")
    if method == "countTokens":
        return _count(ex)
    if method in ("embedContent", "batchEmbedContents"):
        return _embed(ex, model, batch=method == "batchEmbedContents")
    if method == "batchGenerateContent":
        return _batch_create(ex, model)
    return ex.send_error(404, f"Method {method} is not simulated by llmspend.sim.")


def handle_models(ex: Exchange, name: str | None) -> None:
    """``GET .../models`` and ``GET .../models/{name}``."""
    ex.error_body = error_body

    def entry(model: str) -> dict[str, Any]:
        embeds = "embed" in model
        methods = ["embedContent", "batchEmbedContents"] if embeds else ["generateContent"]
        info: dict[str, Any] = dict(name=f"models/{model}", version="001", displayName=model)
        info |= dict(inputTokenLimit=1048576, outputTokenLimit=65536)
        return dict(info, supportedGenerationMethods=[*methods, "countTokens"])

    if name:
        return ex.send_json(entry(name))
    names = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash", "gemini-embedding-001")
    ex.send_json({"models": [entry(n) for n in names]})


def _plan(
    ex: Exchange, model: str, body: dict[str, Any], texts: list[str], media: int, directive: str
) -> tuple[Plan, Any] | None:
    config = _get(body, "generationConfig") or {}
    schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
    extra = MEDIA_TOKENS * media + 8 * len(_functions(body)) + (8 if schema else 0)
    d = ex.directives(directive)
    stream = ex.path.endswith("streamGenerateContent")
    if not ex.prelude(d, stream=stream):
        return None
    thinking = _get(config, "thinkingConfig") or {}
    budget = _get(thinking, "thinkingBudget")
    thinks = any(k in model for k in ex.sim.behavior.thinking_models) and budget != 0
    p = prompt_tokens(texts, extra)
    cached = p // 2 if _get(body, "cachedContent") else 0
    limit = _get(config, "maxOutputTokens")
    cap = budget if isinstance(budget, int) and budget > 0 else None
    return make_plan(p, d, limit=limit, reasoning=thinks, reasoning_cap=cap, cached=cached), d


def _usage(plan: Plan, n: int, text_so_far: int | None = None) -> dict[str, Any]:
    out = plan.text * n if text_so_far is None else text_so_far
    usage: dict[str, Any] = {
        "promptTokenCount": plan.prompt,
        "candidatesTokenCount": out,
        "totalTokenCount": plan.prompt + out + plan.reasoning,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.prompt}],
    }
    if plan.reasoning:
        usage["thoughtsTokenCount"] = plan.reasoning
    if plan.cached:
        usage["cachedContentTokenCount"] = plan.cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": plan.cached}]
    return usage


def _generate(ex: Exchange, model: str, *, stream: bool) -> None:
    body = _body(ex)
    texts, media, directive, contents = _texts(body)
    planned = _plan(ex, model, body, texts, media, directive)
    if planned is None:
        return
    plan, d = planned
    config = _get(body, "generationConfig") or {}
    n = max(1, int(_get(config, "candidateCount") or 1))
    functions = _functions(body)
    calling = _get(_get(body, "toolConfig"), "functionCallingConfig") or {}
    mode = str(calling.get("mode", "AUTO")).upper()
    last_parts = contents[-1].get("parts") or [] if contents else []
    answered = any(_get(p, "functionResponse") for p in last_parts)
    finish = "MAX_TOKENS" if plan.truncated else "STOP"
    if functions and not answered and mode not in ("NONE", "3"):
        fn = functions[0]
        params = _get(fn, "parametersJsonSchema") or fn.get("parameters") or {}
        args = fill_schema(params, required_only=True) or {}
        parts: list[dict[str, Any]] = [{"functionCall": {"name": fn.get("name"), "args": args}}]
        finish = "STOP"
    else:
        schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
        if schema:
            text = json.dumps(fill_schema(schema))
        elif _get(config, "responseMimeType") == "application/json":
            text = json.dumps({"result": sim_text(plan.text, plan.prompt)})
        else:
            text = sim_text(plan.text, plan.prompt)
        parts = [{"text": text}]
    thoughts = _get(_get(config, "thinkingConfig"), "includeThoughts") and plan.reasoning
    thought = [{"text": sim_text(min(plan.reasoning, 8), 7), "thought": True}] if thoughts else []
    head = {"modelVersion": model, "responseId": ex.ident("")}
    tier = _get(body, "serviceTier")  # echoed as served when the request asks for a tier
    served = {"serviceTier": str(tier).lower()} if isinstance(tier, str) and tier else {}
    if not stream:
        content = {"parts": thought + parts, "role": "model"}
        cands = [dict(content=content, finishReason=finish, index=i) for i in range(n)]
        usage = _usage(plan, n) | served
        return ex.send_json({"candidates": cands, "usageMetadata": usage, **head})
    chunks = list(_stream_chunks(plan, thought, parts, finish, head))
    for chunk in chunks:
        chunk["usageMetadata"] |= served
    if ex.query.get("alt") == "sse":
        return ex.stream(iter_sse(chunks, crlf=True), d.cut, "text/event-stream")
    pieces = [(b"[" if i == 0 else b",\r\n") + json.dumps(c).encode() for i, c in enumerate(chunks)]
    ex.stream([*pieces, b"]"], d.cut, "application/json; charset=UTF-8")


def _stream_chunks(
    plan: Plan, thought: list[Any], parts: list[dict[str, Any]], finish: str, head: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Thought summary, text in 4-token pieces; cumulative usage; the last chunk finishes."""
    text = parts[0].get("text") if "text" in parts[0] else None
    pieces = [[{"text": t}] for t in text_chunks(text)] if text else [parts]
    pieces = ([thought] if thought else []) + pieces
    emitted = 0
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        visible = "" if piece is thought else piece[0].get("text", "")
        emitted = plan.text if last else emitted + tokens_of(visible)
        cand: dict[str, Any] = {"content": {"parts": piece, "role": "model"}, "index": 0}
        if last:
            cand["finishReason"] = finish
        yield {"candidates": [cand], "usageMetadata": _usage(plan, 1, emitted), **head}


def _count(ex: Exchange) -> None:
    body = _body(ex)
    inner = _get(body, "generateContentRequest")
    source = inner if isinstance(inner, dict) else body
    texts, media, directive, _ = _texts(source)
    d = ex.directives(directive)
    if not ex.prelude(d):
        return
    extra = MEDIA_TOKENS * media + 8 * len(_functions(source))
    total = d.tokens if d.tokens is not None else prompt_tokens(texts, extra)
    details = [{"modality": "TEXT", "tokenCount": total}]
    ex.send_json({"totalTokens": total, "promptTokensDetails": details})


def _embed(ex: Exchange, model: str, *, batch: bool) -> None:
    body = _body(ex)
    requests = (_get(body, "requests") or []) if batch else [body]
    contents = [_get(r, "content") or {} for r in requests]
    texts = ["".join(_part_text(p) for p in c.get("parts") or []) for c in contents]
    d = ex.directives(" ".join(texts))
    if not ex.prelude(d):
        return
    default_dims = 3072 if "gemini-embedding" in model else 768
    dims = [int(_get(r, "outputDimensionality") or default_dims) for r in requests]
    values = [vector(t, n) for t, n in zip(texts, dims, strict=True)]
    total = d.tokens if d.tokens is not None else sum(max(1, tokens_of(t)) for t in texts)
    usage = {"promptTokenCount": total, "totalTokenCount": total}
    if batch:
        return ex.send_json({"embeddings": [{"values": v} for v in values], "usageMetadata": usage})
    ex.send_json({"embedding": {"values": values[0]}, "usageMetadata": usage})


# -- Batch Mode ------------------------------------------------------------------------------


def _batch_reply(ex: Exchange, model: str, request: dict[str, Any]) -> dict[str, Any]:
    """One inline request's response, as ``generateContent`` would answer it (text only)."""
    texts, media, directive, _ = _texts(request)
    config = _get(request, "generationConfig") or {}
    p = prompt_tokens(texts, MEDIA_TOKENS * media + 8 * len(_functions(request)))
    plan = make_plan(p, ex.directives(directive), limit=_get(config, "maxOutputTokens"))
    content = {"parts": [{"text": sim_text(plan.text, p)}], "role": "model"}
    cand = dict(content=content, finishReason="MAX_TOKENS" if plan.truncated else "STOP", index=0)
    return {"candidates": [cand], "usageMetadata": _usage(plan, 1), "modelVersion": model,
            "responseId": ex.ident("")}  # fmt: skip


def _batch_create(ex: Exchange, model: str) -> None:
    """``models/{model}:batchGenerateContent``: a job of inline requests, ``PENDING`` when
    created and ``SUCCEEDED`` (with every inline response and its usage) from the first
    read on. A file source is accepted; its job succeeds with a responses file of two
    lines (``files/{name}:download``)."""
    config = _get(_get(_body(ex), "batch"), "inputConfig") or {}
    items = _get(_get(config, "requests"), "requests")
    name = f"batches/{ex.ident('')}"
    meta = {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "model": f"models/{model}", "name": name, "state": "BATCH_STATE_PENDING",
            "createTime": "2026-12-05T00:00:00Z"}  # fmt: skip
    job = {"name": name, "metadata": meta}
    if isinstance(items, list):
        replies = [
            {"response": _batch_reply(ex, model, _get(i, "request") or {}),
             "metadata": _get(i, "metadata")}
            for i in items if isinstance(i, dict)
        ]  # fmt: skip
        output: dict[str, Any] = {"inlinedResponses": {"inlinedResponses": replies}}
    else:  # a file source: two lines of results, in a file to download
        results = f"files/{ex.ident('batch-results-')}"
        lines = [
            {"key": f"request-{i}", "response": _batch_reply(ex, model, {"contents": [
                {"parts": [{"text": f"file request {i}"}], "role": "user"}]})}
            for i in range(2)
        ]  # fmt: skip
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        ex.sim._remember({"id": results, "_gemini_file": data})
        output = {"responsesFile": results}
    done = dict(meta, state="BATCH_STATE_SUCCEEDED", output=output,
                endTime="2026-12-05T00:00:01Z")  # fmt: skip
    ex.sim._remember({"id": name, "_gemini_batch": {"name": name, "metadata": done, "done": True}})
    ex.send_json(job)


def handle_batches(ex: Exchange, name: str | None) -> None:
    """``GET .../batches`` (list) and ``GET .../batches/{name}`` (get)."""
    ex.error_body = error_body
    jobs = [v["_gemini_batch"] for v in list(ex.sim.store.values()) if "_gemini_batch" in v]
    if ex.method != "GET":
        return ex.send_error(404, f"{ex.method} on batches is not simulated by llmspend.sim.")
    if name is None:
        return ex.send_json({"operations": jobs})
    job = next((j for j in jobs if j["name"] == f"batches/{name}"), None)
    if job is None:
        return ex.send_error(404, f"Batch batches/{name} not found.")
    ex.send_json(job)


def handle_download(ex: Exchange, name: str) -> None:
    """``GET .../files/{name}:download?alt=media``: a batch's results file."""
    ex.error_body = error_body
    stored = ex.sim.store.get(f"files/{name}")
    if ex.method != "GET" or stored is None or "_gemini_file" not in stored:
        return ex.send_error(404, f"File files/{name} not found.")
    ex.send_body(stored["_gemini_file"], "application/octet-stream")
