"""The simulated provider, exercised through the real SDK clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pydantic
import pytest
import requests

from llmspend.sim import SimServer, prompt_tokens, sim_text, tokens_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import google.generativeai as legacy
    from google import genai
    from google.api_core import exceptions as gexc
    from google.genai import errors as genai_errors
    from google.genai import types as gtypes


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def sim_session() -> Iterator[SimServer]:
    with SimServer() as server:
        yield server


@pytest.fixture
def sim(sim_session: SimServer) -> SimServer:
    sim_session.reset()
    return sim_session


@pytest.fixture
def client(sim: SimServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0) as c:
        yield c


@pytest.fixture
def gclient(sim: SimServer) -> genai.Client:
    return genai.Client(api_key="k", http_options=gtypes.HttpOptions(base_url=sim.url))


@pytest.fixture
def legacy_model(sim: SimServer) -> Any:
    legacy.configure(api_key="k", transport="rest", client_options={"api_endpoint": sim.url})
    return legacy.GenerativeModel("gemini-1.5-flash")


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def expected(p: int, *, reasoning: bool = False) -> tuple[int, int]:
    """(visible output, reasoning) tokens by the documented formulas."""
    return 20 + p % 40, (32 + p % 32 if reasoning else 0)


class Pet(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]
    vaccinated: bool


def wait_for(check: Callable[[], object], what: str, limit: float = 60.0) -> None:
    """Poll ``check`` until it is true; fail after a generous ``limit`` (seconds)."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def sim_threads(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"llmspend-sim-{port}")]


# --------------------------------------------------------------------------- OpenAI chat


def test_chat_usage_text_and_ids(client: openai.OpenAI, sim: SimServer) -> None:
    r1 = client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
    p = prompt_tokens(["hello"])
    t, _ = expected(p)
    assert p == 3 + 4 + 2
    assert r1.usage is not None
    assert (r1.usage.prompt_tokens, r1.usage.completion_tokens) == (p, t)
    assert r1.usage.total_tokens == p + t
    assert r1.usage.prompt_tokens_details and r1.usage.prompt_tokens_details.cached_tokens == 0
    details = r1.usage.completion_tokens_details
    assert details and details.reasoning_tokens == 0 and details.accepted_prediction_tokens == 0
    content = r1.choices[0].message.content
    assert content == sim_text(t, p) and len(content) == 4 * t
    assert r1.model == "gpt-4o-mini" and r1.system_fingerprint and r1.created > 0
    assert r1.choices[0].finish_reason == "stop"
    r2 = client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
    assert r2.id != r1.id and r2.choices[0].message.content == content
    assert sim.request_count == 2
    method, path, body, headers = sim.requests[0]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert body["messages"] == user("hello") and headers["authorization"] == "Bearer x"


def test_chat_reasoning_limits_and_directives(client: openai.OpenAI) -> None:
    msgs = [{"role": "system", "content": "be brief"}, *user("think")]
    r = client.chat.completions.create(model="o4-mini", messages=msgs)
    p = prompt_tokens(["be brief", "think"])
    t, rr = expected(p, reasoning=True)
    assert r.usage and r.usage.completion_tokens == t + rr
    assert (
        r.usage.completion_tokens_details
        and r.usage.completion_tokens_details.reasoning_tokens == rr
    )
    assert len(r.choices[0].message.content or "") == 4 * t

    capped = client.chat.completions.create(model="gpt-4o", messages=user("hi"), max_tokens=5)
    assert capped.usage and capped.usage.completion_tokens == 5
    assert capped.choices[0].finish_reason == "length"

    prompt = "x #sim:tokens=1000 #sim:cached=512 #sim:completion=7 #sim:reasoning=3"
    r = client.chat.completions.create(model="gpt-4o", messages=user(prompt), n=2)
    assert r.usage and (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 2 * 10)
    assert r.usage.prompt_tokens_details and r.usage.prompt_tokens_details.cached_tokens == 512
    assert len(r.choices) == 2 and len(r.choices[0].message.content or "") == 28


def test_chat_stream_with_and_without_usage(client: openai.OpenAI) -> None:
    p = prompt_tokens(["stream me"])
    t, _ = expected(p)
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=user("stream me"), stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == sim_text(t, p)

    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=user("stream me"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == t and chunks[-1].usage.prompt_tokens == p
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stream_helper_and_parse(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o", messages=user("hi")) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert {"chunk", "content.delta", "content.done"} <= kinds
    p = prompt_tokens(["hi"])
    assert final.choices[0].message.content == sim_text(expected(p)[0], p)

    parsed = client.chat.completions.parse(
        model="gpt-4o", messages=user("a pet"), response_format=Pet
    )
    pet = parsed.choices[0].message.parsed
    assert isinstance(pet, Pet) and pet.tags == ["sim"] and pet.age == 1
    assert parsed.usage and parsed.usage.prompt_tokens == prompt_tokens(["a pet"], 8)

    with client.chat.completions.stream(
        model="gpt-4o", messages=user("a pet"), response_format=Pet
    ) as s:
        for _ in s:
            pass
        assert isinstance(s.get_final_completion().choices[0].message.parsed, Pet)


def test_chat_tool_call_round_trip(client: openai.OpenAI) -> None:
    tools: Any = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"],
                },
            },
        }
    ]
    first = client.chat.completions.create(model="gpt-4o", messages=user("weather?"), tools=tools)
    call = (first.choices[0].message.tool_calls or [])[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and json.loads(call.function.arguments) == {"city": "sim"}
    assert first.usage and first.usage.prompt_tokens == prompt_tokens(["weather?"], 8)
    history: Any = [
        *user("weather?"),
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = client.chat.completions.create(model="gpt-4o", messages=history, tools=tools)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    streamed = list(
        client.chat.completions.create(model="gpt-4o", messages=user("w"), tools=tools, stream=True)
    )
    args = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in streamed
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"city": "sim"}


def test_async_chat_and_stream(sim: SimServer) -> None:
    async def run() -> tuple[int, str]:
        async with openai.AsyncOpenAI(
            api_key="x", base_url=sim.openai_base_url, max_retries=0
        ) as c:
            r = await c.chat.completions.create(model="gpt-4o-mini", messages=user("hello"))
            s = await c.chat.completions.create(
                model="gpt-4o-mini", messages=user("hello"), stream=True
            )
            text = "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
            assert r.usage
            return r.usage.total_tokens, text

    total, text = asyncio.run(run())
    p = prompt_tokens(["hello"])
    assert total == p + expected(p)[0] and len(text) == 4 * expected(p)[0]


def test_raw_and_streaming_response(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("hi"))
    assert (
        raw.headers["x-request-id"].startswith("req_")
        and raw.http_request.url.path == "/v1/chat/completions"
    )
    assert raw.parse().usage is not None
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=user("hi")
    ) as resp:
        assert resp.headers["content-type"] == "application/json"
        assert resp.parse().choices[0].message.content


# --------------------------------------------------------------------------- OpenAI other endpoints


def test_responses_create_stream_parse_retrieve(client: openai.OpenAI) -> None:
    r = client.responses.create(model="o4-mini", input="hi", instructions="terse")
    p = prompt_tokens(["terse", "hi"])
    t, rr = expected(p, reasoning=True)
    assert r.usage and (r.usage.input_tokens, r.usage.output_tokens) == (p, t + rr)
    assert r.usage.output_tokens_details.reasoning_tokens == rr
    assert r.usage.input_tokens_details.cached_tokens == 0 and r.usage.total_tokens == p + t + rr
    assert [o.type for o in r.output] == ["reasoning", "message"] and len(r.output_text) == 4 * t
    assert client.responses.retrieve(r.id).output_text == r.output_text

    events = [
        e.type
        for e in client.responses.create(model="gpt-4o", input="hi #sim:cached=3", stream=True)
    ]
    assert events[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert events[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" in events

    with client.responses.stream(model="gpt-4o", input="a pet", text_format=Pet) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, Pet) and final.usage and final.usage.input_tokens > 0
    parsed = client.responses.parse(model="gpt-4o", input="a pet", text_format=Pet)
    assert isinstance(parsed.output_parsed, Pet)

    short = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=16)
    assert short.status == "incomplete" and short.usage and short.usage.output_tokens == 16


def test_embeddings(client: openai.OpenAI) -> None:
    e = client.embeddings.create(model="text-embedding-3-small", input=["hello", "hi there"])
    assert [len(d.embedding) for d in e.data] == [1536, 1536]
    assert (
        e.usage.prompt_tokens == tokens_of("hello") + tokens_of("hi there") == e.usage.total_tokens
    )
    floats = client.embeddings.create(
        model="text-embedding-3-large", input="hello", encoding_format="float"
    )
    assert len(floats.data[0].embedding) == 3072
    small = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=8)
    assert (
        small.data[0].embedding == pytest.approx(e.data[0].embedding[:8], abs=1)
        and len(small.data[0].embedding) == 8
    )
    assert abs(sum(v * v for v in floats.data[0].embedding) - 1) < 1e-3


def test_images_and_audio(client: openai.OpenAI) -> None:
    img = client.images.generate(
        model="gpt-image-1", prompt="a cat", quality="low", size="1024x1536", n=2
    )
    assert img.usage and img.usage.input_tokens == tokens_of("a cat")
    assert img.usage.output_tokens == 2 * 408 and img.usage.input_tokens_details.text_tokens == 2
    assert img.data and base64.b64decode(img.data[0].b64_json or "").startswith(b"\x89PNG")
    assert client.images.generate(model="dall-e-3", prompt="a cat").usage is None

    audio = b"RIFF" + b"\x00" * 996
    tr = client.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", audio), prompt="names"
    )
    usage: Any = tr.usage
    audio_tokens = (len(audio) + 31) // 32
    assert usage.input_token_details.audio_tokens == audio_tokens
    assert usage.input_tokens == audio_tokens + tokens_of("names")
    assert (
        usage.output_tokens == 20 + usage.input_tokens % 40
        and len(tr.text) == 4 * usage.output_tokens
    )
    whisper: Any = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
    assert whisper.usage.type == "duration"

    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello there")
    assert (
        speech.content.startswith(b"ID3")
        and speech.response.headers["content-type"] == "audio/mpeg"
    )
    assert [m.id for m in client.models.list()][:2] == ["gpt-4o", "gpt-4o-mini"]


def test_azure_openrouter_xai(sim: SimServer) -> None:
    az = openai.AzureOpenAI(
        azure_endpoint=sim.url, api_version="2024-10-21", api_key="x", max_retries=0
    )
    r = az.chat.completions.create(model="my-deployment", messages=user("hello"))
    assert r.model == "gpt-4o-mini"
    path = sim.requests[-1].path
    assert path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert az.chat.completions.create(model="gpt-4.1", messages=user("x")).model == "gpt-4.1"
    sim.set_behavior(azure_deployments={"prod": "o3-mini"})
    r = az.chat.completions.create(model="prod", messages=user("hello"))
    assert r.model == "o3-mini" and r.usage and r.usage.completion_tokens_details
    assert (r.usage.completion_tokens_details.reasoning_tokens or 0) > 0
    assert az.embeddings.create(model="emb", input="x").model == "text-embedding-3-small"

    router = openai.OpenAI(api_key="x", base_url=sim.openrouter_base_url, max_retries=0)
    usage: Any = router.chat.completions.create(model="openai/gpt-4o", messages=user("hello")).usage
    p = prompt_tokens(["hello"])
    assert usage.cost == pytest.approx(p * 1e-6 + expected(p)[0] * 2e-6)

    xai = openai.OpenAI(
        api_key="x",
        base_url=sim.openai_base_url,
        max_retries=0,
        default_headers={"X-Sim-Provider": "xai"},
    )
    xu: Any = xai.chat.completions.create(model="grok-3-mini", messages=user("hello")).usage
    t, rr = expected(p, reasoning=True)
    assert (
        xu.completion_tokens,
        xu.total_tokens,
        xu.completion_tokens_details.reasoning_tokens,
    ) == (t, p + t + rr, rr)


# --------------------------------------------------------------------------- OpenAI failures


def test_openai_errors(client: openai.OpenAI, sim: SimServer) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=user("#sim:error=429"))
    assert info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="gpt-4o", input="x #sim:error=500", stream=True)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(
            model="e", input="x", extra_headers={"X-Sim-Directives": "error=404"}
        )
    sim.set_behavior(error=400, error_times=1)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=user("x"))
    assert client.chat.completions.create(model="gpt-4o", messages=user("x")).choices
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=user("#sim:cut=0"))


def test_openai_cut_stream(client: openai.OpenAI) -> None:
    got: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            model="gpt-4o", messages=user("#sim:cut=3"), stream=True
        ):
            got.append(chunk)
    assert len(got) == 3

    async def run() -> int:
        async with openai.AsyncOpenAI(api_key="x", base_url=client.base_url, max_retries=0) as c:
            n = 0
            with pytest.raises(openai.APIConnectionError):
                async for _ in await c.responses.create(
                    model="gpt-4o", input="#sim:cut=2", stream=True
                ):
                    n += 1
            return n

    assert asyncio.run(run()) == 2


def test_openai_delay_timeout_and_hang(client: openai.OpenAI, sim: SimServer) -> None:
    # A timeout (not an answer) shows the client gave up while the server was still waiting:
    # the delay is the longest there is, and the server stops waiting once the client leaves.
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(
            model="gpt-4o", messages=user("#sim:delay=30")
        )
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.2).chat.completions.create(
            model="gpt-4o", messages=user("#sim:hang")
        )
    r = client.chat.completions.create(model="gpt-4o", messages=user("#sim:delay=0.1"))
    assert r.choices and sim.request_count == 3


def test_keep_alive_reuses_connection(client: openai.OpenAI, sim: SimServer) -> None:
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=user("x"))
    client.embeddings.create(model="text-embedding-3-small", input="x")
    assert sim.request_count == 4 and sim.connection_count == 1


# --------------------------------------------------------------------------- google-genai


def test_genai_generate_stream_and_usage(gclient: genai.Client, sim: SimServer) -> None:
    r = gclient.models.generate_content(model="gemini-2.5-flash", contents="hello")
    p = prompt_tokens(["hello"])
    t, rr = expected(p, reasoning=True)
    u = r.usage_metadata
    assert u and (u.prompt_token_count, u.candidates_token_count, u.thoughts_token_count) == (
        p,
        t,
        rr,
    )
    assert u.total_token_count == p + t + rr and u.cached_content_token_count is None
    assert r.text == sim_text(t, p) and r.model_version == "gemini-2.5-flash"
    assert sim.requests[-1].path == "/v1/models/gemini-2.5-flash:generateContent"

    chunks = list(
        gclient.models.generate_content_stream(model="gemini-2.0-flash", contents="hello")
    )
    assert sim.requests[-1].path.endswith(":streamGenerateContent?alt=sse")
    counts = [c.usage_metadata.candidates_token_count or 0 for c in chunks if c.usage_metadata]
    assert counts == sorted(counts) and counts[-1] == t and len(chunks) > 2
    last = chunks[-1].usage_metadata
    assert last and last.thoughts_token_count is None and last.total_token_count == p + t
    assert "".join(c.text or "" for c in chunks) == sim_text(t, p)

    config = gtypes.GenerateContentConfig(
        max_output_tokens=10, thinking_config=gtypes.ThinkingConfig(thinking_budget=0)
    )
    r = gclient.models.generate_content(
        model="gemini-2.5-pro", contents="#sim:cached=4 hi", config=config
    )
    u = r.usage_metadata
    assert u and (
        u.candidates_token_count,
        u.thoughts_token_count,
        u.cached_content_token_count,
    ) == (10, None, 4)
    assert r.candidates and r.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS


def test_genai_async_chat_embed_count(gclient: genai.Client) -> None:
    async def run() -> tuple[Any, int]:
        r = await gclient.aio.models.generate_content(model="gemini-2.5-pro", contents="hello")
        chunks = [
            c
            async for c in await gclient.aio.models.generate_content_stream(
                model="gemini-2.5-pro", contents="hello"
            )
        ]
        return r.usage_metadata, len(chunks)

    usage, n = asyncio.run(run())
    p = prompt_tokens(["hello"])
    assert usage.thoughts_token_count == 32 + p % 32 and n > 2

    chat = gclient.chats.create(model="gemini-2.0-flash")
    first = chat.send_message("hi")
    second = chat.send_message("again")
    assert first.usage_metadata and first.usage_metadata.prompt_token_count == prompt_tokens(["hi"])
    assert second.usage_metadata
    assert second.usage_metadata.prompt_token_count == prompt_tokens(
        ["hi", first.text or "", "again"]
    )

    e = gclient.models.embed_content(model="gemini-embedding-001", contents=["hi", "there"])
    assert e.embeddings and [len(x.values or []) for x in e.embeddings] == [3072, 3072]
    count = gclient.models.count_tokens(model="gemini-2.0-flash", contents="hello")
    assert count.total_tokens == p

    pet = gclient.models.generate_content(
        model="gemini-2.0-flash",
        contents="a pet",
        config=gtypes.GenerateContentConfig(
            response_mime_type="application/json", response_schema=Pet
        ),
    )
    assert isinstance(pet.parsed, Pet)


def test_genai_automatic_function_calling_makes_two_requests(
    gclient: genai.Client, sim: SimServer
) -> None:
    calls: list[tuple[int, str]] = []

    def lookup(count: int, city: str) -> str:
        """Look something up."""
        calls.append((count, city))
        return "ok"

    r = gclient.models.generate_content(
        model="gemini-2.0-flash",
        contents="look it up",
        config=gtypes.GenerateContentConfig(tools=[lookup]),
    )
    assert calls == [(1, "sim")] and sim.request_count == 2
    assert r.text and r.usage_metadata
    last_body = sim.requests[-1].body
    assert "functionResponse" in last_body["contents"][-1]["parts"][0]


def test_genai_errors_cut_and_timeout(gclient: genai.Client) -> None:
    with pytest.raises(genai_errors.ClientError) as info:
        gclient.models.generate_content(model="gemini-2.0-flash", contents="#sim:error=429")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(genai_errors.ServerError):
        list(
            gclient.models.generate_content_stream(
                model="gemini-2.0-flash", contents="#sim:error=503"
            )
        )
    got: list[Any] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for chunk in gclient.models.generate_content_stream(
            model="gemini-2.0-flash", contents="#sim:cut=2"
        ):
            got.append(chunk)
    assert len(got) == 2
    with pytest.raises(httpx2.TimeoutException):
        gclient.models.generate_content(
            model="gemini-2.0-flash",
            contents="#sim:delay=2",
            config=gtypes.GenerateContentConfig(http_options=gtypes.HttpOptions(timeout=200)),
        )


# --------------------------------------------------------------------------- google-generativeai


def test_legacy_generate_stream_chat_embed(legacy_model: Any, sim: SimServer) -> None:
    r = legacy_model.generate_content("hello")
    p = prompt_tokens(["hello"])
    t, _ = expected(p)
    assert (r.usage_metadata.prompt_token_count, r.usage_metadata.candidates_token_count) == (p, t)
    assert r.text == sim_text(t, p)
    assert sim.requests[-1].path.startswith("/v1beta/models/gemini-1.5-flash:generateContent?")

    stream = legacy_model.generate_content("hello", stream=True)
    pieces = [c.text for c in stream]
    assert "".join(pieces) == sim_text(t, p) and len(pieces) > 2
    assert stream.usage_metadata.total_token_count == p + t
    assert "alt=sse" not in sim.requests[-1].path  # the legacy REST stream is one JSON array

    chat = legacy_model.start_chat()
    first = chat.send_message("hi")
    second = chat.send_message("again")
    assert second.usage_metadata.prompt_token_count == prompt_tokens(["hi", first.text, "again"])

    single = legacy.embed_content(model="models/text-embedding-004", content="hello")
    assert len(single["embedding"]) == 768
    batch: Any = legacy.embed_content(
        model="models/text-embedding-004", content=["a", "b"], output_dimensionality=4
    )
    assert [len(v) for v in batch["embedding"]] == [4, 4]
    assert legacy_model.count_tokens("hello").total_tokens == p


def test_legacy_errors_and_cut(legacy_model: Any) -> None:
    with pytest.raises(gexc.TooManyRequests):
        legacy_model.generate_content("#sim:error=429")
    with pytest.raises(gexc.InternalServerError):
        legacy_model.generate_content("#sim:error=500", stream=True)
    with pytest.raises(gexc.Forbidden):
        legacy.embed_content(model="models/text-embedding-004", content="#sim:error=403")
    got: list[Any] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in legacy_model.generate_content("#sim:cut=2", stream=True):
            got.append(chunk)
    assert len(got) == 2  # two array elements, then the connection drops


def test_legacy_async_needs_grpc(legacy_model: Any, sim: SimServer) -> None:
    """With transport="rest" the async call sends the request synchronously, then fails."""
    with pytest.raises(TypeError, match="await"):
        asyncio.run(legacy_model.generate_content_async("hi"))
    assert sim.request_count == 1


# --------------------------------------------------------------------------- lifecycle, API, CLI


def test_start_stop_many_times_without_leaks() -> None:
    for _ in range(5):
        server = SimServer().start()
        port = server.port
        with openai.OpenAI(api_key="x", base_url=server.openai_base_url, max_retries=0) as c:
            c.chat.completions.create(
                model="gpt-4o", messages=user("x")
            )  # leaves an idle keep-alive (the server keeps one open for 120 s)
            server.stop(timeout=60)  # returns once every thread is joined
        assert sim_threads(port) == []  # so the idle keep-alive was closed, not waited out
    server.stop()  # idempotent


def test_stop_is_quick_while_a_request_hangs() -> None:
    server = SimServer().start()
    errors: list[BaseException] = []

    def call() -> None:
        # no client timeout comes first: the hang ends at its 30 s limit, the timeout is 120 s
        c = openai.OpenAI(api_key="x", base_url=server.openai_base_url, max_retries=0, timeout=120)
        try:
            c.chat.completions.create(model="gpt-4o", messages=user("#sim:hang"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: server.request_count == 1, "the hanging request")
    server.stop(timeout=60)
    thread.join(60)
    # cut by stop(), not answered when the hang ran out nor ended by the client's timeout
    assert not thread.is_alive() and len(errors) == 1
    assert isinstance(errors[0], openai.APIConnectionError)
    assert not isinstance(errors[0], openai.APITimeoutError)
    assert sim_threads(server.port) == []


def test_api_surface(sim: SimServer) -> None:
    assert sim.url.startswith("http://127.0.0.1:") and sim.openai_base_url == sim.url + "/v1"
    with pytest.raises(ValueError, match="loopback"):
        SimServer(host="0.0.0.0")
    with pytest.raises(TypeError):
        sim.set_behavior(nonsense=1)
    sim.set_behavior(thoughts=5, hang_limit=1)
    assert sim.behavior.reasoning == 5
    sim.set_behavior(thoughts=None)
    assert sim.behavior.reasoning is None
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"200 OK" in sock.recv(4096)
    assert sim.request_count == 1 and sim.requests[0].method == "GET"
    sim.reset()
    assert sim.request_count == 0 and sim.requests == []


def test_cli_and_module_entry_points() -> None:
    import argparse

    from llmspend.cli import sim as cli_sim

    parser = argparse.ArgumentParser()
    cli_sim.register(parser.add_subparsers())
    args = parser.parse_args(["sim", "serve", "--port", "0"])
    assert args.func is cli_sim.run_serve and (args.host, args.port) == ("127.0.0.1", 0)

    proc, lines = spawn_sim(MODULE)
    try:
        url = lines.get(timeout=LIMIT).split()[3]
        assert url.startswith("http://127.0.0.1:")
        c = openai.OpenAI(api_key="x", base_url=url + "/v1", max_retries=0)
        assert c.chat.completions.create(model="gpt-4o", messages=user("x")).choices
        proc.send_signal(signal.SIGINT)
        assert proc.wait(LIMIT) == 0
    finally:
        end(proc)


LIMIT = 120.0
"""Generous: how long a subprocess may take to start or stop on a loaded machine."""
MODULE = [sys.executable, "-m", "llmspend.sim", "--port", "0"]
CLI = [sys.executable, "-m", "llmspend", "sim", "serve", "--port", "0"]


def spawn_sim(cmd: list[str]) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    """Start the simulator; its stdout lines arrive on the queue ("" at the end)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.parametrize("cmd", [MODULE, CLI], ids=["module", "cli"])
def test_sigint_at_any_moment_stops_the_server(cmd: list[str]) -> None:
    for _ in range(3 if cmd is MODULE else 1):  # at once after the banner: the server stops
        proc, lines = spawn_sim(cmd)
        try:
            assert "listening on http://127.0.0.1:" in lines.get(timeout=LIMIT)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(LIMIT) == 0
        finally:
            end(proc)
    for _ in range(2):  # at once after spawning: whatever it was doing, the process ends
        proc, _lines = spawn_sim(cmd)
        try:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(LIMIT) in (0, 1, 130, -signal.SIGINT)  # 1: during start-up
        finally:
            end(proc)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("where", ["before the thread runs", "after it starts", "at the banner"])
def test_serve_returns_and_leaves_no_thread_whenever_ctrl_c_comes(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspend.sim import server as server_mod

    class Thread(threading.Thread):
        def start(self) -> None:
            if where == "after it starts":
                super().start()
            if where != "at the banner":
                raise KeyboardInterrupt

    def banner(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    fake = types.SimpleNamespace(Thread=Thread, Event=threading.Event, Lock=threading.Lock)
    monkeypatch.setattr(server_mod, "threading", fake)
    monkeypatch.setattr(server_mod, "print", banner, raising=False)
    before = set(threading.enumerate())
    outcome: list[str] = []

    def run() -> None:
        try:
            server_mod.serve("127.0.0.1", 0)
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(f"raised {exc!r}")

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(LIMIT)
    assert outcome == ["returned"]
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("llmspend-sim-")]
    assert left == []
