"""The openai SDK plugin, non-streamed entry points: real SDK clients against the simulator.

Streams are in ``test_openai_streams.py``. Every test asserts what the user would see:
one row per billed HTTP call, the provider's tokens, a cost, and SDK objects and
exceptions unchanged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient

import llmspend
from llmspend.dialects.openai import normalize_usage, provider_for_host
from llmspend.pricing import UnknownModelWarning
from llmspend.providers.openai_sdk import detect_provider
from llmspend.sim import SimServer

AUDIO = b"RIFF" + bytes(range(256)) * 8  # 2,052 bytes of "audio"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client(sim: SimServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def aclient(sim: SimServer, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0, **kw)


def rows(tracker: Any) -> list[dict[str, Any]]:
    return list(tracker.recent)


def only_row(tracker: Any) -> dict[str, Any]:
    recorded = rows(tracker)
    assert len(recorded) == 1, recorded
    return recorded[0]


def assert_chat_row(row: dict[str, Any], usage: Any, *, model: str = "gpt-4o-mini") -> None:
    assert row["provider"] == "openai-compatible"
    assert row["model"] == model
    assert row["status"] == "ok"
    assert row["input_tokens"] == usage.prompt_tokens
    assert row["output_tokens"] == usage.completion_tokens
    assert row["usage_estimated"] is False
    assert row["cost_nanos"] > 0
    assert row["org_name"] == "acme"


@pytest.fixture
def no_price_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownModelWarning)
        yield


# -- one row per call, with the provider's tokens ---------------------------------------------


def test_chat_create_records_one_priced_row(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    resp = c.chat.completions.create(
        model="gpt-4o-mini", messages=user("hello there #sim:cached=4"), max_tokens=100
    )
    row = only_row(installed)
    assert_chat_row(row, resp.usage)
    assert row["cached_input_tokens"] == 4 == resp.usage.prompt_tokens_details.cached_tokens
    assert row["api"] == "chat.completions" and row["streamed"] is False
    assert (row["project_name"], row["user_name"]) == ("churn", "ana")
    assert row["request_id"] == resp._request_id
    frame = llmspend.records()
    assert len(frame) == 1
    assert frame.loc[0, "cost_usd"] > Decimal(0)
    assert frame.loc[0, "project"] == "churn"


def test_records_on_every_store(installed_any: Any, fresh_sim: SimServer) -> None:
    resp = client(fresh_sim).chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    frame = llmspend.records()
    assert len(frame) == 1
    assert frame.loc[0, "input_tokens"] == resp.usage.prompt_tokens
    assert frame.loc[0, "cost_usd"] > Decimal(0)


def test_reasoning_model_counts_reasoning_in_output(installed: Any, fresh_sim: SimServer) -> None:
    resp = client(fresh_sim).chat.completions.create(model="o3-mini", messages=user("think"))
    row = only_row(installed)
    assert_chat_row(row, resp.usage, model="o3-mini")
    reasoning = resp.usage.completion_tokens_details.reasoning_tokens
    assert row["reasoning_tokens"] == reasoning > 0


def test_async_chat_create(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> Any:
        return await aclient(fresh_sim).chat.completions.create(
            model="gpt-4o-mini", messages=user("hi")
        )

    resp = asyncio.run(go())
    assert_chat_row(only_row(installed), resp.usage)


def test_chat_parse_sync_and_async(installed: Any, fresh_sim: SimServer) -> None:
    from pydantic import BaseModel

    class City(BaseModel):
        name: str
        population: int

    parsed = client(fresh_sim).chat.completions.parse(
        model="gpt-4o-mini", messages=user("a city"), response_format=City
    )
    assert isinstance(parsed.choices[0].message.parsed, City)

    async def go() -> Any:
        return await aclient(fresh_sim).chat.completions.parse(
            model="gpt-4o-mini", messages=user("a city"), response_format=City
        )

    aparsed = asyncio.run(go())
    first, second = rows(installed)
    assert_chat_row(first, parsed.usage)
    assert_chat_row(second, aparsed.usage)


def test_responses_create_parse_and_async(installed: Any, fresh_sim: SimServer) -> None:
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int

    c = client(fresh_sim)
    r1 = c.responses.create(model="o3-mini", input="hello", instructions="be brief")
    r2 = c.responses.parse(model="gpt-4o-mini", input="a number", text_format=Answer)
    assert isinstance(r2.output_parsed, Answer)

    async def go() -> Any:
        return await aclient(fresh_sim).responses.create(model="gpt-4o-mini", input="hi")

    r3 = asyncio.run(go())
    recorded = rows(installed)
    assert len(recorded) == 3
    for row, resp in zip(recorded, (r1, r2, r3), strict=True):
        assert row["api"] == "responses" and row["status"] == "ok"
        assert row["input_tokens"] == resp.usage.input_tokens
        assert row["output_tokens"] == resp.usage.output_tokens
        assert row["reasoning_tokens"] == resp.usage.output_tokens_details.reasoning_tokens
        assert row["cost_nanos"] > 0 and row["usage_estimated"] is False
    assert recorded[0]["reasoning_tokens"] > 0


def test_incomplete_response_is_recorded_with_its_usage(
    installed: Any, fresh_sim: SimServer
) -> None:
    resp = client(fresh_sim).responses.create(
        model="gpt-4o-mini", input="hello", max_output_tokens=16
    )
    assert resp.status == "incomplete"
    row = only_row(installed)
    assert row["status"] == "ok" and row["output_tokens"] == resp.usage.output_tokens == 16


def test_embeddings_sync_and_async(installed: Any, fresh_sim: SimServer) -> None:
    e1 = client(fresh_sim).embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta gamma"]
    )

    async def go() -> Any:
        return await aclient(fresh_sim).embeddings.create(
            model="text-embedding-3-small", input="delta"
        )

    e2 = asyncio.run(go())
    recorded = rows(installed)
    assert [r["api"] for r in recorded] == ["embeddings", "embeddings"]
    for row, resp in zip(recorded, (e1, e2), strict=True):
        assert row["input_tokens"] == resp.usage.prompt_tokens > 0
        assert row["output_tokens"] == 0
        assert row["cost_nanos"] > 0 and row["usage_estimated"] is False


def test_images_generate_with_and_without_usage(
    installed: Any, fresh_sim: SimServer, no_price_warnings: None
) -> None:
    c = client(fresh_sim)
    img = c.images.generate(model="gpt-image-1", prompt="a red fox", quality="low")
    c.images.generate(model="dall-e-3", prompt="a red fox")  # no usage in the reply
    gen, dalle = rows(installed)
    assert gen["api"] == "images.generations"
    assert gen["input_tokens"] == img.usage.input_tokens
    assert gen["output_tokens"] == img.usage.output_tokens == 272
    assert gen["cost_nanos"] > 0 and gen["usage_estimated"] is False
    assert dalle["usage_estimated"] is True and dalle["input_tokens"] > 0


def _served_or_404(call: Callable[[], Any]) -> str:
    """Run a call to an endpoint the simulator may not serve yet: "ok", or "error" on 404."""
    try:
        call()
    except openai.NotFoundError:
        return "error"
    return "ok"


def test_images_edit_is_tracked(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    status = _served_or_404(
        lambda: c.images.edit(model="gpt-image-1", image=("a.png", b"png"), prompt="x")
    )
    row = only_row(installed)
    assert (row["api"], row["status"]) == ("images.edits", status)
    if status == "error":
        assert row["error_type"] == "NotFoundError" and row["cost_nanos"] == 0


def test_audio_transcription_tokens_seconds_and_speech(
    installed: Any, fresh_sim: SimServer, no_price_warnings: None
) -> None:
    c = client(fresh_sim)
    tr = c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", AUDIO), prompt="names"
    )
    c.audio.transcriptions.create(model="whisper-1", file=("a.wav", AUDIO))  # seconds
    text = c.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", AUDIO), response_format="text"
    )
    speech = c.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hello there")
    assert speech.content.startswith(b"ID3")
    tokens, seconds, plain, spoken = rows(installed)
    assert tokens["api"] == "audio.transcriptions" and tokens["usage_estimated"] is False
    usage: Any = tr.usage
    assert tokens["input_tokens"] == usage.input_tokens
    assert tokens["output_tokens"] == usage.output_tokens
    assert tokens["cost_nanos"] > 0
    assert seconds["usage_estimated"] is True and seconds["price_status"] == "unknown"
    assert plain["usage_estimated"] is True
    assert plain["output_tokens"] == (len(str(text).encode()) + 3) // 4
    assert spoken["api"] == "audio.speech" and spoken["usage_estimated"] is True
    assert spoken["input_tokens"] == 3  # ceil(len("hello there") / 4)
    assert spoken["cost_nanos"] > 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_audio_translation_is_tracked(
    installed: Any, fresh_sim: SimServer, no_price_warnings: None
) -> None:
    c = client(fresh_sim)
    status = _served_or_404(
        lambda: c.audio.translations.create(model="whisper-1", file=("a.wav", AUDIO))
    )
    row = only_row(installed)
    assert (row["api"], row["status"]) == ("audio.translations", status)


def test_async_images_audio_and_speech(
    installed: Any, fresh_sim: SimServer, no_price_warnings: None
) -> None:
    async def go() -> tuple[Any, Any]:
        c = aclient(fresh_sim)
        img = await c.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
        tr = await c.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", AUDIO))
        await c.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hi")
        return img, tr

    img, tr = asyncio.run(go())
    image_row, audio_row, speech_row = rows(installed)
    assert image_row["output_tokens"] == img.usage.output_tokens
    assert audio_row["input_tokens"] == tr.usage.input_tokens
    assert audio_row["usage_estimated"] is False
    assert speech_row["api"] == "audio.speech" and speech_row["usage_estimated"] is True
    assert all(r["cost_nanos"] > 0 for r in (image_row, audio_row, speech_row))


def test_untracked_endpoints_pass_through(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    assert any(m.id == "gpt-4o-mini" for m in c.models.list())
    resp = c.responses.create(model="gpt-4o-mini", input="hi")
    assert c.responses.retrieve(resp.id).id == resp.id
    assert len(rows(installed)) == 1


# -- raw responses, clients and resources from before install() ---------------------------------


def test_client_and_raw_wrappers_created_before_install(
    fresh_sim: SimServer, tmp_path: Any
) -> None:
    c = client(fresh_sim)
    raw_create = c.chat.completions.with_raw_response.create
    streaming_create = c.chat.completions.with_streaming_response.create
    raw_embed = c.embeddings.with_raw_response.create
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'before.sqlite'}", org="acme")
    try:
        raw = raw_create(model="gpt-4o-mini", messages=user("hi"))
        parsed = raw.parse()
        with streaming_create(model="gpt-4o-mini", messages=user("hi")) as resp:
            streamed = resp.parse()
        raw_embed(model="text-embedding-3-small", input="x")
        with streaming_create(model="gpt-4o-mini", messages=user("never read")) as resp:
            pass  # closed without reading: settled from an estimate
    finally:
        llmspend.uninstall()
    a, b, e, unread = rows(tracker)
    assert_chat_row(a, parsed.usage)
    assert_chat_row(b, streamed.usage)
    assert a["request_id"] == raw.request_id
    assert e["api"] == "embeddings" and e["input_tokens"] == 1
    assert unread["status"] == "partial" and unread["usage_estimated"] is True


def test_async_raw_and_streaming_response(installed: Any, fresh_sim: SimServer) -> None:
    c = aclient(fresh_sim)

    async def go() -> tuple[Any, Any]:
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user("hi")
        )
        async with c.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=user("hi")
        ) as resp:
            streamed = await resp.parse()
        return raw.parse(), streamed

    first, second = asyncio.run(go())
    a, b = rows(installed)
    assert_chat_row(a, first.usage)
    assert_chat_row(b, second.usage)


def test_module_level_client(installed: Any, fresh_sim: SimServer, monkeypatch: Any) -> None:
    monkeypatch.setattr(openai, "api_key", "x")
    monkeypatch.setattr(openai, "base_url", fresh_sim.openai_base_url + "/")
    monkeypatch.setattr(openai, "max_retries", 0)
    monkeypatch.setattr(openai, "_client", None)
    resp = openai.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert_chat_row(only_row(installed), resp.usage)


# -- same objects as without llmspend ---------------------------------------------------------

_VOLATILE = {"id", "created", "created_at"}


def scrub(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


def test_results_are_the_sdks_own_and_unchanged(fresh_sim: SimServer, tmp_path: Any) -> None:
    c = client(fresh_sim)

    def run() -> list[Any]:
        return [
            c.chat.completions.create(model="gpt-4o-mini", messages=user("same")),
            c.responses.create(model="o3-mini", input="same"),
            c.embeddings.create(model="text-embedding-3-small", input="same"),
        ]

    plain = run()
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'same.sqlite'}")
    try:
        hooked = run()
    finally:
        llmspend.uninstall()
    assert len(tracker.recent) == 3
    for a, b in zip(plain, hooked, strict=True):
        assert type(a) is type(b)
        assert scrub(a.model_dump()) == scrub(b.model_dump())


# -- install / uninstall -------------------------------------------------------------------------


def test_install_twice_does_not_double_count_and_uninstall_restores(
    fresh_sim: SimServer, tmp_path: Any
) -> None:
    before = (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"])
    url = f"sqlite:///{tmp_path / 'twice.sqlite'}"
    tracker = llmspend.install(url)
    llmspend.install(url)
    try:
        assert SyncAPIClient.__dict__["request"] is not before[0]
        client(fresh_sim).chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
        assert len(tracker.recent) == 1
    finally:
        llmspend.uninstall()
    after = (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"])
    assert after[0] is before[0] and after[1] is before[1]
    client(fresh_sim).chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert len(tracker.recent) == 1
    assert len(llmspend.records()) == 1


# -- provider errors -----------------------------------------------------------------------------


def _raise(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("expected an exception")


@pytest.mark.parametrize(
    ("prompt", "timeout", "expected"),
    [
        ("#sim:error=429", None, openai.RateLimitError),
        ("#sim:error=400", None, openai.BadRequestError),
        ("#sim:error=500", None, openai.InternalServerError),
        ("#sim:delay=0.8", 0.2, openai.APITimeoutError),
    ],
)
def test_provider_errors_are_recorded_and_reraised_unchanged(
    fresh_sim: SimServer, tmp_path: Any, prompt: str, timeout: float | None, expected: type
) -> None:
    c = client(fresh_sim, timeout=timeout) if timeout else client(fresh_sim)

    def call() -> Any:
        return c.chat.completions.create(model="gpt-4o-mini", messages=user(prompt))

    plain = _raise(call)
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'err.sqlite'}")
    try:
        hooked = _raise(call)
    finally:
        llmspend.uninstall()
    assert type(plain) is type(hooked) is expected
    assert str(plain) == str(hooked)
    row = only_row(tracker)
    assert row["status"] == "error" and row["error_type"] == expected.__name__
    assert row["cost_nanos"] == 0 and row["input_tokens"] == 0


def test_error_object_is_the_same_one_the_sdk_raised(installed: Any, fresh_sim: SimServer) -> None:
    import wrapt

    made: list[BaseException] = []

    def spy(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        made.append(wrapped(*args, **kwargs))
        return made[-1]

    handle = wrapt.wrap_function_wrapper(SyncAPIClient, "_make_status_error_from_response", spy)
    try:
        fresh_sim.set_behavior(error=503, error_times=1)
        exc = _raise(
            lambda: client(fresh_sim).chat.completions.create(
                model="gpt-4o-mini", messages=user("x")
            )
        )
    finally:
        wrapt.unwrap_object(SyncAPIClient, "_make_status_error_from_response", handle)
    assert made == [exc] and made[0] is exc
    assert only_row(installed)["error_type"] == "InternalServerError"


def test_async_error(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> Any:
        return await aclient(fresh_sim).chat.completions.create(
            model="gpt-4o-mini", messages=user("#sim:error=429")
        )

    with pytest.raises(openai.RateLimitError):
        asyncio.run(go())
    assert only_row(installed)["error_type"] == "RateLimitError"


def test_retries_inside_one_call_give_one_row(installed: Any, fresh_sim: SimServer) -> None:
    fresh_sim.set_behavior(error=500, error_times=1)
    c = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=1)
    resp = c.with_options(timeout=5).chat.completions.create(
        model="gpt-4o-mini", messages=user("hi")
    )
    assert fresh_sim.request_count == 2
    assert_chat_row(only_row(installed), resp.usage)


# -- budget seam ---------------------------------------------------------------------------------


def _refuse(call: Any) -> None:
    raise llmspend.BudgetExceeded(
        budget="team", scope="acme", period="day", limit=Decimal(1), spent=Decimal(1),
        reserved=Decimal(0), estimate=Decimal("0.01"), resets_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip


def test_budget_refusal_sends_nothing(installed: Any, fresh_sim: SimServer) -> None:
    installed.before_call_hooks.append(_refuse)
    c = client(fresh_sim)
    with pytest.raises(llmspend.BudgetExceeded):
        c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    with pytest.raises(llmspend.BudgetExceeded):
        c.chat.completions.create(model="gpt-4o-mini", messages=user("hi"), stream=True)
    with pytest.raises(llmspend.BudgetExceeded):
        c.responses.with_raw_response.create(model="gpt-4o-mini", input="hi")

    async def go() -> Any:
        return await aclient(fresh_sim).embeddings.create(model="text-embedding-3-small", input="x")

    with pytest.raises(llmspend.BudgetExceeded):
        asyncio.run(go())
    assert fresh_sim.request_count == 0
    c.models.list()  # untracked endpoints are never refused
    assert fresh_sim.request_count == 1


def test_budget_hook_sees_the_request(installed: Any, fresh_sim: SimServer) -> None:
    seen: list[Any] = []
    installed.before_call_hooks.append(seen.append)
    client(fresh_sim).chat.completions.create(
        model="gpt-4o-mini", messages=user("hello"), max_completion_tokens=50
    )
    (call,) = seen
    assert (call.provider, call.api, call.model) == (
        "openai-compatible",
        "chat.completions",
        "gpt-4o-mini",
    )
    assert call.output_cap == 50 and call.input_upper >= len("hello")


# -- providers -----------------------------------------------------------------------------------


def test_azure_deployment_is_priced_by_the_response_model(
    installed: Any, fresh_sim: SimServer
) -> None:
    fresh_sim.set_behavior(azure_deployments={"prod-chat": "gpt-4o-mini"})
    az = openai.AzureOpenAI(
        azure_endpoint=fresh_sim.url, api_version="2024-10-21", api_key="x", max_retries=0
    )
    resp = az.chat.completions.create(model="prod-chat", messages=user("hi"))
    assert resp.model == "gpt-4o-mini"
    row = only_row(installed)
    assert row["provider"] == "azure"
    assert (row["model"], row["requested_model"]) == ("gpt-4o-mini", "prod-chat")
    assert row["input_tokens"] == resp.usage.prompt_tokens and row["cost_nanos"] > 0


class _ToSim(httpx2.BaseTransport):
    """Sends every request to the simulator, whatever host the client was built for."""

    def __init__(self, sim: SimServer, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self._sim = sim
        self._inner = httpx2.HTTPTransport()
        self._rewrite = rewrite

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=self._sim.port)
        response = self._inner.handle_request(request)
        if self._rewrite is None:
            return response
        body = self._rewrite(response.read())
        return httpx2.Response(response.status_code, headers=response.headers, content=body)


def test_xai_reasoning_outside_completion_tokens(installed: Any, fresh_sim: SimServer) -> None:
    xai = openai.OpenAI(
        api_key="x",
        base_url="https://api.x.ai/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=_ToSim(fresh_sim)),
        default_headers={"X-Sim-Provider": "xai"},
    )
    resp = xai.chat.completions.create(model="grok-3-mini", messages=user("hi"))
    usage: Any = resp.usage
    extra = usage.total_tokens - usage.prompt_tokens - usage.completion_tokens
    assert extra > 0
    row = only_row(installed)
    assert row["provider"] == "xai"
    assert row["output_tokens"] == usage.completion_tokens + extra
    assert row["reasoning_tokens"] == extra
    assert row["cost_nanos"] > 0


def test_openrouter_detection_end_to_end(installed: Any, fresh_sim: SimServer) -> None:
    router = openai.OpenAI(
        api_key="x",
        base_url="https://openrouter.ai/api/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=_ToSim(fresh_sim)),
    )
    resp = router.chat.completions.create(model="openai/gpt-4o-mini", messages=user("hi"))
    row = only_row(installed)
    assert (row["provider"], row["model"]) == ("openrouter", "openai/gpt-4o-mini")
    assert row["input_tokens"] == resp.usage.prompt_tokens and row["cost_nanos"] > 0


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://eu.api.openai.com/v1", "openai"),
        ("https://api.x.ai/v1", "xai"),
        ("https://x.ai/v1", "xai"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://myres.openai.azure.com/openai/v1", "azure"),
        ("https://myres.cognitiveservices.azure.com/openai/v1", "azure"),
        ("https://proj.services.ai.azure.com/openai/v1", "azure"),
        ("http://127.0.0.1:8000/v1", "openai-compatible"),
        ("https://api.groq.com/openai/v1", "openai-compatible"),
        ("https://notx.ai/v1", "openai-compatible"),
    ],
)
def test_detect_provider_by_host(base_url: str, expected: str) -> None:
    assert detect_provider(openai.OpenAI(api_key="x", base_url=base_url)) == expected
    assert detect_provider(openai.AsyncOpenAI(api_key="x", base_url=base_url)) == expected


def test_a_client_whose_base_url_changes_is_detected_anew() -> None:
    client = openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1")
    assert detect_provider(client) == "openai"
    client.base_url = "https://api.x.ai/v1"
    assert detect_provider(client) == "xai"
    client.base_url = "https://api.openai.com/v1"
    assert detect_provider(client) == "openai"


def test_detect_azure_by_class() -> None:
    for cls in (openai.AzureOpenAI, openai.AsyncAzureOpenAI):
        az = cls(azure_endpoint="http://127.0.0.1:1", api_version="2024-10-21", api_key="x")
        assert detect_provider(az) == "azure"
    assert provider_for_host("API.OpenAI.com.") == "openai"


# -- malformed usage never reaches the caller ------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"prompt_tokens": -1, "completion_tokens": 3}, {"prompt_tokens": "7"},
     {"prompt_tokens": 2, "completion_tokens": None},
     {"prompt_tokens": True, "completion_tokens": 1}, "lots", [1, 2], {"input_tokens": 3},
     {"type": "duration", "seconds": 3}],
)  # fmt: skip
def test_normalize_usage_rejects_malformed(bad: Any) -> None:
    assert normalize_usage(bad, "chat.completions") is None


def test_normalize_usage_shapes() -> None:
    chat = {
        "prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 10},
    }  # fmt: skip
    u = normalize_usage(chat)
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (
        100, 30, 5,
    )  # fmt: skip
    assert (u.output_tokens, u.reasoning_tokens) == (40, 10)
    xai = dict(chat, completion_tokens=30, total_tokens=140)  # 10 reasoning outside
    u = normalize_usage(xai)
    assert u is not None and (u.output_tokens, u.reasoning_tokens) == (40, 10)
    bad_details = dict(chat, prompt_tokens_details={"cached_tokens": "x"})
    u = normalize_usage(bad_details)
    assert u is not None and u.cached_input_tokens == 0
    u = normalize_usage({"prompt_tokens": 5, "total_tokens": 5}, "embeddings")
    assert u is not None and (u.input_tokens, u.output_tokens) == (5, 0)
    resp = {"input_tokens": 9, "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3}}
    u = normalize_usage(resp)
    assert u is not None and (u.input_tokens, u.output_tokens, u.reasoning_tokens) == (9, 7, 3)


@pytest.mark.parametrize("make", ["model_validate", "construct"])
def test_normalize_usage_reads_the_sdks_models_and_the_fields_they_do_not_declare(
    make: str,
) -> None:
    """The SDK's pydantic types: declared fields, fields a provider added (kept as
    extras: here ``cache_write_tokens`` and xAI-style reasoning outside the output), and
    fields a provider left out, alike as the SDK validates or constructs them."""
    from openai.types import CompletionUsage
    from openai.types.responses import ResponseUsage

    chat = {
        "prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 4}, "num_sources_used": 2,
    }  # fmt: skip
    model = CompletionUsage.construct(**chat) if make == "construct" else None
    model = model or CompletionUsage.model_validate(chat)
    u = normalize_usage(model, "chat.completions")
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (100, 30, 5)
    assert (u.output_tokens, u.reasoning_tokens) == (40, 10)
    # A server that answers chat completions with Responses-style usage: only extras.
    odd = CompletionUsage.construct(input_tokens=9, output_tokens=7)
    u = normalize_usage(odd, "chat.completions")
    assert u is not None and (u.input_tokens, u.output_tokens) == (9, 7)
    bare = CompletionUsage.model_validate({"prompt_tokens": 7, "completion_tokens": 2,
                                           "total_tokens": 9})  # fmt: skip
    u = normalize_usage(bare, "chat.completions")
    assert u is not None and (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (7, 0, 2)
    resp = {
        "input_tokens": 9, "output_tokens": 7, "total_tokens": 16,
        "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 1},
        "output_tokens_details": {"reasoning_tokens": 3},
    }  # fmt: skip
    u = normalize_usage(ResponseUsage.model_validate(resp), "responses")
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (9, 2, 1)
    assert (u.output_tokens, u.reasoning_tokens) == (7, 3)


@pytest.mark.parametrize("bad", [None, -5, "many", {"prompt_tokens": [1]}])
def test_malformed_usage_from_the_wire_is_estimated(
    installed: Any, fresh_sim: SimServer, bad: Any
) -> None:
    def mangle(body: bytes) -> bytes:
        data = json.loads(body)
        data["usage"] = bad
        return json.dumps(data).encode()

    c = openai.OpenAI(
        api_key="x",
        base_url="http://sim.invalid/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=_ToSim(fresh_sim, mangle)),
    )
    resp = c.chat.completions.create(model="gpt-4o-mini", messages=user("hello there"))
    assert resp.choices[0].message.content
    row = only_row(installed)
    assert row["status"] == "ok" and row["usage_estimated"] is True
    assert row["output_tokens"] == (len(resp.choices[0].message.content.encode()) + 3) // 4
    assert row["input_tokens"] > 0 and row["cost_nanos"] > 0


def test_openai_imported_after_install(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = f"""
import sys, llmspend
tracker = llmspend.install("sqlite:///{tmp_path / "late.sqlite"}")
assert "openai" not in sys.modules
import openai
from llmspend.sim import SimServer
with SimServer() as sim:
    c = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    c.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "x"}}])
assert len(tracker.recent) == 1, tracker.recent
"""
    env = {"LLMSPEND_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
