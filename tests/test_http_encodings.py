"""Transport taps on compressed answers: a body the caller reads still compressed (requests'
``response.raw.read()``, aiohttp's ``auto_decompress=False``) is decoded to read its usage,
and the caller gets exactly the bytes it gets without llmspend.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import llmspend
from llmspend.dialects import hosts
from llmspend.sim import SimServer
from llmspend.tracker import Tracker

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello there"}],
}
STREAM: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


class _Gzip(BaseHTTPRequestHandler):
    """Forwards a POST to the simulator; answers gzip'd (an SSE stream chunk by chunk)."""

    protocol_version = "HTTP/1.1"
    upstream = 0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=10)
        conn.request("POST", self.path, body, {"content-type": "application/json"})
        answer = conn.getresponse()
        ctype = answer.getheader("content-type", "")
        self.send_response(answer.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Encoding", "gzip")
        if "event-stream" in ctype:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            z = zlib.compressobj(9, zlib.DEFLATED, 31)
            while data := answer.read1(65536):
                out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(out), out))
            out = z.flush()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(out), out))
        else:
            data = gzip.compress(answer.read())
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        conn.close()


@pytest.fixture
def gz(fresh_sim: SimServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gzip'ing front of the simulator, declared as an OpenAI endpoint; llmspend installed
    (the URL of its chat completions)."""
    handler = type("Handler", (_Gzip,), {"upstream": fresh_sim.port})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    llmspend.declare_endpoint(base, "openai")
    yield base + "/chat/completions"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def tap(gz: str, tmp_path: Any) -> Iterator[Tracker]:
    tracker = llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    yield tracker
    llmspend.uninstall()


def exact(tracker: Tracker) -> list[tuple[str, int, int, bool]]:
    return [
        (r["status"], r["input_tokens"], r["output_tokens"], r["usage_estimated"])
        for r in tracker.recent
    ]


def _raw_reads(url: str) -> list[bytes]:
    import requests

    out = []
    for body in (CHAT, STREAM):
        with requests.post(url, json=body, stream=True) as r:
            out.append(gzip.decompress(r.raw.read()))  # the wire's bytes, as requests gives
        with requests.post(url, json=body, stream=True) as r:
            pieces = []
            while piece := r.raw.read(11):
                pieces.append(piece)
            out.append(gzip.decompress(b"".join(pieces)))
        with requests.post(url, json=body, stream=True) as r:
            out.append(b"".join(r.iter_content(3)))  # decoded by urllib3
    return out


def test_requests_raw_reads_of_a_gzipped_body_are_priced_from_its_usage(
    tap: Tracker, gz: str
) -> None:
    got = _raw_reads(gz)
    assert all(b'"usage"' in body for body in got)
    rows = exact(tap)
    assert len(rows) == 6
    json_usage = ("ok", 10, 30, False)
    assert rows == [json_usage] * 6  # the simulator's usage for CHAT, streamed or not


async def _aiohttp_reads(url: str) -> list[bytes]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for body in (CHAT, STREAM):
            async with session.post(url, json=body) as r:
                out.append(gzip.decompress(await r.read()))
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=STREAM, auto_decompress=False) as r:
            out.append(gzip.decompress(b"".join([c async for c in r.content.iter_chunked(5)])))
        async with session.post(url, json=STREAM) as r:
            out.append(await r.read())
    return out


def test_aiohttp_without_auto_decompress_is_priced_from_its_usage(tap: Tracker, gz: str) -> None:
    got = asyncio.run(_aiohttp_reads(gz))
    assert all(b'"usage"' in body for body in got)
    assert exact(tap) == [("ok", 10, 30, False)] * 4
