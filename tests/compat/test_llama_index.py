"""LlamaIndex's OpenAI LLM (``llama-index-llms-openai``): chat, stream_chat, their async
twins and a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from .matrix import Probe, run

pytest.importorskip("llama_index.llms.openai")


def llm(sim: Any) -> Any:
    from llama_index.llms.openai import OpenAI

    return OpenAI(
        model="gpt-4o-mini", api_base=sim.openai_base_url, api_key="x", max_retries=0,
        additional_kwargs={"stream_options": {"include_usage": True}},
    )  # fmt: skip


def ask(text: str) -> list[Any]:
    from llama_index.core.llms import ChatMessage

    return [ChatMessage(role="user", content=text)]


def usage(raw: Any) -> tuple[int, int]:
    u = raw["usage"] if isinstance(raw, dict) else raw.usage
    return u.prompt_tokens, u.completion_tokens


def test_chat_is_recorded_once_with_the_servers_usage(spend: Probe) -> None:
    sync = llm(spend.sim).chat(ask("what is up?"))
    aio = run(llm(spend.sim).achat(ask("what is up, async?")))
    assert sync.message.content and aio.message.content
    spend.check_recorded([usage(sync.raw), usage(aio.raw)], streamed=[False, False])


def test_a_stream_is_recorded_once_and_the_deltas_are_unchanged(spend: Probe) -> None:
    async def astream() -> list[Any]:
        return [c async for c in await llm(spend.sim).astream_chat(ask("stream it"))]

    without = spend.without(lambda: list(llm(spend.sim).stream_chat(ask("stream it"))))
    got = list(llm(spend.sim).stream_chat(ask("stream it")))
    agot = run(astream())
    assert [c.delta for c in got] == [c.delta for c in without] == [c.delta for c in agot]
    assert got[-1].message.content
    spend.check_recorded([usage(got[-1].raw), usage(agot[-1].raw)], streamed=[True, True])


def test_a_refusal_surfaces_as_budget_exceeded(spend: Probe) -> None:
    refusal = spend.refuse(lambda: llm(spend.sim).chat(ask("refuse me")))
    assert refusal.budget_exceeded is not None, refusal.type_name
    assert refusal.names_the_budget, str(refusal.exc)
