"""The OpenAI API's jobs and files in the simulator: moderations, fine-tuning jobs, videos,
files (upload, content) and batches (create, retrieve, list).

A batch is answered at once: its result lines are chat completions computed as
:mod:`llmspend.sim.openai_api` answers them, its output file stored beside the inputs. It
is ``validating`` when created and ``completed`` when retrieved or listed; it reports its
``usage`` only when created with ``metadata={"sim_usage": "true"}`` (as newer batches do).
``ctx`` is the request context of :mod:`llmspend.sim.openai_api`.
"""

from __future__ import annotations

import json
from typing import Any

from .exchange import Exchange
from .formulas import make_plan, prompt_tokens, sim_text

__all__ = ["files_and_batches", "fine_tuning", "moderations", "multipart", "text_of", "videos"]


def text_of(content: Any) -> str:
    """The text of a message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict)]
        return "\n".join(
            text_of(p.get("text") or p.get("content") or p.get("output")) for p in parts
        )
    return "" if content is None else json.dumps(content)


def multipart(ex: Exchange) -> dict[str, bytes]:
    boundary = ex.headers.get("content-type", "").partition("boundary=")[2].strip('"; ').encode()
    fields: dict[str, bytes] = {}
    for part in ex.raw.split(b"--" + boundary)[1:] if boundary else []:
        head, _, data = part.partition(b"\r\n\r\n")
        name = head.partition(b'name="')[2].partition(b'"')[0].decode()
        if name:
            fields[name] = data[:-2] if data.endswith(b"\r\n") else data
    return fields


def moderations(ctx: Any) -> None:
    results = [{"flagged": False, "categories": {}, "category_scores": {}}]
    ctx.ex.send_json({"id": ctx.ex.ident("modr-"), "model": ctx.model("omni-moderation-latest"),
                      "results": results})  # fmt: skip


def _job(ctx: Any, prefix: str, kind: str, **fields: Any) -> None:
    """A job accepted (fine-tuning, video): its id and ``queued`` status, no usage."""
    job = dict(id=ctx.ex.ident(prefix), object=kind, created_at=ctx.created, status="queued")
    ctx.ex.send_json(job | fields)


def fine_tuning(ctx: Any) -> None:
    b = ctx.body
    _job(ctx, "ftjob-", "fine_tuning.job", model=b.get("model"),
         training_file=b.get("training_file"),
         fine_tuned_model=None, finished_at=None, organization_id="org-sim", result_files=[],
         trained_tokens=None, validation_file=None, seed=0, error=None,
         hyperparameters={"n_epochs": "auto"})  # fmt: skip


def videos(ctx: Any) -> None:
    _job(ctx, "video_", "video", model=ctx.body.get("model") or "sora-2", progress=0,
         seconds=str(ctx.body.get("seconds") or "4"), size="720x1280")  # fmt: skip


def _batch_line(ctx: Any, line: dict[str, Any]) -> dict[str, Any]:
    """One batch result line: a chat completion answered as ``_chat`` would."""
    body = line.get("body") or {}
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    d = ctx.ex.directives(text_of(user.get("content")))
    p = prompt_tokens([text_of(m.get("content")) for m in messages])
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    plan = make_plan(p, d, limit=limit)
    model = str(body.get("model") or "gpt-4o-mini")
    message = dict(role="assistant", content=sim_text(plan.text, p), refusal=None)
    choice = dict(index=0, message=message, logprobs=None, finish_reason="stop")
    reply = dict(
        id=ctx.ex.ident("chatcmpl-"),
        object="chat.completion",
        created=ctx.created,
        model=model,
        choices=[choice],
        usage=ctx.usage(plan),
        service_tier="batch",
    )
    response = {"status_code": 200, "request_id": ctx.ex.ident("req_"), "body": reply}
    return {"id": ctx.ex.ident("batch_req_"), "custom_id": line.get("custom_id"),
            "response": response, "error": None}  # fmt: skip


def files_and_batches(ctx: Any, parts: list[str]) -> None:
    """Files (upload, content) and batches (create, retrieve, list), completed at once."""
    ex, sim = ctx.ex, ctx.ex.sim
    if ex.method == "POST" and parts == ["files"]:
        form = multipart(ex)
        fid = ex.ident("file-")
        data = form.get("file", b"")
        purpose = form.get("purpose", b"").decode()
        meta = dict(id=fid, object="file", bytes=len(data), created_at=ctx.created,
                    filename="input.jsonl", purpose=purpose, status="processed")  # fmt: skip
        sim._remember(dict(meta, _content=data))
        return ex.send_json(meta)
    if ex.method == "GET" and len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
        stored = sim.store.get(parts[1])
        if stored is None or "_content" not in stored:
            return ex.send_error(404, f"No such File object: {parts[1]}")
        return ex.send_body(stored["_content"], "application/octet-stream")
    if ex.method == "POST" and parts == ["batches"]:
        source = sim.store.get(str(ctx.body.get("input_file_id")))
        if source is None:
            return ex.send_error(404, "input_file_id not found")
        lines = [json.loads(x) for x in source["_content"].splitlines() if x.strip()]
        results = [_batch_line(ctx, line) for line in lines]
        out = "\n".join(json.dumps(r) for r in results).encode() + b"\n"
        out_id = ex.ident("file-")
        sim._remember(dict(id=out_id, object="file", purpose="batch_output", _content=out))
        total = dict(input_tokens=0, output_tokens=0, total_tokens=0)
        for r in results:
            u = r["response"]["body"]["usage"]
            total["input_tokens"] += u["prompt_tokens"]
            total["output_tokens"] += u["completion_tokens"]
            total["total_tokens"] += u["total_tokens"]
        metadata = ctx.body.get("metadata") or {}
        batch = dict(id=ex.ident("batch_"), object="batch", endpoint=ctx.body.get("endpoint"),
                     input_file_id=source["id"], completion_window="24h", status="validating",
                     created_at=ctx.created, output_file_id=None, error_file_id=None,
                     metadata=metadata, errors=None)  # fmt: skip
        done = dict(batch, status="completed", output_file_id=out_id, completed_at=ctx.created)
        done["request_counts"] = {"total": len(results), "completed": len(results), "failed": 0}
        if metadata.get("sim_usage") == "true":  # newer batches report their usage
            done["usage"] = total
        sim._remember(dict(done, _batch=True))
        return ex.send_json(batch)
    if ex.method == "GET" and parts == ["batches"]:
        batches = [{k: v for k, v in b.items() if k != "_batch"} for b in sim.store.values()
                   if b.get("_batch")]  # fmt: skip
        return ex.send_json({"object": "list", "data": batches, "has_more": False})
    if ex.method == "GET" and len(parts) == 2 and parts[0] == "batches":
        stored = sim.store.get(parts[1])
        if stored is None or not stored.get("_batch"):
            return ex.send_error(404, f"No such Batch: {parts[1]}")
        return ex.send_json({k: v for k, v in stored.items() if k != "_batch"})
    return ex.send_error(404, f"Unknown route {ex.method} /{'/'.join(parts)} (llmspend.sim)")
