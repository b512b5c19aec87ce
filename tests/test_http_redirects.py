"""A redirect answered to a provider call: followed by the client, it is one call priced from
the usage the provider reports; not followed, it costs nothing (the provider never answered:
it was an ``ok`` row priced from an estimate before), and the caller gets the 3xx unchanged.
(dspy's transport: ``tests/compat/test_dspy.py``, where dspy is installed.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import requests

from llmspend.sim import SimServer
from llmspend.tracker import installed_tracker

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
}


def settled() -> list[tuple[str, int, int, int]]:
    tracker = installed_tracker()
    assert tracker is not None
    return [
        (r["status"], r["input_tokens"], r["output_tokens"], r["cost_nanos"])
        for r in tracker.recent
    ]


async def _aiohttp(url: str) -> tuple[int, int]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=CHAT, allow_redirects=False) as r:
            not_followed = r.status
            await r.read()
        async with session.post(url, json=CHAT) as r:
            await r.json()
            return not_followed, r.status


def test_a_redirect_not_followed_costs_nothing(moved: str, fresh_sim: SimServer) -> None:
    answers = [
        httpx.post(moved, json=CHAT).status_code,  # httpx does not follow by default
        httpx.post(moved, json=CHAT, follow_redirects=True).status_code,
        requests.post(moved, json=CHAT, allow_redirects=False).status_code,
        requests.post(moved, json=CHAT).status_code,
        *asyncio.run(_aiohttp(moved)),
    ]
    assert answers == [307, 200, 307, 200, 307, 200]
    assert fresh_sim.request_count == 3
    ok = ("ok", 10, 30, 19500)  # the simulator's usage, at gpt-4o-mini's price
    assert settled() == [("error", 0, 0, 0), ok] * 3
