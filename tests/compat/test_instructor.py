"""instructor over the openai SDK: a structured ``create`` (sync and async), a streamed
``create_partial``, and a refusal with instructor's own retries."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from pydantic import BaseModel

from .matrix import Probe, run

instructor = pytest.importorskip("instructor")


class Answer(BaseModel):
    answer: str


def client(sim: Any, *, aio: bool = False) -> Any:
    cls = openai.AsyncOpenAI if aio else openai.OpenAI
    return instructor.from_openai(cls(api_key="x", base_url=sim.openai_base_url, max_retries=0))


def ask(text: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "response_model": Answer,
        "messages": [{"role": "user", "content": text}],
    }


def usage(completion: Any) -> tuple[int, int]:
    return completion.usage.prompt_tokens, completion.usage.completion_tokens


def test_create_is_recorded_once_with_the_servers_usage(spend: Probe) -> None:
    got, completion = client(spend.sim).chat.completions.create_with_completion(
        **ask("what is up?"), max_retries=0
    )
    agot, acompletion = run(
        client(spend.sim, aio=True).chat.completions.create_with_completion(
            **ask("what is up, async?"), max_retries=0
        )
    )
    assert isinstance(got, Answer) and isinstance(agot, Answer)
    spend.check_recorded([usage(completion), usage(acompletion)], streamed=[False, False])


def test_a_partial_stream_is_recorded_once_and_the_partials_are_unchanged(spend: Probe) -> None:
    def run() -> list[Any]:
        return list(
            client(spend.sim).chat.completions.create_partial(
                **ask("stream it"), stream_options={"include_usage": True}, max_retries=0
            )
        )

    without = spend.without(run)
    got = run()
    assert [p.model_dump() for p in got] == [p.model_dump() for p in without]
    assert got[-1].answer
    [req] = spend.billed_requests()
    assert req.body["stream"] is True
    [row] = spend.rows()
    assert row["status"] == "ok" and row["streamed"] is True and row["usage_estimated"] is False
    assert row["price_status"] == "priced"


@pytest.mark.parametrize("retries", [0, 3])
def test_a_refusal_surfaces_with_budget_exceeded_as_its_cause(retries: int, spend: Probe) -> None:
    refusal = spend.refuse(
        lambda: client(spend.sim).chat.completions.create(
            **ask(f"refuse me {retries}"), max_retries=retries
        )
    )
    assert refusal.budget_exceeded is not None, refusal.type_name
    assert refusal.names_the_budget, str(refusal.exc)
    assert refusal.type_name.startswith("instructor."), refusal.type_name
