"""The anthropic SDK plugin: the real SDK against the simulator on 127.0.0.1.

Every test asserts what the user would see: one row per call, the provider's tokens
(normalized: our input includes cache reads and writes), a cost, and the SDK's own
objects, events and exceptions unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic._base_client import AsyncAPIClient, SyncAPIClient

import llmspend
from llmspend.providers.anthropic_sdk import detect_provider
from llmspend.sim import SimServer

MODEL = "claude-sonnet-4-5"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def client(sim: SimServer, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.Anthropic(api_key="x", base_url=sim.url, **kw)


def aclient(sim: SimServer, **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(api_key="x", base_url=sim.url, **kw)


def only_row(tracker: Any) -> dict[str, Any]:
    recorded = list(tracker.recent)
    assert len(recorded) == 1, recorded
    return recorded[0]


def assert_row(row: dict[str, Any], usage: Any, *, streamed: bool = False) -> None:
    """The row holds the provider's usage, normalized, and a cost."""
    read = usage.cache_read_input_tokens or 0
    write = usage.cache_creation_input_tokens or 0
    assert (row["provider"], row["api"], row["status"]) == ("anthropic", "messages", "ok")
    assert row["input_tokens"] == usage.input_tokens + read + write
    assert row["cached_input_tokens"] == read
    assert row["cache_write_tokens"] == write
    assert row["output_tokens"] == usage.output_tokens
    assert row["usage_estimated"] is False
    assert row["streamed"] is streamed
    assert row["cost_nanos"] > 0
    assert row["org_name"] == "acme"


def settled() -> None:
    """Join the threads that settle collected streams (no timing involved)."""
    for thread in threading.enumerate():
        if thread.name == "llmspend-settle":
            thread.join(10)


def test_the_price_data_knows_the_models() -> None:
    price = llmspend.price(
        MODEL, provider="anthropic", input_tokens=1000, cached_input_tokens=200,
        cache_write_tokens=300, output_tokens=100,
    )  # fmt: skip
    assert price.status == "priced" and price.total_usd is not None and price.total_usd > 0
    plain = llmspend.price(MODEL, provider="anthropic", input_tokens=1000, output_tokens=100)
    assert plain.total_usd is not None and price.total_usd != plain.total_usd  # cache rates


# -- one row per call, with the provider's tokens ---------------------------------------------


def test_create_records_one_priced_row_with_cache_normalized(
    installed: Any, fresh_sim: SimServer
) -> None:
    msg = client(fresh_sim).messages.create(
        model=MODEL, max_tokens=300, messages=user("hello there #sim:cached=6 #sim:cache_write=5")
    )
    assert msg.usage.cache_read_input_tokens == 6 and msg.usage.cache_creation_input_tokens == 5
    row = only_row(installed)
    assert_row(row, msg.usage)
    assert row["model"] == MODEL and row["request_id"] == msg._request_id
    frame = llmspend.records()
    assert len(frame) == 1 and frame.loc[0, "cost_usd"] > Decimal(0)
    assert frame.loc[0, "provider"] == "anthropic"
    # priced as the price book prices the normalized tokens
    expected = llmspend.price(MODEL, provider="anthropic", input_tokens=row["input_tokens"],
                              cached_input_tokens=6, cache_write_tokens=5,
                              output_tokens=row["output_tokens"])  # fmt: skip
    assert frame.loc[0, "cost_usd"] == expected.total_usd


def test_one_hour_cache_writes_and_thinking(installed: Any, fresh_sim: SimServer) -> None:
    system = [{"type": "text", "text": "context", "cache_control": {"type": "ephemeral",
                                                                    "ttl": "1h"}}]  # fmt: skip
    msg = client(fresh_sim).messages.create(
        model=MODEL, max_tokens=2000, system=system,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024}, messages=user("hi #sim:cache_write=4"),
    )  # fmt: skip
    assert msg.usage.cache_creation is not None
    assert msg.usage.cache_creation.ephemeral_1h_input_tokens == 4
    row = only_row(installed)
    assert_row(row, msg.usage)
    thinking = msg.usage.output_tokens_details
    assert thinking is not None and row["reasoning_tokens"] == thinking.thinking_tokens > 0


def test_async_create(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> Any:
        c = aclient(fresh_sim)
        msg = await c.messages.create(model=MODEL, max_tokens=100, messages=user("hi async"))
        await c.close()
        return msg

    msg = asyncio.run(go())
    assert_row(only_row(installed), msg.usage)


def test_beta_messages_create(installed: Any, fresh_sim: SimServer) -> None:
    msg = client(fresh_sim).beta.messages.create(model=MODEL, max_tokens=100, messages=user("b"))
    assert fresh_sim.requests[-1].path.startswith("/v1/messages")
    assert_row(only_row(installed), msg.usage)


def test_count_tokens_is_free_and_gives_no_row(installed: Any, fresh_sim: SimServer) -> None:
    c = client(fresh_sim)
    counted = c.messages.count_tokens(model=MODEL, messages=user("count me"))
    assert counted.input_tokens > 0
    assert list(installed.recent) == []
    assert fresh_sim.request_count == 1


# -- streams: the same events, one row ----------------------------------------------------------


def _same_events(fresh_sim: SimServer, tmp_path: Any, run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` without llmspend and with it (the simulator reset: the same ids)."""
    fresh_sim.reset()
    plain = run()
    tracker = llmspend.install(f"sqlite:///{tmp_path / 's.sqlite'}", org="acme")
    try:
        fresh_sim.reset()
        hooked = run()
    finally:
        llmspend.uninstall()
    assert hooked == plain
    return hooked, only_row(tracker)


def test_create_stream_sync(fresh_sim: SimServer, tmp_path: Any) -> None:
    def run() -> Any:
        stream = client(fresh_sim).messages.create(
            model=MODEL, max_tokens=100, messages=user("a story #sim:cached=3"), stream=True
        )
        return [e.model_dump() for e in stream]

    events, row = _same_events(fresh_sim, tmp_path, run)
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"]
    final = anthropic.types.MessageDeltaUsage(**events[-2]["usage"])
    assert_row(row, final, streamed=True)


def test_create_stream_async(fresh_sim: SimServer, tmp_path: Any) -> None:
    def run() -> Any:
        async def go() -> Any:
            c = aclient(fresh_sim)
            stream = await c.messages.create(
                model=MODEL, max_tokens=100, messages=user("async story"), stream=True
            )
            out = [e.model_dump() async for e in stream]
            await c.close()
            return out

        return asyncio.run(go())

    events, row = _same_events(fresh_sim, tmp_path, run)
    assert_row(row, anthropic.types.MessageDeltaUsage(**events[-2]["usage"]), streamed=True)


def test_messages_stream_helper_sync(fresh_sim: SimServer, tmp_path: Any) -> None:
    def run() -> Any:
        with client(fresh_sim).messages.stream(
            model=MODEL, max_tokens=100, messages=user("stream helper")
        ) as stream:
            texts = list(stream.text_stream)
            final = stream.get_final_message()
        return texts, final.model_dump()

    (texts, final), row = _same_events(fresh_sim, tmp_path, run)
    assert texts and "".join(texts) == final["content"][0]["text"]
    assert_row(row, anthropic.types.Usage(**final["usage"]), streamed=True)


def test_messages_stream_helper_async(fresh_sim: SimServer, tmp_path: Any) -> None:
    def run() -> Any:
        async def go() -> Any:
            c = aclient(fresh_sim)
            async with c.messages.stream(
                model=MODEL, max_tokens=100, messages=user("async helper")
            ) as stream:
                kinds = [e.type async for e in stream]
                final = await stream.get_final_message()
            await c.close()
            return kinds, final.model_dump()

        return asyncio.run(go())

    (kinds, final), row = _same_events(fresh_sim, tmp_path, run)
    assert "text" in kinds and kinds[-1] == "message_stop"
    assert_row(row, anthropic.types.Usage(**final["usage"]), streamed=True)


def test_early_close_is_partial_once(installed: Any, fresh_sim: SimServer) -> None:
    stream = client(fresh_sim).messages.create(
        model=MODEL, max_tokens=100, messages=user("close me"), stream=True
    )
    first = next(iter(stream))
    assert first.type == "message_start"
    stream.close()
    stream.close()
    row = only_row(installed)
    assert row["status"] == "partial" and row["usage_estimated"] is True
    assert row["input_tokens"] == first.message.usage.input_tokens


def test_async_early_close_with_context_manager(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> None:
        c = aclient(fresh_sim)
        async with c.messages.stream(model=MODEL, max_tokens=100, messages=user("x")) as s:
            async for event in s:
                if event.type == "content_block_delta":
                    break
        await c.close()

    asyncio.run(go())
    assert only_row(installed)["status"] == "partial"


def test_abandoned_stream_is_settled_once_when_collected(
    installed: Any, fresh_sim: SimServer
) -> None:
    stream = client(fresh_sim).messages.create(
        model=MODEL, max_tokens=100, messages=user("abandon"), stream=True
    )
    next(iter(stream))
    del stream
    gc.collect()
    settled()
    row = only_row(installed)
    assert row["status"] == "partial"


def test_cut_stream_raises_unchanged_and_is_partial(installed: Any, fresh_sim: SimServer) -> None:
    stream = client(fresh_sim).messages.create(
        model=MODEL, max_tokens=100, messages=user("cut #sim:cut=4"), stream=True
    )
    seen = []
    with pytest.raises(anthropic.APIConnectionError):
        for event in stream:
            seen.append(event.type)
    assert seen[0] == "message_start"
    row = only_row(installed)
    assert row["status"] == "partial" and row["error_type"] == "APIConnectionError"


# -- raw responses ------------------------------------------------------------------------------


def test_with_raw_response(installed: Any, fresh_sim: SimServer) -> None:
    raw = client(fresh_sim).messages.with_raw_response.create(
        model=MODEL, max_tokens=100, messages=user("raw #sim:cached=2")
    )
    msg = raw.parse()
    assert raw.headers["request-id"] == msg._request_id
    row = only_row(installed)
    assert_row(row, msg.usage)
    assert row["request_id"] == raw.headers["request-id"]


def test_with_streaming_response_lines(installed: Any, fresh_sim: SimServer) -> None:
    with client(fresh_sim).messages.with_streaming_response.create(
        model=MODEL, max_tokens=100, messages=user("raw stream"), stream=True
    ) as raw:
        lines = list(raw.iter_lines())
    assert any(line.startswith("event: message_stop") for line in lines)
    row = only_row(installed)
    assert row["status"] == "ok" and row["usage_estimated"] is False and row["output_tokens"] > 0


def test_with_streaming_response_json_async(installed: Any, fresh_sim: SimServer) -> None:
    async def go() -> Any:
        c = aclient(fresh_sim)
        async with c.messages.with_streaming_response.create(
            model=MODEL, max_tokens=100, messages=user("raw json")
        ) as raw:
            msg = await raw.parse()
        await c.close()
        return msg

    msg = asyncio.run(go())
    assert_row(only_row(installed), msg.usage)


# -- errors and retries -------------------------------------------------------------------------


def test_server_error_is_recorded_and_reraised_unchanged(
    installed: Any, fresh_sim: SimServer
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client(fresh_sim).messages.create(
            model=MODEL, max_tokens=10, messages=user("#sim:error=400")
        )
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    row = only_row(installed)
    assert (row["status"], row["error_type"], row["cost_nanos"]) == ("error", "BadRequestError", 0)


def test_retries_inside_one_call_give_one_row(installed: Any, fresh_sim: SimServer) -> None:
    fresh_sim.set_behavior(error=529, error_times=2)
    msg = client(fresh_sim, max_retries=2).messages.create(
        model=MODEL, max_tokens=50, messages=user("retry me")
    )
    assert fresh_sim.request_count == 3
    assert_row(only_row(installed), msg.usage)


def test_overloaded_after_retries_is_one_error_row(installed: Any, fresh_sim: SimServer) -> None:
    fresh_sim.set_behavior(error=529)
    with pytest.raises(anthropic.OverloadedError):
        client(fresh_sim, max_retries=1).messages.create(
            model=MODEL, max_tokens=50, messages=user("busy")
        )
    assert fresh_sim.request_count == 2
    assert only_row(installed)["error_type"] == "OverloadedError"


# -- budgets ------------------------------------------------------------------------------------


def test_hard_budget_refuses_once_before_anything_is_sent(
    installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.set_budget("project", "acme/churn", "0.0001", "day", mode="hard")
    c = client(fresh_sim, max_retries=3)
    with pytest.raises(llmspend.BudgetExceeded):
        c.messages.create(model=MODEL, max_tokens=4000, messages=user("too dear"))
    helper = c.messages.stream(model=MODEL, max_tokens=4000, messages=user("too dear"))
    with pytest.raises(llmspend.BudgetExceeded), helper:
        pass  # pragma: no cover

    async def go() -> None:
        ac = aclient(fresh_sim, max_retries=3)
        await ac.messages.create(model=MODEL, max_tokens=4000, messages=user("too dear, async"))

    with pytest.raises(llmspend.BudgetExceeded):
        asyncio.run(go())
    assert fresh_sim.request_count == 0
    frame = llmspend.records()
    assert list(frame.status) == ["refused"] * 3  # one row per refusal, not one per retry
    with pytest.raises(llmspend.BudgetExceeded):  # the caller asks again: a new action
        c.messages.create(model=MODEL, max_tokens=4000, messages=user("too dear"))
    assert len(llmspend.records()) == 4 and fresh_sim.request_count == 0
    c.messages.count_tokens(model=MODEL, messages=user("free"))  # free calls pass
    assert fresh_sim.request_count == 1


# -- install / uninstall, providers -------------------------------------------------------------


def test_install_twice_does_not_double_count_and_uninstall_restores(
    fresh_sim: SimServer, tmp_path: Any
) -> None:
    before = (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"])
    url = f"sqlite:///{tmp_path / 'twice.sqlite'}"
    tracker = llmspend.install(url)
    llmspend.install(url)
    try:
        assert SyncAPIClient.__dict__["request"] is not before[0]
        client(fresh_sim).messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
        assert len(tracker.recent) == 1
    finally:
        llmspend.uninstall()
    after = (SyncAPIClient.__dict__["request"], AsyncAPIClient.__dict__["request"])
    assert after[0] is before[0] and after[1] is before[1]
    client(fresh_sim).messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert len(tracker.recent) == 1


def test_cloud_clients_are_labelled_by_their_price_provider() -> None:
    assert detect_provider(anthropic.Anthropic(api_key="x")) == "anthropic"
    bedrock = anthropic.AnthropicBedrock(aws_access_key="a", aws_secret_key="b",
                                         aws_region="us-east-1")  # fmt: skip
    assert detect_provider(bedrock) == "aws"
    vertex = anthropic.AnthropicVertex(project_id="p", region="us-east5", access_token="t")
    assert detect_provider(vertex) == "google"
    for provider, model in (("aws", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
                            ("google", "claude-sonnet-4-5@20250929")):  # fmt: skip
        assert llmspend.price(model, provider=provider, input_tokens=10).status == "priced"
