"""A streamed body cut by the network: the caller gets the library's own error, unchanged,
and the row is ``partial`` and names that error (as the SDK taps' and the dspy tap's rows
do), so that a dropped connection is told apart from a stream the caller closed early.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import llmspend
from llmspend.dialects import hosts
from llmspend.sim import SimServer
from llmspend.tracker import installed_tracker

STREAM: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
CUT = {"X-Sim-Directives": "cut=2"}  # the simulator drops the connection after two events


@pytest.fixture
def tap(fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """llmspend installed, the simulator an OpenAI endpoint: its chat completions URL."""
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    yield fresh_sim.openai_base_url + "/chat/completions"
    llmspend.uninstall()


def last_row() -> tuple[str, str | None]:
    tracker = installed_tracker()
    assert tracker is not None
    row = tracker.recent[-1]
    return row["status"], row["error_type"]


def test_httpx_streams_cut_by_the_network(tap: str) -> None:
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", tap, json=STREAM, headers=CUT) as r,
    ):
        for _ in r.iter_lines():
            pass
    assert last_row() == ("partial", "RemoteProtocolError")

    async def cut() -> None:
        async with (
            httpx.AsyncClient() as client,
            client.stream("POST", tap, json=STREAM, headers=CUT) as r,
        ):
            async for _ in r.aiter_bytes():
                pass

    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(cut())
    assert last_row() == ("partial", "RemoteProtocolError")


def test_requests_streams_cut_by_the_network(tap: str) -> None:
    import requests

    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        requests.post(tap, json=STREAM, headers=CUT, stream=True) as r,
    ):
        for _ in r.iter_content(7):
            pass
    status, error = last_row()
    assert status == "partial" and error  # urllib3's error, which requests re-raises as its own
    with (
        pytest.raises(Exception) as info,
        requests.post(tap, json=STREAM, headers=CUT, stream=True) as r,
    ):
        while r.raw.read(5):
            pass
    assert last_row() == ("partial", type(info.value).__name__)


def test_aiohttp_streams_cut_by_the_network(tap: str) -> None:
    import aiohttp

    async def cut() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(tap, json=STREAM, headers=CUT) as r,
        ):
            async for _ in r.content:
                pass

    with pytest.raises(aiohttp.ClientPayloadError):
        asyncio.run(cut())
    assert last_row() == ("partial", "ClientPayloadError")


def test_a_stream_closed_early_by_the_caller_names_no_error(tap: str) -> None:
    with httpx.stream("POST", tap, json=STREAM) as r:
        next(r.iter_raw())
    assert last_row() == ("partial", None)
