"""LangChain: ``langchain-openai``'s ChatOpenAI and ``langchain-google-genai``'s
ChatGoogleGenerativeAI — invoke, stream, ainvoke, astream and a refusal."""

from __future__ import annotations

import functools
import operator
from typing import Any

import pytest

from .matrix import Probe, run

pytest.importorskip("langchain_openai")
pytest.importorskip("langchain_google_genai")


def chat_openai(sim: Any) -> Any:
    from langchain_openai import ChatOpenAI

    kw: dict[str, Any] = {"base_url": sim.openai_base_url, "api_key": "x", "max_retries": 0}
    return ChatOpenAI(model="gpt-4o-mini", stream_usage=True, **kw)


def chat_google(sim: Any) -> Any:
    from langchain_google_genai import ChatGoogleGenerativeAI

    return ChatGoogleGenerativeAI(
        model="gemini-2.0-flash", google_api_key="k", base_url=sim.url, max_retries=0
    )


MODELS = pytest.mark.parametrize("make", [chat_openai, chat_google], ids=["openai", "google"])


def usage(message: Any) -> tuple[int, int]:
    md = message.usage_metadata
    return md["input_tokens"], md["output_tokens"]


@MODELS
def test_invoke_is_recorded_once_with_the_servers_usage(make: Any, spend: Probe) -> None:
    llm = make(spend.sim)
    sync = llm.invoke("what is up?")
    aio = run(llm.ainvoke("what is up, async?"))
    assert sync.content and aio.content
    spend.check_recorded([usage(sync), usage(aio)], streamed=[False, False])


@MODELS
def test_a_stream_is_recorded_once_and_the_chunks_are_unchanged(make: Any, spend: Probe) -> None:
    async def astream() -> list[Any]:
        return [c async for c in make(spend.sim).astream("stream it")]

    without = spend.without(lambda: list(make(spend.sim).stream("stream it")))
    got = list(make(spend.sim).stream("stream it"))
    agot = run(astream())
    assert [c.content for c in got] == [c.content for c in without] == [c.content for c in agot]
    total = [functools.reduce(operator.add, chunks) for chunks in (got, agot)]
    spend.check_recorded([usage(m) for m in total], streamed=[True, True])


@MODELS
def test_a_refusal_surfaces_as_budget_exceeded_or_with_it_as_cause(make: Any, spend: Probe) -> None:
    refusal = spend.refuse(lambda: make(spend.sim).invoke("refuse me"))
    assert refusal.budget_exceeded is not None, refusal.type_name
    assert refusal.names_the_budget, str(refusal.exc)
