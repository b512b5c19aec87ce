"""A redirect answered to a provider call: followed by the client, it is one call priced from
the usage the provider reports; not followed, it costs nothing (the provider never answered:
it was an ``ok`` row priced from an estimate before), and the caller gets the 3xx unchanged.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests

import llmspend
from llmspend.dialects import hosts
from llmspend.sim import SimServer
from llmspend.tracker import installed_tracker

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
}


@pytest.fixture
def moved(fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An OpenAI endpoint that answers 307 to the simulator; llmspend installed. Its URL."""

    class Moved(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = b"<html>moved</html>"
            self.send_response(307)
            self.send_header("Location", fresh_sim.url + self.path)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Moved)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    llmspend.declare_endpoint(base, "openai")
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    yield base + "/chat/completions"
    llmspend.uninstall()
    server.shutdown()
    server.server_close()
    thread.join(5)


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
