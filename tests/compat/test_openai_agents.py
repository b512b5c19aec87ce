"""openai-agents: an Agent on the Chat Completions and the Responses models (AsyncOpenAI),
``Runner.run``, ``Runner.run_streamed`` and a refusal."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from .matrix import Probe, run

agents = pytest.importorskip("agents")
agents.set_tracing_disabled(True)


def agent(sim: Any, kind: str) -> Any:
    client = openai.AsyncOpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    if kind == "chat":
        model: Any = agents.OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=client)
    else:
        model = agents.OpenAIResponsesModel("gpt-4o-mini", openai_client=client)
    settings = agents.ModelSettings(include_usage=True)
    return agents.Agent(name="a", instructions="Be brief.", model=model, model_settings=settings)


KINDS = pytest.mark.parametrize("kind", ["chat", "responses"])


def usage(result: Any) -> tuple[int, int]:
    u = result.context_wrapper.usage
    return u.input_tokens, u.output_tokens


@KINDS
def test_a_run_is_recorded_once_with_the_servers_usage(kind: str, spend: Probe) -> None:
    one = run(agents.Runner.run(agent(spend.sim, kind), "what is up?"))
    two = run(agents.Runner.run(agent(spend.sim, kind), "what is up again?"))
    assert one.final_output and two.final_output
    spend.check_recorded([usage(one), usage(two)], streamed=[False, False])


@KINDS
def test_a_streamed_run_is_recorded_once_and_the_text_is_unchanged(kind: str, spend: Probe) -> None:
    async def stream() -> tuple[list[str], Any]:
        result = agents.Runner.run_streamed(agent(spend.sim, kind), "stream it")
        deltas = [
            ev.data.delta
            async for ev in result.stream_events()
            if ev.type == "raw_response_event"
            and getattr(ev.data, "type", "").endswith("output_text.delta")
        ]
        return deltas, result

    without, _ = spend.without(lambda: run(stream()))
    got, result = run(stream())
    assert got == without and "".join(got)
    spend.check_recorded([usage(result)], streamed=[True])


@KINDS
def test_a_refusal_surfaces_as_budget_exceeded(kind: str, spend: Probe) -> None:
    refusal = spend.refuse(lambda: run(agents.Runner.run(agent(spend.sim, kind), "refuse me")))
    assert refusal.budget_exceeded is not None, refusal.type_name
    assert refusal.names_the_budget, str(refusal.exc)
