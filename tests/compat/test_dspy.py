"""dspy: ``dspy.LM`` with its default engine (dspy's own HTTP transport over sockets, seen
by llmspend's dspy tap) and with ``engine="litellm"``; ``Predict`` sync and async, and
``dspy.streamify``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmspend.sim import SimServer
from tests.test_http_redirects import CHAT, settled

from .matrix import Probe, run

dspy = pytest.importorskip("dspy")


def lm(sim: Any, engine: str, **extra: Any) -> Any:
    kw: dict[str, Any] = {"api_base": sim.openai_base_url, "api_key": "x", "cache": False}
    return dspy.LM("openai/gpt-4o-mini", num_retries=0, engine=engine, **kw, **extra)


def usages(model: Any) -> list[tuple[int, int]]:
    return [(h["usage"]["prompt_tokens"], h["usage"]["completion_tokens"]) for h in model.history]


def predict(model: Any, question: str) -> Any:
    with dspy.context(lm=model, adapter=dspy.JSONAdapter()):
        return dspy.Predict("question -> answer")(question=question)


async def apredict(model: Any, question: str) -> Any:
    with dspy.context(lm=model, adapter=dspy.JSONAdapter()):
        return await dspy.Predict("question -> answer").acall(question=question)


async def streamed(model: Any, question: str) -> list[Any]:
    program = dspy.streamify(dspy.Predict("question -> answer"))
    with dspy.context(lm=model, adapter=dspy.JSONAdapter()):
        return [chunk async for chunk in program(question=question)]


@pytest.mark.parametrize("engine", ["auto", "litellm"], ids=["default", "litellm"])
def test_predict_is_recorded_once_with_the_servers_usage(engine: str, spend: Probe) -> None:
    model = lm(spend.sim, engine)
    assert predict(model, "what is up?").answer
    assert run(apredict(model, "what is up, async?")).answer
    spend.check_recorded(usages(model), streamed=[False, False])


@pytest.mark.parametrize(
    "engine",
    ["auto", "litellm"],
    ids=["default", "litellm"],
)
def test_streamify_is_recorded_once_and_the_chunks_are_unchanged(engine: str, spend: Probe) -> None:
    def text(chunks: list[Any]) -> list[str]:
        out = []
        for c in chunks[:-1]:
            choices = getattr(c, "choices", None)
            if choices:
                out.append(choices[0].delta.content or "")
            elif getattr(c, "usage", None) is not None:  # the usage chunk (ids vary)
                out.append(f"usage {c.usage.prompt_tokens}/{c.usage.completion_tokens}")
            else:
                out.append(repr(getattr(c, "text", c)))
        return out

    # On an OpenAI-compatible host a stream carries usage only when asked for it (else
    # llmspend records an estimate): litellm passes stream_options through.
    extra = {"stream_options": {"include_usage": True}} if engine == "litellm" else {}
    without = spend.without(lambda: run(streamed(lm(spend.sim, engine, **extra), "stream it")))
    model = lm(spend.sim, engine, **extra)
    got = run(streamed(model, "stream it"))
    assert text(got) == text(without) and got[-1].answer == without[-1].answer
    assert len(spend.rows()) == len(spend.billed_requests()) == 1
    [row] = spend.rows()
    assert row["status"] == "ok" and row["streamed"] is True
    assert row["usage_estimated"] is False


@pytest.mark.parametrize(
    ("engine", "shown"),
    [("auto", "LMUnexpectedError"), ("litellm", "LMServerError")],
    ids=["default", "litellm"],
)
def test_a_refusal_surfaces_as_a_dspy_error(engine: str, shown: str, spend: Probe) -> None:
    refusal = spend.refuse(lambda: predict(lm(spend.sim, engine), "refuse me"))
    assert type(refusal.exc).__name__ == shown, refusal.type_name
    assert refusal.budget_exceeded is not None
    assert refusal.names_the_budget


# -- dspy's own transport (the dspy tap), past a redirect and closed early -----------------
# (here because dspy is installed for the compatibility matrix only; the fixture ``moved``
# is in tests/conftest.py)


def test_a_redirect_to_the_dspy_transport_costs_nothing(moved: str) -> None:
    from dspy._vendor.lm15.transports._sync import StdlibTransport
    from dspy._vendor.lm15.transports._types import TransportRequest

    request = TransportRequest(
        "POST", moved, [("content-type", "application/json")], json.dumps(CHAT).encode()
    )
    with StdlibTransport() as transport, transport.stream(request) as r:
        assert (r.status, r.read()) == (307, b"<html>moved</html>")
    assert settled() == [("error", 0, 0, 0)]


def test_a_dspy_response_closed_early_is_settled_then(moved: str, fresh_sim: SimServer) -> None:
    """A body closed before its end is one ``partial`` row at once, though the caller still
    holds the response (it waited for the response's collection before)."""
    from dspy._vendor.lm15.transports._async import StdlibAsyncTransport
    from dspy._vendor.lm15.transports._sync import StdlibTransport
    from dspy._vendor.lm15.transports._types import TransportRequest

    body = json.dumps({**CHAT, "stream": True}).encode()
    url = fresh_sim.openai_base_url + "/chat/completions"
    held: list[Any] = []

    def request() -> Any:
        return TransportRequest("POST", url, [("content-type", "application/json")], body)

    with StdlibTransport() as transport:
        held.append(transport.stream(request()))
        held[-1].close()  # unread
        assert [s for s, *_ in settled()] == ["partial"]

    async def read_one_then_close() -> None:
        async with StdlibAsyncTransport() as transport:
            held.append(await transport.stream(request()))
            chunks = held[-1].__aiter__()
            await chunks.__anext__()
            held.append(chunks)
            await held[-2].aclose()
            assert [s for s, *_ in settled()] == ["partial", "partial"]

    asyncio.run(read_one_then_close())
