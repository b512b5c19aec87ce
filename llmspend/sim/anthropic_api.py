"""The Anthropic Messages API: ``POST /v1/messages`` (JSON and SSE), ``/count_tokens`` and
Message Batches (``/v1/messages/batches``: create, retrieve, list, results).

The formulas are documented in :mod:`llmspend.sim`; the JSON shapes and the stream's event
sequence follow the Anthropic API reference and what the ``anthropic`` SDK parses. The
routes are read by :mod:`llmspend.dialects.anthropic`, as the taps read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..dialects import anthropic as dialect
from .exchange import Exchange, iter_sse
from .formulas import Plan, fill_schema, make_plan, prompt_tokens, sim_text, text_chunks

__all__ = ["IMAGE_TOKENS", "error_body", "handle"]

#: Prompt tokens counted for each ``image`` / ``document`` block.
IMAGE_TOKENS = 85
_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}  # fmt: skip


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Anthropic's error JSON, so the SDK raises its own ``APIStatusError`` subclass."""
    kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    text = message or f"{kind} (simulated by llmspend.sim)"
    return {"type": "error", "error": {"type": kind, "message": text}}


def handle(ex: Exchange, path: str) -> None:
    """Answer one Anthropic request (``path`` as received, prefix included)."""
    ex.error_body = error_body
    ex.extra_headers = {"request-id": ex.ident("req_")}
    if _BATCHES in path:
        return _batches(ex, path)
    hit = dialect.api_of(path)
    if ex.method != "POST" or hit is None or hit[0] == "completions":
        return ex.send_error(404, f"Unknown route {ex.method} {path} (llmspend.sim)")
    body: dict[str, Any] = ex.body if isinstance(ex.body, dict) else {}
    if hit[0] == "count_tokens":
        return _count_tokens(ex, body)
    return _messages(ex, body)


def _text(content: Any) -> str:
    """The text of a content (a string or a list of blocks); tool blocks as their JSON."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    out = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            out.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            out.append(json.dumps(block.get("input"), sort_keys=True))
        elif kind == "tool_result":
            out.append(_text(block.get("content")))
    return "\n".join(out)


def _media(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for b in content if isinstance(b, dict) and b.get("type") in ("image", "document"))


def _user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message that has text (where directives are read)."""
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if isinstance(content, str) and content:
            return content
        blocks = content if isinstance(content, list) else []
        text = "\n".join(str(b["text"]) for b in blocks if isinstance(b, dict) and b.get("text"))
        if text:
            return text
    return ""


def _prompt(body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Prompt tokens (``P``) of a request, and its messages."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    texts = [_text(body["system"])] if body.get("system") else []
    texts += [_text(m.get("content")) for m in messages]
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    extra = IMAGE_TOKENS * sum(_media(m.get("content")) for m in messages) + 8 * len(tools)
    return prompt_tokens(texts, extra), messages


def _count_tokens(ex: Exchange, body: dict[str, Any]) -> None:
    p, messages = _prompt(body)
    d = ex.directives(_user_text(messages))
    if not ex.prelude(d):
        return
    ex.send_json({"input_tokens": d.tokens if d.tokens is not None else p})


def _long_ttl(obj: Any, depth: int = 0) -> bool:
    """Whether a request asks for a 1-hour cache (a ``cache_control`` with ``ttl: "1h"``)."""
    if depth > 16:
        return False
    if isinstance(obj, dict):
        control = obj.get("cache_control")
        if isinstance(control, dict) and control.get("ttl") == "1h":
            return True
        return any(_long_ttl(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return any(_long_ttl(v, depth + 1) for v in obj)
    return False


def _tool_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, Any] | None:
    """``(name, input)`` of the tool to call, or ``None``."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("input_schema")]
    choice = body.get("tool_choice") or {}
    last = messages[-1].get("content") if messages else None
    answered = isinstance(last, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last
    )
    if not tools or answered or choice.get("type") == "none":
        return None
    wanted = choice.get("name") if choice.get("type") == "tool" else None
    tool = next((t for t in tools if t.get("name") == wanted), tools[0])
    return str(tool.get("name")), fill_schema(tool["input_schema"], required_only=True)


def usage_of(plan: Plan, cache_write: int, long_ttl: bool) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` excludes cache reads and writes."""
    write = max(0, min(cache_write, plan.prompt - plan.cached))
    usage: dict[str, Any] = dict(input_tokens=plan.prompt - plan.cached - write)
    usage |= dict(cache_creation_input_tokens=write, cache_read_input_tokens=plan.cached)
    usage["cache_creation"] = dict(
        ephemeral_5m_input_tokens=0 if long_ttl else write,
        ephemeral_1h_input_tokens=write if long_ttl else 0,
    )
    usage |= dict(output_tokens=plan.output, service_tier="standard")
    if plan.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": plan.reasoning}
    return usage


def _messages(ex: Exchange, body: dict[str, Any]) -> None:
    d = ex.directives(_user_text(_prompt(body)[1]))
    stream = body.get("stream") is True
    if not ex.prelude(d, stream=stream):
        return
    message = _message(ex, body, d)
    if not stream:
        return ex.send_json(message)
    ex.stream(iter_sse(_events(message), named=True), d.cut, "text/event-stream")


def _message(ex: Exchange, body: dict[str, Any], d: Any) -> dict[str, Any]:
    """The message a request is answered with (``d``: its directives)."""
    p, messages = _prompt(body)
    thinking: dict[str, Any] = body["thinking"] if isinstance(body.get("thinking"), dict) else {}
    thinks = thinking.get("type") in ("enabled", "adaptive")
    budget = thinking.get("budget_tokens")
    plan = make_plan(
        p,
        d,
        limit=body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else None,
        reasoning=thinks,
        reasoning_cap=budget if isinstance(budget, int) and budget > 0 else None,
    )
    model = str(body.get("model") or "claude-sonnet-4-5")
    content: list[dict[str, Any]] = []
    if plan.reasoning:
        thought = sim_text(plan.reasoning, p + 1)
        content.append(dict(type="thinking", thinking=thought, signature="sim-signature"))
    call = _tool_call(body, messages)
    if call and not plan.truncated:
        content.append(dict(type="tool_use", id=ex.ident("toolu_"), name=call[0], input=call[1]))
        stop = "tool_use"
    else:
        content.append(dict(type="text", text=sim_text(plan.text, p)))
        stop = "max_tokens" if plan.truncated else "end_turn"
    usage = usage_of(plan, d.cache_write or 0, _long_ttl(body))
    message: dict[str, Any] = dict(id=ex.ident("msg_"), type="message", role="assistant")
    message |= dict(model=model, content=content, stop_reason=stop, stop_sequence=None)
    message["usage"] = usage
    return message


# -- Message Batches -------------------------------------------------------------------------

_BATCHES = "/v1/messages/batches"


def _batches(ex: Exchange, path: str) -> None:
    """Message Batches: create (``in_progress``), retrieve and list (``ended`` from the first
    read on), results (JSONL, one ``succeeded`` message per request, usage at batch tier)."""
    prefix, _, rest = path.rstrip("/").partition(_BATCHES)
    parts = [p for p in rest.split("/") if p]
    store = ex.sim.store
    if ex.method == "POST" and not parts:
        body: dict[str, Any] = ex.body if isinstance(ex.body, dict) else {}
        requests = [r for r in body.get("requests") or [] if isinstance(r, dict)]
        bid = ex.ident("msgbatch_")
        lines = []
        for r in requests:
            params: dict[str, Any] = r["params"] if isinstance(r.get("params"), dict) else {}
            message = _message(ex, params, ex.directives(_user_text(_prompt(params)[1])))
            message["usage"]["service_tier"] = "batch"
            result = {"type": "succeeded", "message": message}
            lines.append({"custom_id": r.get("custom_id"), "result": result})
        now = "2026-12-05T00:00:00Z"
        counts = dict(processing=len(lines), succeeded=0, errored=0, canceled=0, expired=0)
        batch: dict[str, Any] = dict(id=bid, type="message_batch", processing_status="in_progress",
                                     request_counts=counts, created_at=now, ended_at=None,
                                     expires_at="2026-12-06T00:00:00Z", archived_at=None,
                                     cancel_initiated_at=None, results_url=None)  # fmt: skip
        results = "".join(json.dumps(x) + "\n" for x in lines).encode()
        url = f"{ex.sim.url}{prefix}{_BATCHES}/{bid}/results"
        done = dict(batch, processing_status="ended", ended_at=now, results_url=url)
        done["request_counts"] = dict(counts, processing=0, succeeded=len(lines))
        ex.sim._remember(dict(done, _msgbatch=True, _results=results))
        return ex.send_json(batch)
    if ex.method == "GET" and not parts:
        found = [_public(b) for b in list(store.values()) if b.get("_msgbatch")]
        first, last = (found[0]["id"], found[-1]["id"]) if found else (None, None)
        return ex.send_json(dict(data=found, has_more=False, first_id=first, last_id=last))
    stored = store.get(parts[0]) if ex.method == "GET" and parts else None
    if stored is None or not stored.get("_msgbatch") or len(parts) > 2:
        return ex.send_error(404, f"Unknown route {ex.method} {path} (llmspend.sim)")
    if len(parts) == 2 and parts[1] == "results":
        return ex.send_body(stored["_results"], "application/binary")
    return ex.send_json(_public(stored))


def _public(stored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stored.items() if not k.startswith("_")}


def _events(message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """message_start, per block (start, ping after the first, deltas, stop), message_delta
    (stop reason and cumulative usage), message_stop."""
    usage = message["usage"]
    head_usage = dict(usage, output_tokens=1)
    head_usage.pop("output_tokens_details", None)
    head = dict(message, content=[], stop_reason=None, usage=head_usage)
    yield {"type": "message_start", "message": head}
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            start: dict[str, Any] = dict(type="text", text="")
            deltas = [dict(type="text_delta", text=t) for t in text_chunks(block["text"])]
        elif kind == "thinking":
            start = dict(type="thinking", thinking="", signature="")
            deltas = [
                dict(type="thinking_delta", thinking=t) for t in text_chunks(block["thinking"])
            ]
            deltas.append(dict(type="signature_delta", signature=block["signature"]))
        else:
            start = dict(block, input={})
            raw = json.dumps(block["input"])
            deltas = [dict(type="input_json_delta", partial_json=t) for t in text_chunks(raw)]
        yield {"type": "content_block_start", "index": index, "content_block": start}
        if index == 0:
            yield {"type": "ping"}
        for delta in deltas:
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    stop: dict[str, Any] = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    final = {k: v for k, v in usage.items() if k not in ("service_tier", "cache_creation")}
    yield {"type": "message_delta", "delta": stop, "usage": final}
    yield {"type": "message_stop"}
