"""The openai SDK plugin, streamed entry points: real SDK clients against the simulator.

The caller must see exactly the chunks it would see without llmspend; each stream is
recorded once, when it ends, fails, is closed, or is collected.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

import llmspend
from llmspend.providers.openai_calls import LEDGER
from llmspend.sim import SimServer
from llmspend.sim.openai_api import _response_events
from llmspend.sim.server import iter_sse

_VOLATILE = {"id", "created", "created_at"}


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client(sim: SimServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def aclient(sim: SimServer, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def scrub(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


def dumps(items: Any) -> list[Any]:
    return [scrub(i.model_dump()) for i in items]


def only_row(tracker: Any) -> dict[str, Any]:
    recorded = list(tracker.recent)
    assert len(recorded) == 1, recorded
    return recorded[0]


def wait_rows(tracker: Any, n: int, timeout: float = 3.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(tracker.recent) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(tracker.recent)


def est(text: str) -> int:
    return (len(text.encode()) + 3) // 4


def chat_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def install(tmp_path: Any, name: str = "s") -> Any:
    return llmspend.install(f"sqlite:///{tmp_path / (name + '.sqlite')}", org="acme")


# -- chat streams: the caller sees the same chunks ----------------------------------------------


def test_estimate_mode_same_chunks_and_estimated_usage(fresh_sim: SimServer, tmp_path: Any) -> None:
    c = client(fresh_sim)

    def run() -> list[Any]:
        stream = c.chat.completions.create(
            model="gpt-4o-mini", messages=user("tell me"), stream=True
        )
        assert isinstance(stream, openai.Stream)
        return list(stream)

    plain = run()
    tracker = install(tmp_path)
    try:
        hooked = run()
    finally:
        llmspend.uninstall()
    assert dumps(plain) == dumps(hooked)
    assert "stream_options" not in fresh_sim.requests[-1].body  # generic host: nothing injected
    row = only_row(tracker)
    assert (row["status"], row["streamed"], row["usage_estimated"]) == ("ok", True, True)
    assert row["output_tokens"] == est(chat_text(hooked))
    assert row["input_tokens"] > 0 and row["cost_nanos"] > 0


@pytest.mark.parametrize("mode", ["inject", "auto-known-host"])
def test_injected_usage_chunk_is_hidden(
    fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    if mode == "inject":
        monkeypatch.setenv("LLMSPEND_STREAM_USAGE", "inject")
        c = client(fresh_sim)
    else:  # an api.openai.com client, its requests sent to the simulator
        c = openai.OpenAI(
            api_key="x", max_retries=0, http_client=httpx2.Client(transport=_ToSim(fresh_sim))
        )
    reference = list(
        c.chat.completions.create(
            model="gpt-4o-mini", messages=user("hi"), stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    expected = reference[-1].usage
    plain = list(c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True))
    tracker = install(tmp_path)
    try:
        hooked = list(
            c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True)
        )
    finally:
        llmspend.uninstall()
    assert fresh_sim.requests[-1].body["stream_options"] == {"include_usage": True}
    assert dumps(plain) == dumps(hooked)
    assert all(chunk.choices for chunk in hooked)
    row = only_row(tracker)
    assert row["usage_estimated"] is False and row["status"] == "ok"
    assert (row["input_tokens"], row["output_tokens"]) == (
        expected.prompt_tokens, expected.completion_tokens,
    )  # fmt: skip


def test_injection_merges_and_never_mutates_the_callers_options(
    installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_STREAM_USAGE", "inject")
    options = {"include_obfuscation": False}
    messages = user("hi")
    list(
        client(fresh_sim).chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options=options
        )
    )
    assert options == {"include_obfuscation": False} and messages == user("hi")
    sent = fresh_sim.requests[-1].body["stream_options"]
    assert sent == {"include_obfuscation": False, "include_usage": True}
    assert only_row(installed)["usage_estimated"] is False


def test_user_include_usage_chunk_is_kept(installed: Any, fresh_sim: SimServer) -> None:
    chunks = list(
        client(fresh_sim).chat.completions.create(
            model="o3-mini", messages=user("hi"), stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    row = only_row(installed)
    assert row["input_tokens"] == last.usage.prompt_tokens
    assert row["output_tokens"] == last.usage.completion_tokens
    assert row["reasoning_tokens"] == last.usage.completion_tokens_details.reasoning_tokens > 0
    assert row["usage_estimated"] is False and row["cost_nanos"] > 0


@pytest.mark.parametrize("mode", ["estimate", "inject"])
def test_async_chat_stream_same_chunks(
    fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("LLMSPEND_STREAM_USAGE", mode)

    async def run() -> list[Any]:
        stream = await aclient(fresh_sim).chat.completions.create(
            model="gpt-4o-mini", messages=user("async"), stream=True
        )
        assert isinstance(stream, openai.AsyncStream)
        return [chunk async for chunk in stream]

    plain = asyncio.run(run())
    tracker = install(tmp_path)
    try:
        hooked = asyncio.run(run())
    finally:
        llmspend.uninstall()
    assert dumps(plain) == dumps(hooked)
    row = only_row(tracker)
    assert row["usage_estimated"] is (mode == "estimate")
    assert row["output_tokens"] == est(chat_text(hooked)) and row["status"] == "ok"


def test_chat_stream_helpers(
    installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_STREAM_USAGE", "inject")
    with client(fresh_sim).chat.completions.stream(
        model="gpt-4o-mini", messages=user("helper")
    ) as stream:
        final = stream.get_final_completion()
    assert final.usage is None  # as without llmspend: the injected chunk is hidden

    async def go() -> Any:
        async with aclient(fresh_sim).chat.completions.stream(
            model="gpt-4o-mini", messages=user("helper")
        ) as astream:
            return await astream.get_final_completion()

    asyncio.run(go())
    rows = list(installed.recent)
    assert len(rows) == 2
    for row in rows:
        assert row["status"] == "ok" and row["usage_estimated"] is False
        assert row["output_tokens"] == est(final.choices[0].message.content or "")


# -- responses streams ------------------------------------------------------------------------


def test_responses_streams_use_the_final_event(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    events = list(c.responses.create(model="o3-mini", input="hi", stream=True))
    last = list(
        c.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=16, stream=True)
    )
    assert last[-1].type == "response.incomplete"
    incomplete = last[-1].response

    async def go() -> Any:
        async with aclient(fresh_sim).responses.stream(model="gpt-4o-mini", input="x") as s:
            return await s.get_final_response()

    with c.responses.stream(model="gpt-4o-mini", input="hi") as helper:
        helper_final = helper.get_final_response()

    async_final = asyncio.run(go())
    first, second, helper_row, async_row = installed.recent
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert incomplete.status == "incomplete"
    pairs = (
        (first, final), (second, incomplete), (helper_row, helper_final), (async_row, async_final),
    )  # fmt: skip
    for row, resp in pairs:
        assert row["api"] == "responses" and row["streamed"] is True and row["status"] == "ok"
        assert (row["input_tokens"], row["output_tokens"]) == (
            resp.usage.input_tokens, resp.usage.output_tokens,
        )  # fmt: skip
        assert row["usage_estimated"] is False and row["cost_nanos"] > 0
    assert first["reasoning_tokens"] == final.usage.output_tokens_details.reasoning_tokens > 0


def test_transcription_stream(installed: Any, fresh_sim: SimServer) -> None:
    events = list(
        client(fresh_sim).audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", b"x" * 640), stream=True
        )
    )
    usage: Any = events[-1].usage
    row = only_row(installed)
    assert row["api"] == "audio.transcriptions" and row["streamed"] is True
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert row["usage_estimated"] is False and row["cost_nanos"] > 0


# -- cut, failed and abandoned streams ----------------------------------------------------------


def test_cut_stream_is_partial_once_and_error_unchanged(
    fresh_sim: SimServer, tmp_path: Any
) -> None:
    c = client(fresh_sim)

    def run() -> tuple[list[Any], BaseException]:
        got: list[Any] = []
        stream = c.chat.completions.create(
            model="gpt-4o-mini", messages=user("long #sim:cut=3"), stream=True
        )
        try:
            for chunk in stream:
                got.append(chunk)
        except Exception as exc:
            stream.close()
            return got, exc
        raise AssertionError("the stream was not cut")

    plain, plain_exc = run()
    tracker = install(tmp_path)
    try:
        hooked, exc = run()
        gc.collect()
    finally:
        llmspend.uninstall()
    assert dumps(plain) == dumps(hooked) and len(hooked) == 3
    assert type(exc) is type(plain_exc) is openai.APIConnectionError
    assert str(exc) == str(plain_exc)
    row = only_row(tracker)
    assert (row["status"], row["usage_estimated"], row["error_type"]) == (
        "partial", True, "APIConnectionError",
    )  # fmt: skip
    assert row["output_tokens"] == est(chat_text(hooked)) > 0
    assert row["input_tokens"] > 0 and row["cost_nanos"] > 0


def test_async_cut_stream(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> list[Any]:
        got: list[Any] = []
        stream = await aclient(fresh_sim).responses.create(
            model="gpt-4o-mini", input="long #sim:cut=6", stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            async for event in stream:
                got.append(event)
        return got

    events = asyncio.run(go())
    row = only_row(installed)
    assert row["status"] == "partial" and row["usage_estimated"] is True
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert row["output_tokens"] == est(deltas)


def test_stream_closed_early_is_partial(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    stream = c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True)
    got = [next(stream), next(stream)]
    stream.close()
    with c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True) as second:
        next(second)
    with c.chat.completions.stream(model="gpt-4o-mini", messages=user("hi")) as helper:
        next(iter(helper))
    with c.responses.stream(model="gpt-4o-mini", input="hi") as rhelper:
        next(iter(rhelper))
    rows = list(installed.recent)
    assert len(rows) == 4
    assert all(r["status"] == "partial" and r["usage_estimated"] for r in rows)
    assert rows[0]["output_tokens"] == est(chat_text(got))


def test_finished_stream_closed_before_done_is_ok(installed: Any, fresh_sim: SimServer) -> None:
    stream = client(fresh_sim).chat.completions.create(
        model="gpt-4o-mini", messages=user("hi"), stream=True
    )
    got = []
    for chunk in stream:
        got.append(chunk)
        if chunk.choices[0].finish_reason:
            break  # the answer is complete; [DONE] not read yet
    stream.close()
    row = only_row(installed)
    assert row["status"] == "ok" and row["usage_estimated"] is True
    assert row["output_tokens"] == est(chat_text(got))


def test_abandoned_stream_is_settled_when_collected(installed: Any, fresh_sim: SimServer) -> None:
    stream = client(fresh_sim).chat.completions.create(
        model="gpt-4o-mini", messages=user("hi"), stream=True
    )
    next(stream)
    del stream
    gc.collect()
    rows = wait_rows(installed, 1)
    assert len(rows) == 1 and rows[0]["status"] == "partial"


# -- raw streamed responses -----------------------------------------------------------------------


def test_streaming_response_of_a_stream(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    with c.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=user("raw"), stream=True,
        stream_options={"include_usage": True},
    ) as resp:  # fmt: skip
        lines = list(resp.iter_lines())
    assert any("[DONE]" in line for line in lines)
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user("raw"), stream=True
    )
    chunks = list(raw.parse())
    exact, estimated = installed.recent
    assert exact["usage_estimated"] is False and exact["status"] == "ok"
    assert exact["output_tokens"] == 28
    assert estimated["usage_estimated"] is True and estimated["status"] == "ok"
    assert estimated["output_tokens"] == est(chat_text(chunks))
    assert "stream_options" not in fresh_sim.requests[-1].body


def test_async_streaming_response_of_a_stream(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> None:
        async with aclient(fresh_sim).responses.with_streaming_response.create(
            model="gpt-4o-mini", input="raw", stream=True
        ) as resp:
            async for _ in resp.iter_bytes():
                pass

    asyncio.run(go())
    row = only_row(installed)
    assert row["usage_estimated"] is False and row["output_tokens"] > 0


# -- background responses: cut, then retrieved or resumed -------------------------------------


class _ToSim(httpx2.BaseTransport):
    """Forwards to the simulator; serves ``GET /responses/{id}?stream=true`` as SSE replay
    of the stored response (the simulator answers that path with JSON only)."""

    def __init__(self, sim: SimServer, queued: bool = False) -> None:
        self._sim = sim
        self._inner = httpx2.HTTPTransport()
        self._queued = queued  # answer POST /responses as a just-queued background response

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._sim.port)
        if request.method != "GET" or url.params.get("stream") != "true":
            request.url = url
            response = self._inner.handle_request(request)
            if not (self._queued and request.method == "POST"):
                return response
            body = json.loads(response.read())
            body.update(status="queued", usage=None, output=[], background=True)
            return httpx2.Response(200, headers={"x-request-id": "req_q"}, json=body)
        after = int(url.params.get("starting_after", -1))
        plain = httpx2.Request("GET", url.copy_remove_param("stream"), headers=request.headers)
        stored = self._inner.handle_request(plain)
        events = list(_response_events(json.loads(stored.read())))
        body = b"".join(iter_sse([e for e in events if e["sequence_number"] > after], named=True))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def _cut_background(c: openai.OpenAI) -> str:
    stream = c.responses.create(
        model="gpt-4o-mini", input="long #sim:cut=4", stream=True, background=True
    )
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            seen.append(event)
    return str(seen[0].response.id)


@pytest.mark.parametrize("how", ["retrieve", "retrieve-stream", "stream-helper"])
def test_background_response_cut_then_resumed(
    installed: Any, fresh_sim: SimServer, how: str
) -> None:
    c = openai.OpenAI(
        api_key="x",
        base_url=fresh_sim.openai_base_url,
        max_retries=0,
        http_client=httpx2.Client(transport=_ToSim(fresh_sim)),
    )
    rid = _cut_background(c)
    assert rid in LEDGER and not installed.recent  # parked: the server keeps generating
    if how == "retrieve":
        final = c.responses.retrieve(rid)
    elif how == "retrieve-stream":
        events = list(c.responses.retrieve(rid, stream=True, starting_after=3))
        final = events[-1].response
    else:
        with c.responses.stream(response_id=rid, starting_after=3) as resumed:
            final = resumed.get_final_response()
    assert rid not in LEDGER
    row = only_row(installed)
    assert (row["status"], row["usage_estimated"], row["streamed"]) == ("ok", False, True)
    assert (row["input_tokens"], row["output_tokens"]) == (
        final.usage.input_tokens, final.usage.output_tokens,
    )  # fmt: skip
    c.responses.retrieve(rid)  # a stored, settled response: retrieving it again is free
    assert len(installed.recent) == 1


def test_background_response_polled_until_done(installed: Any, fresh_sim: SimServer) -> None:
    c = openai.OpenAI(
        api_key="x",
        base_url=fresh_sim.openai_base_url,
        max_retries=0,
        http_client=httpx2.Client(transport=_ToSim(fresh_sim, queued=True)),
    )
    queued = c.responses.create(model="gpt-4o-mini", input="later", background=True)
    assert queued.status == "queued" and queued.usage is None
    assert queued.id in LEDGER and not installed.recent
    done = c.responses.retrieve(queued.id)
    assert done.status == "completed"
    row = only_row(installed)
    assert (row["status"], row["streamed"], row["usage_estimated"]) == ("ok", False, False)
    # A Responses row is named by the response's id, what a later previous_response_id
    # names (the billed call's response, not the retrieve's request).
    assert row["request_id"] == queued.id
    assert (row["input_tokens"], row["output_tokens"]) == (
        done.usage.input_tokens, done.usage.output_tokens,
    )  # fmt: skip


def test_background_response_never_resumed_is_settled_at_exit(
    installed: Any, fresh_sim: SimServer
) -> None:
    rid = _cut_background(client(fresh_sim))
    assert rid in LEDGER
    LEDGER.flush()  # what the atexit hook does
    row = only_row(installed)
    assert row["status"] == "partial" and row["usage_estimated"] is True


def test_stream_objects_are_the_sdks(installed: Any, fresh_sim: SimServer) -> None:
    stream = client(fresh_sim).chat.completions.create(
        model="gpt-4o-mini", messages=user("hi"), stream=True
    )
    assert type(stream) is openai.Stream
    assert isinstance(stream.response, httpx2.Response)
    list(stream)
    assert stream.response.is_closed
    elapsed: Callable[[], Any] = lambda: stream.response.elapsed  # noqa: E731
    assert elapsed().total_seconds() >= 0


# -- a plain httpx client passed as http_client (what litellm does) ----------------------------


def _plain_http_chunks(sim: SimServer, make_http: Callable[[], Any]) -> list[Any]:
    with make_http() as http:
        c = client(sim, http_client=http)
        stream = c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True)
        chunks = dumps(stream)
        with c.chat.completions.stream(model="gpt-4o-mini", messages=user("hi")) as helper:
            events = [e.type for e in helper]
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=user("hi"), stream=True
        ) as raw:
            lines = [ln for ln in raw.iter_lines() if ln]
    return [chunks, events, len(lines)]


async def _aplain_http_chunks(sim: SimServer) -> list[Any]:
    import httpx

    async with httpx.AsyncClient() as http:
        c = aclient(sim, http_client=http)
        stream = await c.chat.completions.create(
            model="gpt-4o-mini", messages=user("hi"), stream=True
        )
        chunks = [scrub(ch.model_dump()) async for ch in stream]
        async with c.chat.completions.stream(model="gpt-4o-mini", messages=user("hi")) as helper:
            events = [e.type async for e in helper]
    return [chunks, events]


def test_streams_over_a_plain_httpx_client_work_and_are_recorded(
    fresh_sim: SimServer, installed: Any
) -> None:
    """A plain ``httpx.Client`` rejects another library's byte stream on close: the tap is
    built on the response's own library, so the call behaves as without llmspend."""
    import httpx

    llmspend.uninstall()
    without = _plain_http_chunks(fresh_sim, httpx.Client)
    awithout = asyncio.run(_aplain_http_chunks(fresh_sim))
    tracker = llmspend.install(installed.settings.database_url, org="acme")
    fresh_sim.reset()
    assert _plain_http_chunks(fresh_sim, httpx.Client) == without
    assert asyncio.run(_aplain_http_chunks(fresh_sim)) == awithout
    rows = wait_rows(tracker, fresh_sim.request_count)
    assert len(rows) == fresh_sim.request_count == 5
    assert all(r["status"] == "ok" and r["output_tokens"] > 0 for r in rows)
