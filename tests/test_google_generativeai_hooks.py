"""The legacy google-generativeai plugin, with the real SDK against the simulator.

Sync calls use the SDK's REST transport straight to the simulator. The SDK's async
methods only speak gRPC, so the async tests run a small ``grpc.aio`` server implementing
``GenerativeService`` that relays each RPC to the simulator's REST endpoint (the same
JSON the REST transport sends), and hand the SDK a client on an insecure channel to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import llmspend
from llmspend.call import Usage
from llmspend.dialects import tokens_from_bytes

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import google.generativeai as genai
    import grpc
    from google.ai import generativelanguage_v1beta as glm
    from google.ai.generativelanguage_v1beta.services.generative_service.transports import (
        grpc_asyncio,
    )
    from google.api_core import exceptions as gexc
    from google.generativeai import client as genai_client
    from google.generativeai import embedding as genai_embedding
    from google.generativeai import generative_models

FLASH = "gemini-2.5-flash"
EMBEDDER = "models/gemini-embedding-001"


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _quiet_sdk() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture
def sim(fresh_sim: Any) -> Any:
    """The simulator, with the SDK's default clients pointed at it (REST)."""
    genai.configure(api_key="k", transport="rest", client_options={"api_endpoint": fresh_sim.url})
    return fresh_sim


@contextlib.contextmanager
def installed_at(path: Path) -> Iterator[Any]:
    tracker = llmspend.install(f"sqlite:///{path / 'calls.sqlite'}", org="acme",
                               project="churn", user="ana")  # fmt: skip
    try:
        yield tracker
    finally:
        llmspend.uninstall()


def rows(tracker: Any) -> list[dict[str, Any]]:
    return list(tracker.recent)


def legacy_usage(md: Any) -> Usage:
    """The documented normalization: the proto has no thoughts; they are the remainder."""
    thoughts = max(0, md.total_token_count - md.prompt_token_count - md.candidates_token_count)
    return Usage(md.prompt_token_count, md.cached_content_token_count, 0,
                 md.candidates_token_count + thoughts, thoughts)  # fmt: skip


def assert_row_usage(row: dict[str, Any], usage: Usage) -> None:
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"],
            row["reasoning_tokens"]) == (usage.input_tokens, usage.cached_input_tokens,
                                         usage.output_tokens, usage.reasoning_tokens)  # fmt: skip
    price = llmspend.price(row["model"], provider="google", input_tokens=usage.input_tokens,
                           cached_input_tokens=usage.cached_input_tokens,
                           output_tokens=usage.output_tokens,
                           reasoning_tokens=usage.reasoning_tokens)  # fmt: skip
    assert price.total_nanos is not None and price.total_nanos > 0
    assert row["cost_nanos"] == price.total_nanos


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def refuse(call: Any) -> None:
    raise llmspend.BudgetExceeded(
        budget="cap", scope="project", period="day", limit=Decimal(1), spent=Decimal(1),
        reserved=Decimal(0), estimate=Decimal("0.01"), resets_at=None,
    )  # fmt: skip


# ---------------------------------------------------------------------- gRPC relay server

_SERVICE = "google.ai.generativelanguage.v1beta.GenerativeService"
_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
          500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE}  # fmt: skip


class GrpcRelay:
    """``GenerativeService`` over gRPC, answered by the simulator's REST dialect."""

    def __init__(self, sim_url: str) -> None:
        self.sim_url = sim_url

    def _post(self, path: str, body: str) -> tuple[int, bytes, list[bytes]]:
        request = urllib.request.Request(f"{self.sim_url}/v1beta/{path}", data=body.encode(),
                                         headers={"content-type": "application/json"})  # fmt: skip
        events: list[bytes] = []
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                if "alt=sse" not in path:
                    return response.status, response.read(), events
                with contextlib.suppress(Exception):  # a cut stream just ends early
                    events += [ln[5:].strip() for ln in response if ln.startswith(b"data:")]
                return response.status, b"", events
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), events

    async def _unary(self, context: Any, path: str, body: str, out: Any) -> Any:
        status, raw, _ = await asyncio.to_thread(self._post, path, body)
        if status != 200:
            message = json.loads(raw)["error"]["message"]
            await context.abort(_CODES.get(status, grpc.StatusCode.UNKNOWN), message)
        return out.from_json(raw, ignore_unknown_fields=True)

    async def generate(self, request: Any, context: Any) -> Any:
        body = glm.GenerateContentRequest.to_json(request)
        return await self._unary(context, f"{request.model}:generateContent", body,
                                 glm.GenerateContentResponse)  # fmt: skip

    async def stream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        path = f"{request.model}:streamGenerateContent?alt=sse"
        status, raw, events = await asyncio.to_thread(
            self._post, path, glm.GenerateContentRequest.to_json(request)
        )
        if status != 200:
            message = json.loads(raw)["error"]["message"]
            await context.abort(_CODES.get(status, grpc.StatusCode.UNKNOWN), message)
        for event in events:
            yield glm.GenerateContentResponse.from_json(event, ignore_unknown_fields=True)
        if not events or b"finishReason" not in events[-1]:
            await context.abort(grpc.StatusCode.INTERNAL, "stream cut")

    async def embed(self, request: Any, context: Any) -> Any:
        body = glm.EmbedContentRequest.to_json(request)
        return await self._unary(context, f"{request.model}:embedContent", body,
                                 glm.EmbedContentResponse)  # fmt: skip

    async def batch_embed(self, request: Any, context: Any) -> Any:
        body = glm.BatchEmbedContentsRequest.to_json(request)
        return await self._unary(context, f"{request.model}:batchEmbedContents", body,
                                 glm.BatchEmbedContentsResponse)  # fmt: skip

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Serve, and make it the SDK's default async client, for the block."""

        def unary(fn: Any, req: Any, resp: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req.deserialize, response_serializer=resp.serialize
            )

        handler = grpc.method_handlers_generic_handler(_SERVICE, {
            "GenerateContent": unary(self.generate, glm.GenerateContentRequest,
                                     glm.GenerateContentResponse),
            "StreamGenerateContent": grpc.unary_stream_rpc_method_handler(
                self.stream, request_deserializer=glm.GenerateContentRequest.deserialize,
                response_serializer=glm.GenerateContentResponse.serialize),
            "EmbedContent": unary(self.embed, glm.EmbedContentRequest, glm.EmbedContentResponse),
            "BatchEmbedContents": unary(self.batch_embed, glm.BatchEmbedContentsRequest,
                                        glm.BatchEmbedContentsResponse),
        })  # fmt: skip
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        transport = grpc_asyncio.GenerativeServiceGrpcAsyncIOTransport(channel=channel)
        clients = genai_client._client_manager.clients
        clients["generative_async"] = glm.GenerativeServiceAsyncClient(transport=transport)
        try:
            yield
        finally:
            clients.pop("generative_async", None)
            await channel.close()
            await server.stop(None)


def run_async(sim: Any, body: Any) -> Any:
    """Run ``await body()`` with the SDK's async client on the relay."""

    async def main() -> Any:
        async with GrpcRelay(sim.url).serving():
            return await body()

    return asyncio.run(main())


# ------------------------------------------------------------------------ one row per call


def test_generate_content_records_server_usage(installed_any: Any, sim: Any) -> None:
    model = genai.GenerativeModel(FLASH)
    response = model.generate_content("hi #sim:tokens=600 #sim:cached=512 #sim:thoughts=50")
    md = response.usage_metadata
    assert md.total_token_count - md.prompt_token_count - md.candidates_token_count == 50
    [row] = rows(installed_any)
    assert sim.request_count == 1
    assert (row["provider"], row["api"], row["status"], row["streamed"]) == (
        "google", "generate_content", "ok", False)  # fmt: skip
    # the SDK names the model "models/…"; the server's modelVersion is what is priced
    assert (row["model"], row["requested_model"]) == (FLASH, f"models/{FLASH}")
    assert_row_usage(row, legacy_usage(md))
    assert (row["input_tokens"], row["cached_input_tokens"], row["reasoning_tokens"]) == (
        600, 512, 50)  # fmt: skip
    assert not row["usage_estimated"]
    assert llmspend.records()["cost_usd"].iloc[0] > 0


def test_stream_same_chunks_settles_at_exhaustion(sim: Any, tmp_path: Path) -> None:
    def run() -> tuple[str, list[dict[str, Any]], Any]:
        response = genai.GenerativeModel(FLASH).generate_content("story", stream=True)
        before = str(response)
        return before, [type(c._result).to_dict(c._result) for c in response], response

    baseline_str, baseline, _ = run()
    sim.reset()
    with installed_at(tmp_path) as tracker:
        response = genai.GenerativeModel(FLASH).generate_content("story", stream=True)
        assert str(response) == baseline_str  # iterator=<ResponseIterator> still
        assert rows(tracker) == []  # usage comes only with the last chunk
        chunks = [type(c._result).to_dict(c._result) for c in response]
        assert chunks == baseline
        [row] = rows(tracker)
        assert type(response) is generative_models.generation_types.GenerateContentResponse
        response.resolve()  # re-iterating a finished stream records nothing more
        assert len(rows(tracker)) == 1
    assert row["streamed"] and row["status"] == "ok" and not row["usage_estimated"]
    assert_row_usage(row, legacy_usage(response.usage_metadata))


def test_chat_and_automatic_function_calling(installed: Any, sim: Any) -> None:
    chat = genai.GenerativeModel(FLASH).start_chat()
    chat.send_message("hello")
    streamed = chat.send_message("a stream", stream=True)
    streamed.resolve()
    assert len(rows(installed)) == 2 == sim.request_count
    afc = genai.GenerativeModel(FLASH, tools=[get_weather]).start_chat(
        enable_automatic_function_calling=True
    )
    response = afc.send_message("weather in Paris?")
    assert sim.request_count == 4 == len(rows(installed))
    first, second = rows(installed)[2:]
    assert first["input_tokens"] < second["input_tokens"]
    assert_row_usage(second, legacy_usage(response.usage_metadata))


def test_embed_content_under_both_names(installed: Any, sim: Any) -> None:
    one = genai.embed_content(model=EMBEDDER, content="hello world!")
    genai_embedding.embed_content(model=EMBEDDER, content=["a", "bbbbbbbb"])
    assert len(one["embedding"]) == 3072
    single, batch = rows(installed)
    assert sim.request_count == 2
    # the SDK's proto drops the server's usage: estimated from the text (ceil(bytes/4))
    assert (single["api"], single["input_tokens"], single["usage_estimated"]) == (
        "embed_content", 3, True)  # fmt: skip
    assert batch["input_tokens"] == 1 + 2 and batch["cost_nanos"] > 0
    assert genai.embed_content(model=EMBEDDER, content=[]) == {"embedding": []}
    assert sim.request_count == 2 == len(rows(installed))
    from_iterator = genai.embed_content(model=EMBEDDER, content=iter(["c", "d"]))
    assert len(from_iterator["embedding"]) == 2
    assert sim.request_count == 3 == len(rows(installed))


def test_embed_batches_are_rows(sim: Any, tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(250)]
    baseline = genai.embed_content(model=EMBEDDER, content=texts, output_dimensionality=8)
    sim.reset()
    with installed_at(tmp_path) as tracker:
        result = genai.embed_content(model=EMBEDDER, content=iter(texts), output_dimensionality=8)
    assert result == baseline
    assert sim.request_count == 3 == len(rows(tracker))
    assert [r["input_tokens"] for r in rows(tracker)] == [200, 200, 100]


# ----------------------------------------------------------------------------- async (gRPC)


def test_async_generate_stream_chat_and_embed(installed: Any, sim: Any) -> None:
    async def body() -> tuple[Any, Any]:
        model = genai.GenerativeModel("gemini-2.5-pro")
        response = await model.generate_content_async("async hello")
        stream = await model.generate_content_async("async stream", stream=True)
        async for _ in stream:
            pass
        await model.start_chat().send_message_async("chat")
        await genai.embed_content_async(model=EMBEDDER, content=["x", "yy"])
        await genai_embedding.embed_content_async(model=EMBEDDER, content="z")
        return response, stream

    response, stream = run_async(sim, body)
    assert sim.request_count == 5 == len(rows(installed))
    generated, streamed, chat, batch, single = rows(installed)
    assert_row_usage(generated, legacy_usage(response.usage_metadata))
    assert streamed["streamed"] and streamed["status"] == "ok"
    assert_row_usage(streamed, legacy_usage(stream.usage_metadata))
    assert chat["status"] == "ok" and chat["cost_nanos"] > 0
    assert (batch["api"], batch["input_tokens"], single["input_tokens"]) == ("embed_content", 2, 1)


def test_async_errors_cuts_and_budget(installed: Any, sim: Any) -> None:
    async def body() -> list[str]:
        model, seen = genai.GenerativeModel(FLASH), []
        with pytest.raises(gexc.TooManyRequests):
            await model.generate_content_async("#sim:error=429")
        stream = await model.generate_content_async("cut #sim:cut=3", stream=True)
        with pytest.raises(gexc.InternalServerError):
            async for chunk in stream:
                seen.append(chunk.text)
        installed.before_call_hooks.append(refuse)
        count = sim.request_count
        with pytest.raises(llmspend.BudgetExceeded):
            await model.generate_content_async("refused")
        assert sim.request_count == count
        return seen

    seen = run_async(sim, body)
    assert len(seen) == 3
    error, cut = rows(installed)
    assert (error["status"], error["error_type"]) == ("error", "ResourceExhausted")
    assert (cut["status"], cut["usage_estimated"], cut["error_type"]) == (
        "partial", True, "InternalServerError")  # fmt: skip
    assert cut["output_tokens"] >= tokens_from_bytes(len("".join(seen)))


# ------------------------------------------------------------------ install / uninstall

_NAMES = [
    (generative_models.GenerativeModel, "generate_content"),
    (generative_models.GenerativeModel, "generate_content_async"),
    (genai, "embed_content"), (genai, "embed_content_async"),
    (genai_embedding, "embed_content"), (genai_embedding, "embed_content_async"),
]  # fmt: skip


def test_install_twice_and_uninstall_restores(sim: Any, tmp_path: Path) -> None:
    before = {(o, n): o.__dict__[n] for o, n in _NAMES}
    model = genai.GenerativeModel(FLASH)  # created before install: covered
    with installed_at(tmp_path) as tracker:
        llmspend.install(f"sqlite:///{tmp_path / 'calls.sqlite'}")
        assert all(o.__dict__[n] is not before[(o, n)] for o, n in _NAMES)
        model.generate_content("once")
        genai.embed_content(model=EMBEDDER, content="once")
        assert len(rows(tracker)) == 2 == sim.request_count
    assert all(o.__dict__[n] is before[(o, n)] for o, n in _NAMES)
    model.generate_content("not recorded")
    assert len(rows(tracker)) == 2


def test_sdk_imported_after_install(tmp_path: Path) -> None:
    """The package re-exports embed_content by a from-import made after the hook ran."""
    code = textwrap.dedent(f"""
        import warnings; warnings.simplefilter("ignore")
        import llmspend
        from llmspend.sim import SimServer
        tracker = llmspend.install("sqlite:///{tmp_path / 'sub.sqlite'}")
        import google.generativeai as genai
        from google.generativeai import embedding
        with SimServer() as sim:
            options = {{"api_endpoint": sim.url}}
            genai.configure(api_key="k", transport="rest", client_options=options)
            genai.embed_content(model="{EMBEDDER}", content="a")
            embedding.embed_content(model="{EMBEDDER}", content="b")
            genai.GenerativeModel("{FLASH}").generate_content("c")
            assert len(tracker.recent) == 3 == sim.request_count, list(tracker.recent)
        llmspend.uninstall()
        for name in ("embed_content", "embed_content_async"):
            assert getattr(genai, name) is getattr(embedding, name), name
            assert type(getattr(genai, name)).__name__ == "function", name
        print("ok")
    """)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50, env=env, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# ------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("code", "error"), [(429, gexc.TooManyRequests),
                                              (500, gexc.InternalServerError)])  # fmt: skip
def test_provider_errors_recorded_and_reraised(
    sim: Any, tmp_path: Path, code: int, error: type[Exception]
) -> None:
    prompt = f"fail #sim:error={code}"
    plain: Any
    hooked: Any
    with pytest.raises(error) as plain:
        genai.GenerativeModel(FLASH).generate_content(prompt)
    with installed_at(tmp_path) as tracker:
        with pytest.raises(error) as hooked:
            genai.GenerativeModel(FLASH).generate_content(prompt)
        with pytest.raises(error):
            genai.GenerativeModel(FLASH).generate_content(prompt, stream=True)
        with pytest.raises(error):
            genai.embed_content(model=EMBEDDER, content=prompt)
    assert (hooked.value.code, hooked.value.message) == (plain.value.code, plain.value.message)
    assert [(r["status"], r["error_type"]) for r in rows(tracker)] == [
        ("error", error.__name__)] * 3  # fmt: skip
    assert all(r["cost_nanos"] == 0 for r in rows(tracker))


def test_timeout_recorded(installed: Any, sim: Any) -> None:
    with pytest.raises(Exception) as caught:
        genai.GenerativeModel(FLASH).generate_content(
            "slow #sim:delay=1.5", request_options={"timeout": 0.3}
        )
    [row] = rows(installed)
    assert (row["status"], row["error_type"]) == ("error", type(caught.value).__name__)
    assert row["error_type"] == "ReadTimeout" and row["cost_nanos"] == 0


def test_cut_and_abandoned_streams_are_partial(installed: Any, sim: Any) -> None:
    model = genai.GenerativeModel(FLASH)
    response = model.generate_content("cut #sim:cut=3", stream=True)
    seen = []
    with pytest.raises(Exception) as caught:
        for chunk in response:
            seen.append(chunk.text)
    assert len(seen) == 3
    [cut] = rows(installed)
    assert (cut["status"], cut["usage_estimated"], cut["error_type"]) == (
        "partial", True, type(caught.value).__name__)  # fmt: skip
    assert cut["output_tokens"] >= tokens_from_bytes(len("".join(seen)))

    dropped = model.generate_content("dropped", stream=True)
    next(iter(dropped))
    del dropped
    gc.collect()
    assert [r["status"] for r in rows(installed)] == ["partial", "partial"]


def test_budget_refusal_sends_nothing(installed: Any, sim: Any) -> None:
    installed.before_call_hooks.append(refuse)
    model = genai.GenerativeModel(FLASH)
    with pytest.raises(llmspend.BudgetExceeded):
        model.generate_content("refused")
    with pytest.raises(llmspend.BudgetExceeded):
        model.generate_content("refused", stream=True)
    with pytest.raises(llmspend.BudgetExceeded):
        genai.embed_content(model=EMBEDDER, content="refused")
    with pytest.raises(llmspend.BudgetExceeded):
        model.start_chat().send_message("refused")
    assert sim.request_count == 0
    assert all(r["status"] != "ok" for r in rows(installed))
