"""litellm: OpenAI-compatible (``openai/...`` with ``api_base``, through the openai SDK with a
plain ``httpx`` client) and native Gemini (``gemini/...``, litellm's own HTTP code)."""

from __future__ import annotations

from typing import Any

import pytest

from .matrix import Probe, body_of, run

litellm = pytest.importorskip("litellm")


def openai_kw(sim: Any, text: str) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "api_base": sim.openai_base_url,
        "api_key": "x",
        "messages": [{"role": "user", "content": text}],
    }


def gemini_kw(sim: Any, text: str) -> dict[str, Any]:
    return {
        "model": "gemini/gemini-2.0-flash",
        "api_base": sim.url + "/v1beta",
        "api_key": "k",
        "messages": [{"role": "user", "content": text}],
    }


def usage(resp: Any) -> tuple[int, int]:
    return resp.usage.prompt_tokens, resp.usage.completion_tokens


def texts(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content or "" for c in chunks if c.choices]


@pytest.mark.parametrize("kw", [openai_kw, gemini_kw], ids=["openai", "gemini"])
def test_completion_is_recorded_once_with_the_servers_usage(kw: Any, spend: Probe) -> None:
    sync = litellm.completion(**kw(spend.sim, "hello litellm"))
    aio = run(litellm.acompletion(**kw(spend.sim, "hello async litellm")))
    spend.check_recorded([usage(sync), usage(aio)], streamed=[False, False])
    assert sync.choices[0].message.content


def _stream(kw: dict[str, Any]) -> list[Any]:
    return list(litellm.completion(**kw, stream=True, stream_options={"include_usage": True}))


async def _astream(kw: dict[str, Any]) -> list[Any]:
    resp = await litellm.acompletion(**kw, stream=True, stream_options={"include_usage": True})
    return [c async for c in resp]


@pytest.mark.parametrize(
    "kw",
    [openai_kw, gemini_kw],
    ids=["openai", "gemini"],
)
def test_a_stream_is_recorded_once_and_the_chunks_are_unchanged(kw: Any, spend: Probe) -> None:
    args = kw(spend.sim, "stream to me")
    without = spend.without(lambda: _stream(args))
    got = _stream(args)
    agot = run(_astream(args))
    assert texts(got) == texts(without) == texts(agot)
    assert "".join(texts(got))
    final = [usage(got[-1]), usage(agot[-1])]
    spend.check_recorded(final, streamed=[True, True])


def test_the_server_reported_usage_is_what_the_simulator_sent(spend: Probe) -> None:
    """The usage litellm shows is the simulator's own (not litellm's recount)."""
    resp = litellm.completion(**openai_kw(spend.sim, "count me"))
    [req] = spend.billed_requests()
    assert body_of(req)["messages"][0]["content"] == "count me"
    [row] = spend.rows()
    assert (row["input_tokens"], row["output_tokens"]) == usage(resp)


def test_a_refusal_with_default_retries_is_one_row_and_nothing_sent(spend: Probe) -> None:
    """litellm maps the refusal to its retryable InternalServerError."""
    refusal = spend.refuse(lambda: litellm.completion(**openai_kw(spend.sim, "refuse me")))
    assert isinstance(refusal.exc, litellm.InternalServerError)
    assert refusal.budget_exceeded is not None
    assert refusal.names_the_budget


def test_a_refusal_retried_by_litellm_is_one_row_and_nothing_sent(spend: Probe) -> None:
    refusal = spend.refuse(
        lambda: litellm.completion(**openai_kw(spend.sim, "refuse me again"), num_retries=3)
    )
    assert isinstance(refusal.exc, litellm.InternalServerError)
    assert refusal.budget_exceeded is not None and refusal.names_the_budget


def test_a_streamed_refusal_surfaces_the_same_way(spend: Probe) -> None:
    refusal = spend.refuse(lambda: _stream(openai_kw(spend.sim, "refuse my stream")))
    assert isinstance(refusal.exc, litellm.InternalServerError)
    assert refusal.budget_exceeded is not None and refusal.names_the_budget


def test_a_native_gemini_refusal(spend: Probe) -> None:
    """litellm's own HTTP code: the transport tap refuses before the request is sent."""
    refusal = spend.refuse(lambda: litellm.completion(**gemini_kw(spend.sim, "refuse gemini")))
    assert isinstance(refusal.exc, litellm.APIConnectionError), refusal.type_name
    assert refusal.budget_exceeded is not None
    assert refusal.names_the_budget
