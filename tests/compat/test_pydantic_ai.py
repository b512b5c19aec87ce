"""pydantic-ai: an Agent on OpenAI chat, OpenAI Responses and Google (google-genai) —
run_sync, run, run_stream and a refusal."""

from __future__ import annotations

from typing import Any

import pytest

from .matrix import Probe, run

pytest.importorskip("pydantic_ai")


def chat(sim: Any) -> Any:
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(sim.openai_base_url, "x"))


def responses(sim: Any) -> Any:
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIResponsesModel("gpt-4o-mini", provider=OpenAIProvider(sim.openai_base_url, "x"))


def google(sim: Any) -> Any:
    from pydantic_ai.models.google import GoogleModel
    from pydantic_ai.providers.google import GoogleProvider

    return GoogleModel("gemini-2.0-flash", provider=GoogleProvider(api_key="k", base_url=sim.url))


MODELS = pytest.mark.parametrize(
    "make", [chat, responses, google], ids=["openai-chat", "openai-responses", "google"]
)


def agent(model: Any) -> Any:
    from pydantic_ai import Agent

    return Agent(model, retries=0)


def usage(result: Any) -> tuple[int, int]:
    u = result.usage()
    return u.input_tokens, u.output_tokens


@MODELS
def test_a_run_is_recorded_once_with_the_servers_usage(make: Any, spend: Probe) -> None:
    sync = agent(make(spend.sim)).run_sync("what is up?")
    aio = run(agent(make(spend.sim)).run("what is up, async?"))
    assert sync.output and aio.output
    spend.check_recorded([usage(sync), usage(aio)], streamed=[False, False])


@MODELS
def test_a_stream_is_recorded_once_and_the_text_is_unchanged(make: Any, spend: Probe) -> None:
    async def stream() -> tuple[list[str], tuple[int, int]]:
        async with agent(make(spend.sim)).run_stream("stream it") as result:
            deltas = [d async for d in result.stream_text(delta=True)]
        return deltas, usage(result)

    without, _ = spend.without(lambda: run(stream()))
    got, used = run(stream())
    assert got == without and "".join(got)
    spend.check_recorded([used], streamed=[True])


@MODELS
def test_a_refusal_surfaces_as_budget_exceeded(make: Any, spend: Probe) -> None:
    refusal = spend.refuse(lambda: agent(make(spend.sim)).run_sync("refuse me"))
    assert refusal.budget_exceeded is not None, refusal.type_name
    assert refusal.names_the_budget, str(refusal.exc)
