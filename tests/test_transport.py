"""Transport taps: any httpx/httpx2 client reaching a provider endpoint, against the simulator.

Every test compares with the same request made without llmspend: the caller gets the same
bytes, and the store gets one row per request the simulator received.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest

import llmspend
from llmspend.dialects import hosts
from llmspend.errors import ConfigError
from llmspend.sim import SimServer
from llmspend.tracker import Tracker

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


@pytest.fixture
def endpoints(monkeypatch: pytest.MonkeyPatch) -> list[hosts.Endpoint]:
    """A fresh list of declared endpoints (none from the environment)."""
    fresh: list[hosts.Endpoint] = []
    monkeypatch.setattr(hosts, "_declared", fresh)
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    return fresh


@pytest.fixture
def tap(fresh_sim: SimServer, endpoints: Any, tmp_path: Any) -> Iterator[Tracker]:
    """llmspend installed, the simulator declared as an OpenAI and a Gemini endpoint."""
    tracker = llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    llmspend.declare_endpoint(fresh_sim.url + "/v1beta", "gemini")
    yield tracker
    llmspend.uninstall()


FRAMEWORK = """
# A framework's call: the request sent again on any failure, as litellm does.


def post(client, url, body, attempts):
    failures = []
    for _ in range(attempts):
        try:
            return client(url, json=body)
        except Exception as exc:
            failures.append(exc)
    raise RuntimeError(f"gave up after {attempts} attempts") from failures[-1]
"""


@pytest.fixture
def framework(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A tiny retrying framework, installed (its file in a site-packages directory)."""
    import importlib
    import sys

    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "retryingfw.py").write_text(FRAMEWORK)
    monkeypatch.syspath_prepend(str(site))
    yield importlib.import_module("retryingfw")
    sys.modules.pop("retryingfw", None)


def rows(tracker: Tracker) -> list[dict[str, Any]]:
    return list(tracker.recent)


def usage_of(body: dict[str, Any]) -> tuple[int, int]:
    u = body["usage"]
    return u["prompt_tokens"], u["completion_tokens"]


def sse_json(lines: list[str]) -> list[Any]:
    return [json.loads(ln[5:]) for ln in lines if ln.startswith("data:") and "[DONE]" not in ln]


def scrub(obj: Any) -> Any:
    """Without the ids and times that differ between two answers of the simulator."""
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if k not in {"id", "created", "responseId"}}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


# -- plain httpx and httpx2 --------------------------------------------------------------------


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_json_post_is_recorded_once_with_the_servers_usage(
    lib: Any, fresh_sim: SimServer, endpoints: Any, tmp_path: Any
) -> None:
    url = fresh_sim.openai_base_url + "/chat/completions"
    without = lib.post(url, json=CHAT).json()
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'j.sqlite'}", org="acme")
    try:
        llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
        fresh_sim.reset()
        with lib.Client() as client:
            got = client.post(url, json=CHAT).json()
    finally:
        llmspend.uninstall()
    assert scrub(got) == scrub(without)
    [row] = rows(tracker)
    assert fresh_sim.request_count == 1
    assert (row["input_tokens"], row["output_tokens"]) == usage_of(got)
    assert row["provider"] == "openai-compatible" and row["api"] == "chat.completions"
    assert row["price_status"] == "priced" and row["cost_nanos"] > 0
    assert row["usage_estimated"] is False and row["status"] == "ok"


@pytest.mark.parametrize("lib", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_a_stream_gives_the_same_lines_and_one_row(lib: Any, tap: Tracker, fresh_sim: Any) -> None:
    url = fresh_sim.openai_base_url + "/chat/completions"
    llmspend.uninstall()
    with lib.stream("POST", url, json=STREAM) as r:
        without = list(r.iter_lines())
    llmspend.install(tap.settings.database_url, org="acme", user="ana")
    fresh_sim.reset()
    with lib.Client() as client, client.stream("POST", url, json=STREAM) as r:
        got = list(r.iter_lines())
    assert scrub(sse_json(got)) == scrub(sse_json(without))
    [row] = rows(tap)
    final = sse_json(got)[-1]
    assert (row["input_tokens"], row["output_tokens"]) == usage_of(final)
    assert row["streamed"] is True and row["status"] == "ok"


def test_async_clients_are_tapped(tap: Tracker, fresh_sim: SimServer) -> None:
    url = fresh_sim.openai_base_url + "/chat/completions"

    async def go() -> tuple[Any, list[str]]:
        async with httpx.AsyncClient() as client:
            body = (await client.post(url, json=CHAT)).json()
            async with client.stream("POST", url, json=STREAM) as r:
                lines = [ln async for ln in r.aiter_lines()]
        return body, lines

    body, lines = asyncio.run(go())
    recorded = rows(tap)
    assert len(recorded) == fresh_sim.request_count == 2
    assert (recorded[0]["input_tokens"], recorded[0]["output_tokens"]) == usage_of(body)
    assert (recorded[1]["input_tokens"], recorded[1]["output_tokens"]) == usage_of(
        sse_json(lines)[-1]
    )


def test_a_stream_closed_early_is_one_partial_row(tap: Tracker, fresh_sim: SimServer) -> None:
    url = fresh_sim.openai_base_url + "/chat/completions"
    with httpx.Client() as client, client.stream("POST", url, json=STREAM) as r:
        first = next(r.iter_lines())
    assert first
    [row] = rows(tap)
    assert row["status"] == "partial" and row["usage_estimated"] is True


def test_a_stream_dropped_unread_is_settled_when_collected(
    tap: Tracker, fresh_sim: SimServer
) -> None:
    client = httpx.Client()
    request = client.build_request(
        "POST", fresh_sim.openai_base_url + "/chat/completions", json=STREAM
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    del response
    gc.collect()
    deadline = 300  # polls of the collector's settling thread, each after a collection
    while not rows(tap) and deadline:
        deadline -= 1
        gc.collect()
        asyncio.run(asyncio.sleep(0.01))
    [row] = rows(tap)
    assert row["status"] == "partial"
    client.close()


def test_gemini_json_sse_and_array_streams(tap: Tracker, fresh_sim: SimServer) -> None:
    base = fresh_sim.url + "/v1beta/models/gemini-2.0-flash"
    with httpx.Client(headers={"x-goog-api-key": "k"}) as client:
        body = client.post(base + ":generateContent", json=GEMINI).json()
        with client.stream("POST", base + ":streamGenerateContent?alt=sse", json=GEMINI) as r:
            sse = sse_json(list(r.iter_lines()))
        array = client.post(base + ":streamGenerateContent", json=GEMINI).json()
        client.post(base + ":countTokens", json=GEMINI)  # free: no row
    recorded = rows(tap)
    assert fresh_sim.request_count == 4 and len(recorded) == 3
    for row, md in zip(
        recorded,
        [body["usageMetadata"], sse[-1]["usageMetadata"], array[-1]["usageMetadata"]],
        strict=True,
    ):
        assert row["provider"] == "google" and row["api"] == "generate_content"
        assert row["input_tokens"] == md["promptTokenCount"]
        assert row["output_tokens"] == md["candidatesTokenCount"] + md.get("thoughtsTokenCount", 0)
        assert row["usage_estimated"] is False


def test_an_error_status_is_an_error_row_and_the_response_is_unchanged(
    tap: Tracker, fresh_sim: SimServer
) -> None:
    fresh_sim.set_behavior(error=400)
    r = httpx.post(fresh_sim.openai_base_url + "/chat/completions", json=CHAT)
    assert r.status_code == 400 and "error" in r.json()
    [row] = rows(tap)
    assert row["status"] == "error" and row["error_type"] == "HTTPStatusError"
    assert row["cost_nanos"] == 0


def test_a_connection_error_is_an_error_row_and_reraised(
    tap: Tracker, endpoints: Any, unused_port: int
) -> None:
    llmspend.declare_endpoint(f"http://127.0.0.1:{unused_port}/v1", "openai")
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{unused_port}/v1/chat/completions", json=CHAT)
    [row] = rows(tap)
    assert row["status"] == "error" and row["error_type"] == "ConnectError"


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_other_hosts_and_paths_are_not_recorded(tap: Tracker, fresh_sim: SimServer) -> None:
    assert httpx.get(fresh_sim.url + "/health").status_code == 200  # not under an endpoint
    assert httpx.get(fresh_sim.openai_base_url + "/models").status_code == 200  # not billed
    assert rows(tap) == []


# -- budgets ------------------------------------------------------------------------------------


def test_a_hard_budget_refuses_before_anything_is_sent(tap: Tracker, fresh_sim: Any) -> None:
    llmspend.set_budget("org", "acme", "0.000001")
    with pytest.raises(llmspend.BudgetExceeded):
        httpx.post(fresh_sim.openai_base_url + "/chat/completions", json=CHAT)
    assert fresh_sim.request_count == 0
    [row] = rows(tap)
    assert row["status"] == "refused"


def test_a_retried_refusal_is_one_row_and_nothing_is_ever_sent(
    tap: Tracker, fresh_sim: SimServer, framework: Any
) -> None:
    """What a framework does with a transport error: send the same request again."""
    llmspend.set_budget("org", "acme", "0.000001")
    url = fresh_sim.openai_base_url + "/chat/completions"
    with pytest.raises(RuntimeError, match="gave up after 4") as info:
        framework.post(httpx.post, url, CHAT, 4)
    assert isinstance(info.value.__cause__, llmspend.BudgetExceeded)
    assert fresh_sim.request_count == 0
    assert [r["status"] for r in rows(tap)] == ["refused"]
    with pytest.raises(RuntimeError):  # the caller tries again: another action, recorded
        framework.post(httpx.post, url, CHAT, 4)
    assert [r["status"] for r in rows(tap)] == ["refused", "refused"]
    for _ in range(2):  # the caller's own loop: each turn is an action of its own
        with pytest.raises(llmspend.BudgetExceeded):
            httpx.post(url, json=CHAT)
    assert [r["status"] for r in rows(tap)] == ["refused"] * 4
    llmspend.set_budget("org", "acme", 100)
    assert httpx.post(url, json=CHAT).status_code == 200  # allowed again: sent, recorded
    assert [r["status"] for r in rows(tap)] == ["refused"] * 4 + ["ok"]
    assert fresh_sim.request_count == 1


# -- one row per request, with SDK taps above -------------------------------------------------


def test_an_openai_sdk_call_is_recorded_once(tap: Tracker, fresh_sim: SimServer) -> None:
    """The SDK tap records it; the httpx2 transport tap under it passes it through."""
    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    client.chat.completions.create(**CHAT)
    with httpx.Client() as http:
        plain = openai.OpenAI(
            api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0, http_client=http
        )
        stream = plain.chat.completions.create(**CHAT, stream=True)
        list(stream)
    assert fresh_sim.request_count == 2
    assert len(rows(tap)) == 2


def test_google_genai_requests_are_recorded_once(tap: Tracker, fresh_sim: SimServer) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=fresh_sim.url))
    llmspend.declare_endpoint(fresh_sim.url + "/v1", "gemini")
    client.models.generate_content(model="gemini-2.0-flash", contents="hello")
    list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hello"))
    assert fresh_sim.request_count == 2
    assert len(rows(tap)) == 2


def test_uninstall_restores_send_by_identity(fresh_sim: SimServer, tmp_path: Any) -> None:
    before = [
        (lib.Client.__dict__["send"], lib.AsyncClient.__dict__["send"]) for lib in (httpx, httpx2)
    ]
    llmspend.install(f"sqlite:///{tmp_path / 'u.sqlite'}")
    assert httpx.Client.__dict__["send"] is not before[0][0]
    llmspend.uninstall()
    after = [
        (lib.Client.__dict__["send"], lib.AsyncClient.__dict__["send"]) for lib in (httpx, httpx2)
    ]
    assert after == before


# -- which hosts count (units over addresses: nothing is connected to) --------------------------


@pytest.mark.parametrize(
    ("url", "dialect", "provider"),
    [
        ("https://api.openai.com/v1/chat/completions", "openai", "openai"),
        ("https://myres.openai.azure.com/openai/deployments/d/chat/completions", "openai", "azure"),
        ("https://api.x.ai/v1/chat/completions", "openai", "xai"),
        ("https://openrouter.ai/api/v1/chat/completions", "openai", "openrouter"),
        ("https://generativelanguage.googleapis.com/v1beta/models/m:generateContent", "gemini",
         "google"),
        ("https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/l/publishers/"
         "google/models/m:generateContent", "gemini", "google"),
        ("https://api.anthropic.com/v1/messages", "anthropic", "anthropic"),
    ],
)  # fmt: skip
def test_the_providers_hosts_are_known(
    url: str, dialect: str, provider: str, endpoints: Any
) -> None:
    p = httpx.URL(url)
    found = hosts.match(p.scheme, p.host, p.port, p.path)
    assert found is not None
    assert (found[0].dialect, found[0].provider) == (dialect, provider)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/v1/chat/completions",
        "https://api.openai.com.evil.example/v1/chat/completions",
        "https://notopenrouter.ai/api/v1/chat/completions",
        "http://127.0.0.1:9/v1/chat/completions",
    ],
)
def test_other_hosts_are_not_providers(url: str, endpoints: Any) -> None:
    p = httpx.URL(url)
    assert hosts.match(p.scheme, p.host, p.port, p.path) is None


def test_a_declared_endpoint_matches_its_scheme_host_port_and_prefix(endpoints: Any) -> None:
    llmspend.declare_endpoint("http://127.0.0.1:8000/v1", "openai", "local")
    found = hosts.match("http", "127.0.0.1", 8000, "/v1/chat/completions")
    assert found is not None and found[1] == "/chat/completions"
    assert found[0].provider == "local"
    assert hosts.match("http", "127.0.0.1", 8001, "/v1/chat/completions") is None
    assert hosts.match("https", "127.0.0.1", 8000, "/v1/chat/completions") is None
    assert hosts.match("http", "127.0.0.1", 8000, "/v10/chat/completions") is None


def test_endpoints_from_the_environment(endpoints: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv(
        "LLMSPEND_ENDPOINTS", "http://127.0.0.1:8000/v1=openai, https://proxy.corp/g=gemini:vertex"
    )
    found = hosts.match("https", "proxy.corp", None, "/g/v1beta/models/m:generateContent")
    assert found is not None and (found[0].dialect, found[0].provider) == ("gemini", "vertex")
    assert hosts.match("http", "127.0.0.1", 8000, "/v1/embeddings") is not None


@pytest.mark.parametrize(
    "value",
    ["http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1=cobol", "ftp://x/v1=openai",
     "=openai", "http://h:99999/v1=openai"],
)  # fmt: skip
def test_a_bad_endpoint_is_a_config_error(value: str, endpoints: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("LLMSPEND_ENDPOINTS", value)
    with pytest.raises(ConfigError, match=r"endpoint|LLMSPEND_ENDPOINTS|dialect"):
        hosts.declared_endpoints()
    url, _, dialect = value.rpartition("=")
    if url:
        with pytest.raises(ConfigError):
            llmspend.declare_endpoint(url, dialect)


# -- requests ---------------------------------------------------------------------------------


def test_requests_json_stream_and_refusal(
    tap: Tracker, fresh_sim: SimServer, framework: Any
) -> None:
    import requests

    url = fresh_sim.openai_base_url + "/chat/completions"
    llmspend.uninstall()
    without = requests.post(url, json=CHAT).json()
    with requests.post(url, json=STREAM, stream=True) as r:
        lines_without = [ln.decode() for ln in r.iter_lines() if ln]
    llmspend.install(tap.settings.database_url, org="acme", user="ana")
    fresh_sim.reset()
    got = requests.post(url, json=CHAT).json()
    with requests.Session() as session, session.post(url, json=STREAM, stream=True) as r:
        lines = [ln.decode() for ln in r.iter_lines() if ln]
    assert scrub(got) == scrub(without)
    assert scrub(sse_json(lines)) == scrub(sse_json(lines_without))
    recorded = rows(tap)
    assert len(recorded) == fresh_sim.request_count == 2
    assert (recorded[0]["input_tokens"], recorded[0]["output_tokens"]) == usage_of(got)
    final = sse_json(lines)[-1]
    assert (recorded[1]["input_tokens"], recorded[1]["output_tokens"]) == usage_of(final)
    assert all(r["status"] == "ok" and not r["usage_estimated"] for r in recorded)

    with requests.post(url, json=STREAM, stream=True) as r:  # closed after one line
        next(r.iter_lines())
    assert rows(tap)[-1]["status"] == "partial"

    fresh_sim.set_behavior(error=429)
    assert requests.post(url, json=CHAT).status_code == 429
    assert rows(tap)[-1]["error_type"] == "HTTPError"
    fresh_sim.set_behavior(error=None)

    llmspend.set_budget("org", "acme", "0.000001")
    sent = fresh_sim.request_count
    with pytest.raises(RuntimeError) as info:  # retried three times by a framework
        framework.post(requests.post, url, CHAT, 3)
    assert isinstance(info.value.__cause__, llmspend.BudgetExceeded)
    assert fresh_sim.request_count == sent
    assert [r["status"] for r in rows(tap)].count("refused") == 1


def test_requests_session_send_is_restored_by_identity(tmp_path: Any) -> None:
    import requests

    before = requests.Session.__dict__["send"]
    llmspend.install(f"sqlite:///{tmp_path / 'r.sqlite'}")
    assert requests.Session.__dict__["send"] is not before
    llmspend.uninstall()
    assert requests.Session.__dict__["send"] is before


# -- aiohttp ----------------------------------------------------------------------------------


async def _aiohttp_calls(url: str) -> tuple[Any, list[str], Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=CHAT) as r:
            body = await r.json()
        async with session.post(url, json=STREAM) as r:
            lines = [ln.decode().strip() async for ln in r.content if ln.strip()]
        cut: Any = None
        async with session.post(url, json=STREAM, headers={"X-Sim-Directives": "cut=2"}) as r:
            try:  # the connection drops after two events
                async for _ in r.content:
                    pass
            except aiohttp.ClientPayloadError as exc:
                cut = exc
    return body, lines, cut


def test_aiohttp_json_stream_early_release_and_refusal(tap: Tracker, fresh_sim: Any) -> None:
    import aiohttp

    url = fresh_sim.openai_base_url + "/chat/completions"
    llmspend.uninstall()
    body0, lines0, _ = asyncio.run(_aiohttp_calls(url))
    llmspend.install(tap.settings.database_url, org="acme", user="ana")
    fresh_sim.reset()
    body, lines, cut = asyncio.run(_aiohttp_calls(url))
    assert scrub(body) == scrub(body0)
    assert scrub(sse_json(lines)) == scrub(sse_json(lines0))
    assert isinstance(cut, aiohttp.ClientPayloadError)
    recorded = rows(tap)
    assert len(recorded) == fresh_sim.request_count == 3
    assert (recorded[0]["input_tokens"], recorded[0]["output_tokens"]) == usage_of(body)
    assert (recorded[1]["input_tokens"], recorded[1]["output_tokens"]) == usage_of(
        sse_json(lines)[-1]
    )
    assert [r["status"] for r in recorded] == ["ok", "ok", "partial"]

    async def refused() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # two actions of the caller's own
                with pytest.raises(llmspend.BudgetExceeded):
                    await session.post(url, json=CHAT)

    llmspend.set_budget("org", "acme", "0.000001")
    asyncio.run(refused())
    assert fresh_sim.request_count == 3
    assert [r["status"] for r in rows(tap)].count("refused") == 2


def test_a_stream_left_open_by_an_interrupted_cell_is_settled(
    tap: Tracker, fresh_sim: SimServer
) -> None:
    """What the notebook extension does after a cell ends with Ctrl-C: every stream the cell
    had started reading is over, though a global still holds it open."""
    from llmspend.pipeline import settle_interrupted

    url = fresh_sim.openai_base_url + "/chat/completions"
    client = httpx.Client()
    unread = client.send(client.build_request("POST", url, json=STREAM), stream=True)
    started = client.send(client.build_request("POST", url, json=STREAM), stream=True)
    next(started.iter_raw())
    assert settle_interrupted(KeyboardInterrupt()) == 1
    [row] = rows(tap)
    assert row["status"] == "partial" and row["error_type"] == "KeyboardInterrupt"
    assert settle_interrupted(KeyboardInterrupt()) == 0  # once
    started.close()
    unread.close()
    assert [r["status"] for r in rows(tap)] == ["partial", "partial"]
    client.close()


def test_the_tier_a_response_reports_chooses_the_price(tap: Tracker, fresh_sim: Any) -> None:
    url = fresh_sim.openai_base_url + "/chat/completions"
    body = {**CHAT, "model": "o3", "max_tokens": 50}
    httpx.post(url, json=body)
    flex = httpx.post(url, json={**body, "service_tier": "flex"}).json()
    assert flex["service_tier"] == "flex"
    standard, tiered = rows(tap)
    assert (standard["input_tokens"], standard["output_tokens"]) == (
        tiered["input_tokens"],
        tiered["output_tokens"],
    )
    assert tiered["cost_nanos"] < standard["cost_nanos"]
    assert "tier=flex" in tiered["price_ref"] and "tier=" not in (standard["price_ref"] or "")


def test_every_transport_patch_is_restored_by_identity(tmp_path: Any) -> None:
    import aiohttp
    import requests
    from aiohttp import client_reqrep, streams

    def current() -> list[Any]:
        return [
            httpx.Client.__dict__["send"],
            httpx.AsyncClient.__dict__["send"],
            httpx2.Client.__dict__["send"],
            httpx2.AsyncClient.__dict__["send"],
            requests.Session.__dict__["send"],
            aiohttp.ClientSession.__dict__["_request"],
            streams.StreamReader.__dict__["feed_data"],
            client_reqrep.ClientResponse.__dict__["release"],
            client_reqrep.ClientResponse.__dict__["close"],
        ]

    before = current()
    llmspend.install(f"sqlite:///{tmp_path / 'i.sqlite'}")
    try:
        assert all(a is not b for a, b in zip(current(), before, strict=True))
    finally:
        llmspend.uninstall()
    assert all(a is b for a, b in zip(current(), before, strict=True))


# -- a bug inside llmspend never changes the call (every transport tap) -----------------------


class _Planted(Exception):
    """A fault planted in llmspend's own code."""


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise _Planted("planted")


def _via_httpx(url: str) -> Any:
    with httpx.Client() as client:
        body = client.post(url, json=CHAT).json()
        with client.stream("POST", url, json=STREAM) as r:
            lines = list(r.iter_lines())
    return scrub(body), scrub(sse_json(lines))


def _via_httpx_async(url: str) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            body = (await client.post(url, json=CHAT)).json()
            async with client.stream("POST", url, json=STREAM) as r:
                lines = [ln async for ln in r.aiter_lines()]
        return scrub(body), scrub(sse_json(lines))

    return asyncio.run(go())


def _via_requests(url: str) -> Any:
    import requests

    body = requests.post(url, json=CHAT).json()
    with requests.post(url, json=STREAM, stream=True) as r:
        lines = [ln.decode() for ln in r.iter_lines() if ln]
    return scrub(body), scrub(sse_json(lines))


def _via_aiohttp(url: str) -> Any:
    import aiohttp

    async def go() -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=CHAT) as r:
                body = await r.json()
            async with session.post(url, json=STREAM) as r:
                lines = [ln.decode().strip() async for ln in r.content if ln.strip()]
        return scrub(body), scrub(sse_json(lines))

    return asyncio.run(go())


@pytest.mark.parametrize("fault", ["route", "read", "before_call", "record_call"])
@pytest.mark.parametrize(
    "client", [_via_httpx, _via_httpx_async, _via_requests, _via_aiohttp],
    ids=["httpx", "httpx-async", "requests", "aiohttp"],
)  # fmt: skip
def test_a_fault_inside_llmspend_leaves_the_transport_call_unchanged(
    tap: Tracker, fresh_sim: Any, monkeypatch: pytest.MonkeyPatch, client: Any, fault: str
) -> None:
    import llmspend.dialects.openai as openai_dialect

    url = fresh_sim.openai_base_url + "/chat/completions"
    llmspend.uninstall()
    without = client(url)
    tracker = llmspend.install(tap.settings.database_url, org="acme", user="ana")
    if fault == "route":
        monkeypatch.setattr(openai_dialect, "route", _boom)
    elif fault == "read":
        monkeypatch.setattr(openai_dialect, "read", _boom)
        monkeypatch.setattr(openai_dialect, "reader", _boom)
    elif fault == "before_call":
        tracker.before_call_hooks.append(_boom)
    else:
        monkeypatch.setattr(Tracker, "record_call", _boom)
    assert client(url) == without
    recorded = rows(tracker)
    if fault in ("route", "before_call", "record_call"):
        assert recorded == []  # not recorded; the call went through all the same
    else:  # the response could not be read: recorded from an estimate
        assert len(recorded) == 2 and all(r["usage_estimated"] for r in recorded)
