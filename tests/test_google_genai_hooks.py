"""The google-genai plugin, exercised with the real SDK client against the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

import llmspend
from llmspend.call import Usage
from llmspend.dialects import tokens_from_bytes
from llmspend.dialects.gemini import parse_usage

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import models as genai_models
    from google.genai import types

FLASH = "gemini-2.5-flash"
HOOKED = [
    (cls, name)
    for cls in (genai_models.Models, genai_models.AsyncModels)
    for name in ("_generate_content", "_generate_content_stream", "generate_content",
                 "generate_content_stream", "embed_content")
]  # fmt: skip


# ------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _quiet_sdk() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def make_client(sim: Any, **options: Any) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=sim.url, **options))


@pytest.fixture
def client(fresh_sim: Any) -> genai.Client:
    return make_client(fresh_sim)


@contextlib.contextmanager
def installed_at(path: Path) -> Iterator[Any]:
    """install() / uninstall() around a block, for tests that need the moments apart."""
    tracker = llmspend.install(f"sqlite:///{path / 'calls.sqlite'}", org="acme",
                               project="churn", user="ana")  # fmt: skip
    try:
        yield tracker
    finally:
        llmspend.uninstall()


def rows(tracker: Any) -> list[dict[str, Any]]:
    return list(tracker.recent)


def expected_usage(md: Any) -> Usage:
    thoughts = md.thoughts_token_count or 0
    return Usage(
        input_tokens=md.prompt_token_count + (md.tool_use_prompt_token_count or 0),
        cached_input_tokens=md.cached_content_token_count or 0,
        output_tokens=(md.candidates_token_count or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


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


def dumps(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c.model_dump(exclude={"sdk_http_response"}) for c in chunks]


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def refuse(call: Any) -> None:
    raise llmspend.BudgetExceeded(
        budget="cap", scope="project", period="day", limit=Decimal(1), spent=Decimal(1),
        reserved=Decimal(0), estimate=Decimal("0.01"), resets_at=None,
    )  # fmt: skip


# ------------------------------------------------------------------------ one row per call


def test_generate_content_records_server_usage(installed_any: Any, fresh_sim: Any) -> None:
    client = make_client(fresh_sim)
    prompt = "hello #sim:tokens=600 #sim:cached=512 #sim:thoughts=50"
    response = client.models.generate_content(model=FLASH, contents=prompt)
    md: Any = response.usage_metadata
    assert (md.prompt_token_count, md.cached_content_token_count, md.thoughts_token_count) == (
        600, 512, 50)  # fmt: skip
    [row] = rows(installed_any)
    assert fresh_sim.request_count == 1
    assert (row["provider"], row["api"], row["model"], row["status"]) == (
        "google", "generate_content", FLASH, "ok")  # fmt: skip
    assert not row["streamed"] and not row["usage_estimated"]
    assert row["request_id"] == response.response_id
    assert (row["org_name"], row["project_name"], row["user_name"]) == ("acme", "churn", "ana")
    assert_row_usage(row, expected_usage(md))
    assert row["output_tokens"] == md.candidates_token_count + 50  # thoughts billed as output
    df = llmspend.records()
    assert len(df) == 1 and df["cost_usd"].iloc[0] > 0


def test_models_prefix_passed_as_given(installed: Any, client: genai.Client) -> None:
    response = client.models.generate_content(model="models/gemini-2.5-pro", contents="hi")
    [row] = rows(installed)
    # the server names the model it ran (modelVersion); the request's name is kept too
    assert (row["model"], row["requested_model"]) == ("gemini-2.5-pro", "models/gemini-2.5-pro")
    assert row["price_status"] == "priced"
    assert_row_usage(row, expected_usage(response.usage_metadata))


def test_raw_http_response_config_still_priced(installed: Any, client: genai.Client) -> None:
    config = types.GenerateContentConfig(should_return_http_response=True)
    response = client.models.generate_content(model=FLASH, contents="raw", config=config)
    http: Any = response.sdk_http_response
    body = json.loads(http.body)
    [row] = rows(installed)
    assert row["input_tokens"] == body["usageMetadata"]["promptTokenCount"]
    assert not row["usage_estimated"] and row["cost_nanos"] > 0


def test_stream_yields_same_chunks_and_records_once(fresh_sim: Any, tmp_path: Path) -> None:
    client = make_client(fresh_sim)
    prompt = "tell me a story #sim:thoughts=40"
    baseline = dumps(list(client.models.generate_content_stream(model=FLASH, contents=prompt)))
    fresh_sim.reset()
    with installed_at(tmp_path) as tracker:
        stream = client.models.generate_content_stream(model=FLASH, contents=prompt)
        chunks = list(stream)
        assert dumps(chunks) == baseline
        assert all(type(c) is types.GenerateContentResponse for c in chunks)
        [row] = rows(tracker)
    assert fresh_sim.request_count == 1
    assert row["streamed"] and row["status"] == "ok" and not row["usage_estimated"]
    assert_row_usage(row, expected_usage(chunks[-1].usage_metadata))
    assert row["reasoning_tokens"] == 40


def test_non_streamed_response_unchanged(fresh_sim: Any, tmp_path: Path) -> None:
    client = make_client(fresh_sim)
    baseline = client.models.generate_content(model=FLASH, contents="same?")
    fresh_sim.reset()
    with installed_at(tmp_path):
        response = client.models.generate_content(model=FLASH, contents="same?")
    assert type(response) is type(baseline)
    assert dumps([response]) == dumps([baseline])


def test_async_generate_stream_and_embed(
    installed: Any, fresh_sim: Any, client: genai.Client
) -> None:
    async def main() -> tuple[Any, list[Any], Any]:
        response = await client.aio.models.generate_content(model="gemini-2.5-pro", contents="a")
        stream = await client.aio.models.generate_content_stream(model=FLASH, contents="b")
        chunks = [chunk async for chunk in stream]
        embedded = await client.aio.models.embed_content(
            model="gemini-embedding-001", contents="embed me"
        )
        return response, chunks, embedded

    response, chunks, embedded = asyncio.run(main())
    generated, streamed, embed = rows(installed)
    assert fresh_sim.request_count == 3
    assert_row_usage(generated, expected_usage(response.usage_metadata))
    assert streamed["streamed"] and streamed["status"] == "ok"
    assert_row_usage(streamed, expected_usage(chunks[-1].usage_metadata))
    assert embed["api"] == "embed_content"
    assert embed["input_tokens"] == embedded.usage_metadata.prompt_token_count
    assert embed["cost_nanos"] > 0


def test_chats_are_not_double_counted(installed: Any, fresh_sim: Any, client: genai.Client) -> None:
    chat = client.chats.create(model=FLASH)
    chat.send_message("hello")
    chat.send_message("again")
    chunks = list(chat.send_message_stream("and a stream"))
    assert len(rows(installed)) == 3 == fresh_sim.request_count
    assert [r["streamed"] for r in rows(installed)] == [False, False, True]
    assert_row_usage(rows(installed)[-1], expected_usage(chunks[-1].usage_metadata))


def test_automatic_function_calling_counts_every_request(
    installed: Any, fresh_sim: Any, client: genai.Client
) -> None:
    config = types.GenerateContentConfig(tools=[get_weather])
    response = client.models.generate_content(model=FLASH, contents="Paris?", config=config)
    assert fresh_sim.request_count == 2
    first, second = rows(installed)
    assert first["input_tokens"] < second["input_tokens"]  # the 2nd carries the tool result
    assert_row_usage(second, expected_usage(response.usage_metadata))
    assert first["cost_nanos"] > 0

    list(client.models.generate_content_stream(model=FLASH, contents="Rome?", config=config))
    chat = client.chats.create(model=FLASH, config=config)
    chat.send_message("Oslo?")
    asyncio.run(client.aio.models.generate_content(model=FLASH, contents="Bern?", config=config))
    assert fresh_sim.request_count == 8 == len(rows(installed))
    assert all(r["status"] == "ok" and not r["usage_estimated"] for r in rows(installed))


def test_embed_content(installed: Any, client: genai.Client) -> None:
    response: Any = client.models.embed_content(
        model="gemini-embedding-001", contents=["a", "bbbbbbbb", "ccc"]
    )
    [row] = rows(installed)
    assert (row["api"], row["model"], row["status"]) == ("embed_content", "gemini-embedding-001",
                                                         "ok")  # fmt: skip
    assert row["input_tokens"] == response.usage_metadata.prompt_token_count == 1 + 2 + 1
    assert row["output_tokens"] == 0 and row["cost_nanos"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # text-embedding-004 has no genai-prices entry
        client.models.embed_content(model="text-embedding-004", contents="x")
    assert rows(installed)[-1]["price_status"] == "unknown"


# ------------------------------------------------------------------ install / uninstall


def test_client_created_before_install_is_covered(fresh_sim: Any, tmp_path: Path) -> None:
    client = make_client(fresh_sim)
    with installed_at(tmp_path) as tracker:
        client.models.generate_content(model=FLASH, contents="early client")
        assert len(rows(tracker)) == 1


def test_install_twice_does_not_double_count(fresh_sim: Any, tmp_path: Path) -> None:
    client = make_client(fresh_sim)
    with installed_at(tmp_path) as tracker:
        again = llmspend.install(f"sqlite:///{tmp_path / 'calls.sqlite'}")
        assert again is tracker
        client.models.generate_content(model=FLASH, contents="once")
        list(client.models.generate_content_stream(model=FLASH, contents="once"))
        assert len(rows(tracker)) == 2 == fresh_sim.request_count


def test_uninstall_restores_sdk_exactly(fresh_sim: Any, tmp_path: Path) -> None:
    before = {(c, n): c.__dict__[n] for c, n in HOOKED}
    client = make_client(fresh_sim)
    with installed_at(tmp_path) as tracker:
        assert all(c.__dict__[n] is not before[(c, n)] for c, n in HOOKED)
        client.models.generate_content(model=FLASH, contents="recorded")
    assert all(c.__dict__[n] is before[(c, n)] for c, n in HOOKED)
    client.models.generate_content(model=FLASH, contents="not recorded")
    assert len(rows(tracker)) == 1
    assert len(llmspend.Tracker(f"sqlite:///{tmp_path / 'calls.sqlite'}").records()) == 1


def test_fallback_to_public_methods_without_private_hook(
    installed: Any, client: genai.Client, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """On an SDK without the per-request hook, the public method records instead."""
    original = inspect.getattr_static(genai_models.Models, "_generate_content").__wrapped__

    def unhooked(self: Any, **kwargs: Any) -> Any:  # an SDK version we do not hook there
        return original(self, **kwargs)

    # undone before the `installed` teardown uninstalls (the autouse monkeypatch is later)
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="llmspend"):
        patch.setattr(genai_models.Models, "_generate_content", unhooked)
        response = client.models.generate_content(model=FLASH, contents="fallback")
    [row] = rows(installed)
    assert_row_usage(row, expected_usage(response.usage_metadata))
    assert any("_generate_content hook" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("code", "error"), [(429, genai_errors.ClientError),
                                              (500, genai_errors.ServerError)])  # fmt: skip
def test_provider_errors_recorded_and_reraised(
    fresh_sim: Any, tmp_path: Path, code: int, error: type[Exception]
) -> None:
    client = make_client(fresh_sim)
    prompt = f"fail #sim:error={code}"
    plain: Any
    hooked: Any
    with pytest.raises(error) as plain:
        client.models.generate_content(model=FLASH, contents=prompt)
    with installed_at(tmp_path) as tracker:
        with pytest.raises(error) as hooked:
            client.models.generate_content(model=FLASH, contents=prompt)
        with pytest.raises(error):
            list(client.models.generate_content_stream(model=FLASH, contents=prompt))
        with pytest.raises(error):
            asyncio.run(client.aio.models.generate_content(model=FLASH, contents=prompt))
    assert (hooked.value.code, str(hooked.value)) == (plain.value.code, str(plain.value))
    assert len(rows(tracker)) == 3
    for row in rows(tracker):
        assert (row["status"], row["error_type"]) == ("error", error.__name__)
        assert row["cost_nanos"] == 0 and row["input_tokens"] == 0


def test_timeout_recorded_and_reraised(installed: Any, fresh_sim: Any) -> None:
    client = make_client(fresh_sim, timeout=300)
    with pytest.raises(Exception) as caught:
        client.models.generate_content(model=FLASH, contents="slow #sim:delay=1.5")
    [row] = rows(installed)
    assert (row["status"], row["error_type"]) == ("error", type(caught.value).__name__)
    assert row["error_type"] == "ReadTimeout" and row["cost_nanos"] == 0


def test_cut_stream_recorded_once_as_partial(installed: Any, client: genai.Client) -> None:
    seen: list[Any] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        for chunk in client.models.generate_content_stream(model=FLASH, contents="x #sim:cut=3"):
            seen.append(chunk)
    assert len(seen) == 3
    [row] = rows(installed)
    assert (row["status"], row["usage_estimated"], row["error_type"]) == (
        "partial", True, "RemoteProtocolError")  # fmt: skip
    last = seen[-1].usage_metadata
    assert row["input_tokens"] == last.prompt_token_count
    assert row["output_tokens"] >= last.candidates_token_count + (last.thoughts_token_count or 0)
    assert row["cost_nanos"] > 0

    async def cut_async() -> None:
        stream = await client.aio.models.generate_content_stream(model=FLASH, contents="#sim:cut=2")
        async for _ in stream:
            pass

    # The async client reads over aiohttp when it is installed (as in the dev extra), else
    # over httpx2: either way the SDK's own error reaches the caller.
    import aiohttp

    with pytest.raises((httpx2.RemoteProtocolError, aiohttp.ClientPayloadError)):
        asyncio.run(cut_async())
    assert [r["status"] for r in rows(installed)] == ["partial", "partial"]


def test_abandoned_stream_settles_as_partial(installed: Any, client: genai.Client) -> None:
    stream: Any = client.models.generate_content_stream(model=FLASH, contents="long story")
    first: Any = next(stream)
    assert rows(installed) == []
    stream.close()
    [row] = rows(installed)
    assert (row["status"], row["usage_estimated"]) == ("partial", True)
    assert row["input_tokens"] == first.usage_metadata.prompt_token_count

    dropped = client.models.generate_content_stream(model=FLASH, contents="dropped")
    next(dropped)
    del dropped
    gc.collect()

    async def abandon_async() -> None:
        stream: Any = await client.aio.models.generate_content_stream(model=FLASH, contents="async")
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(abandon_async())
    assert [r["status"] for r in rows(installed)] == ["partial"] * 3


def test_budget_refusal_sends_nothing(installed: Any, fresh_sim: Any, client: genai.Client) -> None:
    installed.before_call_hooks.append(refuse)
    with pytest.raises(llmspend.BudgetExceeded):
        client.models.generate_content(model=FLASH, contents="refused")
    with pytest.raises(llmspend.BudgetExceeded):
        next(iter(client.models.generate_content_stream(model=FLASH, contents="refused")))
    with pytest.raises(llmspend.BudgetExceeded):
        client.models.embed_content(model="gemini-embedding-001", contents="refused")
    with pytest.raises(llmspend.BudgetExceeded):
        asyncio.run(client.aio.models.generate_content(model=FLASH, contents="refused"))
    assert fresh_sim.request_count == 0
    assert all(r["status"] != "ok" for r in rows(installed))


class _BadUsage(httpx2.BaseTransport):
    """Forwards to the simulator and rewrites the usage it returns (a misbehaving server)."""

    def __init__(self, usage: Any) -> None:
        self.inner = httpx2.HTTPTransport()
        self.usage = usage

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        body = json.loads(response.read())
        if self.usage is None:
            body.pop("usageMetadata", None)
        else:
            body["usageMetadata"] = self.usage
        return httpx2.Response(response.status_code, json=body)


@pytest.mark.parametrize("usage", [None, {"promptTokenCount": -4, "candidatesTokenCount": 9},
                                   {"totalTokenCount": 12}])  # fmt: skip
def test_malformed_usage_is_estimated(installed: Any, fresh_sim: Any, usage: Any) -> None:
    client = make_client(fresh_sim, httpx_client=httpx2.Client(transport=_BadUsage(usage)))
    response: Any = client.models.generate_content(model=FLASH, contents="estimate me")
    [row] = rows(installed)
    assert (row["status"], row["usage_estimated"]) == ("ok", True)
    assert row["input_tokens"] > 0
    assert row["output_tokens"] == tokens_from_bytes(len(response.text.encode()))
    assert row["cost_nanos"] > 0


# ----------------------------------------------------------------- usage normalization


def test_parse_usage_normalization() -> None:
    sdk = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=100, candidates_token_count=20, thoughts_token_count=30,
        cached_content_token_count=40, tool_use_prompt_token_count=5, total_token_count=155,
    )  # fmt: skip
    assert parse_usage(sdk) == Usage(105, 40, 0, 50, 30)
    # legacy proto: no thoughts field, inferred from the total
    raw = {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 27}
    assert parse_usage(raw) == Usage(10, 0, 0, 17, 12)
    assert parse_usage({"prompt_token_count": 7}) == Usage(7)


@pytest.mark.parametrize("usage", [
    None, {}, {"promptTokenCount": None}, {"promptTokenCount": -1},
    {"promptTokenCount": "12"}, {"promptTokenCount": 12.0}, {"promptTokenCount": True},
    {"promptTokenCount": 3, "candidatesTokenCount": -2}, {"promptTokenCount": 0},
    {"promptTokenCount": 3, "thoughtsTokenCount": [1]}, "garbage", 42,
])  # fmt: skip
def test_parse_usage_rejects_malformed(usage: Any) -> None:
    assert parse_usage(usage) is None
