"""aiohttp: a body read before the session hands the response back (a ``raise_for_status``
callable that reads every answer) is priced from the usage it reports (it was an estimate
with no output: the bytes had gone by before the tap looked)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import llmspend
from llmspend.dialects import hosts
from llmspend.sim import SimServer
from llmspend.tracker import installed_tracker

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
}
STREAM: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


async def _calls(url: str) -> list[bytes]:
    import aiohttp

    async def check(response: Any) -> None:
        await response.read()  # e.g. to log every answer's body

    got = []
    async with aiohttp.ClientSession(raise_for_status=check) as session:
        for body in (CHAT, STREAM):
            async with session.post(url, json=body) as r:
                got.append(await r.read())
    return got


def test_a_body_read_by_raise_for_status_is_priced_from_its_usage(
    fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    url = fresh_sim.openai_base_url + "/chat/completions"
    llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    try:
        llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
        got = asyncio.run(_calls(url))
        tracker = installed_tracker()
        assert tracker is not None
        rows = [
            (r["status"], r["input_tokens"], r["output_tokens"], r["usage_estimated"])
            for r in tracker.recent
        ]
    finally:
        llmspend.uninstall()
    assert all(b'"usage"' in body for body in got)  # the caller still gets the whole body
    assert rows == [("ok", 10, 30, False)] * 2
