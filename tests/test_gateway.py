"""The llmspend gateway, as real processes on 127.0.0.1: ``llmspend.sim`` as the upstream,
``llmspend gateway serve`` in front of it, and the real openai, google-genai and anthropic
SDKs holding only gateway keys."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from llmspend.gateway import keys
from llmspend.store.engine import open_store

PROVIDER_KEY = "sk-llmspend-test-PROVIDER-KEY-7f3a9c2e51"
KEY_ENV = "LLMSPEND_TEST_PROVIDER_KEY"

# The simulator in a child process, answering "count" (requests served) and "last" (the
# last request's headers) on stdin: the test reads what reached the upstream.
SIM = r"""
import json, sys
from llmspend.sim import SimServer
sim = SimServer("127.0.0.1", 0).start()
print(sim.url, flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "count":
        print(sim.request_count, flush=True)
    elif cmd == "last":
        reqs = sim.requests
        print(json.dumps(reqs[-1].headers if reqs else {}), flush=True)
sim.stop()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sim:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIM], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def count(self) -> int:
        return int(self.ask("count"))

    def last_headers(self) -> dict[str, str]:
        headers: dict[str, str] = json.loads(self.ask("last"))
        return headers

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Gateway:
    """``llmspend gateway serve`` as a child process (``db``: its store, default a SQLite
    file in ``tmp``; ``extra``: more TOML for its configuration; ``env``: more variables)."""

    def __init__(
        self,
        tmp: Path,
        sim: Sim,
        db: str | None = None,
        extra: str = "",
        env: dict[str, str] | None = None,
        name: str = "gateway",
    ) -> None:
        self.db = db or f"sqlite:///{tmp / 'gateway.db'}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / f"{name}.toml"
        config.write_text(
            extra
            + "[gateway]\nmax_request_bytes = 200000\n"
            + "".join(
                f'[upstreams.{name}]\nbase_url = "{sim.url}"\nkey_env = "{KEY_ENV}"\n'
                f'provider = "{provider}"\n'
                for name, provider in (
                    ("openai", "openai"),
                    ("gemini", "google"),
                    ("anthropic", "anthropic"),
                )
            )
        )
        self.env = {
            **os.environ, KEY_ENV: PROVIDER_KEY, "LLMSPEND_HOME": str(tmp / "home"),
            "LLMSPEND_DATABASE_URL": self.db, **(env or {}),
        }  # fmt: skip
        for var in ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY"):
            self.env.pop(var, None)
        self.log = tmp / f"{name}.log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llmspend", "gateway", "serve", "--port", str(self.port),
                 "--config", str(config), "--database-url", self.db],
                env=self.env, stdout=err, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # generous polling of the health route: no timing is asserted
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "llmspend", "--database-url", self.db, *args],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout

    def new_key(self, org: str, project: str, user: str) -> str:
        out = self.cli("gateway", "keys", "create", "--org", org, "--project", project,
                       "--user", user, "--expires", "90d")  # fmt: skip
        key = out.strip().splitlines()[-1]
        assert key.startswith("lsk_") and len(key) > 40
        return key

    def capped_key(self, project: str, user: str) -> str:
        """A key for acme/``project``/``user`` under a hard project budget of $0.000001 a
        day: every call with it is refused."""
        self.cli("budget", "set", "project", f"acme/{project}", "0.000001/day", "--hard")
        return self.new_key("acme", project, user)

    def rows(self, where: str = "1=1", **params: Any) -> list[Any]:
        store = open_store(self.db)
        with store.begin() as conn:
            return list(
                conn.execute(
                    text(
                        "SELECT provider, api, model, org_name, project_name, user_name,"
                        " cost_nanos, price_status, status, streamed, input_tokens,"
                        f" output_tokens FROM llmspend_usage WHERE {where} ORDER BY id"
                    ),
                    params,
                )
            )

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        return self.log.read_text()


@contextmanager
def sim_and_gateway(tmp: Path, **options: Any) -> Iterator[tuple[Sim, Gateway]]:
    """A :class:`Sim` and a :class:`Gateway` on it (``options`` as the gateway takes them),
    both stopped on leaving."""
    sim = Sim()
    gateway = Gateway(tmp, sim, **options)
    try:
        yield sim, gateway
    finally:
        gateway.stop()
        sim.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Gateway]]:
    with sim_and_gateway(tmp_path_factory.mktemp("gateway")) as (sim, gateway):
        yield sim, gateway
    assert PROVIDER_KEY not in gateway.log.read_text()


@pytest.fixture(scope="module")
def ana(stack: tuple[Sim, Gateway]) -> str:
    return stack[1].new_key("acme", "churn", "ana")


def _openai(gateway: Gateway, key: str) -> Any:
    import openai

    return openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key=key, max_retries=2)


def _anthropic(gateway: Gateway, key: str) -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=key, max_retries=2)


def _genai(gateway: Gateway, key: str) -> Any:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(
        base_url=gateway.url + "/gemini", retry_options=types.HttpRetryOptions(attempts=3)
    )
    return genai.Client(api_key=key, http_options=options)


MESSAGES = [{"role": "user", "content": "Say hello through the gateway"}]
SHORT_CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}


def _post_chat(
    gateway: Gateway, key: str, path: str, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, list[Any]]:
    """POST :data:`SHORT_CHAT` to ``path`` on the gateway with ``key`` (and ``headers``):
    the answer and the usage rows the request added."""
    before = len(gateway.rows())
    r = httpx.post(
        gateway.url + path, json=SHORT_CHAT, timeout=60,
        headers={**(headers or {}), "authorization": f"Bearer {key}"},
    )  # fmt: skip
    return r, gateway.rows()[before:]


def _calls(gateway: Gateway, key: str) -> dict[tuple[str, str, bool], Any]:
    """Every kind of call, streaming and not, as the user's code would make it."""
    oa, an, ge = _openai(gateway, key), _anthropic(gateway, key), _genai(gateway, key)
    done: dict[tuple[str, str, bool], Any] = {}
    done["openai", "chat.completions", False] = oa.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
    )
    done["openai", "chat.completions", True] = list(oa.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    done["openai", "responses", False] = oa.responses.create(
        model="gpt-4o-mini", input="hello", max_output_tokens=50
    )
    done["openai", "responses", True] = list(
        oa.responses.create(model="gpt-4o-mini", input="hello", max_output_tokens=50, stream=True)
    )
    done["openai", "embeddings", False] = oa.embeddings.create(
        model="text-embedding-3-small", input="hello"
    )
    done["google", "generate_content", False] = ge.models.generate_content(
        model="gemini-2.5-flash", contents="hello"
    )
    done["google", "generate_content", True] = list(
        ge.models.generate_content_stream(model="gemini-2.5-flash", contents="hello")
    )
    done["anthropic", "messages", False] = an.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES
    )
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES) as s:
        done["anthropic", "messages", True] = list(s)
    return done


def test_every_sdk_call_through_the_gateway_is_one_priced_row_of_the_keys_identity(
    stack: tuple[Sim, Gateway], ana: str
) -> None:
    sim, gateway = stack
    before = len(gateway.rows())
    sent = sim.count()
    done = _calls(gateway, ana)
    assert sim.count() - sent == len(done)  # each call reached the upstream once
    # an SDK closes a stream at its last event: the gateway settles it as the client goes,
    # so a stream's row may land after the next call's
    end = time.monotonic() + 60
    while len(gateway.rows()) - before < len(done) and time.monotonic() < end:
        time.sleep(0.05)
    rows = gateway.rows()[before:]
    assert len(rows) == len(done)
    assert sorted((r.provider, r.api, bool(r.streamed)) for r in rows) == sorted(done)
    for r in rows:
        assert (r.org_name, r.project_name, r.user_name) == ("acme", "churn", "ana")
        assert r.status == "ok" and r.price_status == "priced", r
        assert r.cost_nanos > 0 and r.input_tokens > 0, r
    # The upstream got the provider key, never the gateway key.
    seen = json.dumps(sim.last_headers())
    assert PROVIDER_KEY in seen and ana not in seen


def test_attribution_comes_from_the_key_never_from_request_headers(
    stack: tuple[Sim, Gateway], ana: str
) -> None:
    _, gateway = stack
    before = len(gateway.rows())
    oa = _openai(gateway, ana).with_options(
        default_headers={"x-llmspend-user": "mallory", "x-llmspend-org": "evil"}
    )
    oa.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    (row,) = gateway.rows()[before:]
    assert (row.org_name, row.project_name, row.user_name) == ("acme", "churn", "ana")


def _sse_data(lines: list[str]) -> list[Any]:
    return [json.loads(x[5:]) for x in lines if x.startswith("data:") and x[5:].strip() != "[DONE]"]


def test_streamed_events_are_the_upstreams(stack: tuple[Sim, Gateway], ana: str) -> None:
    sim, gateway = stack
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 40, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip

    def events(url: str, key: str) -> tuple[list[Any], dict[str, str]]:
        headers = {"authorization": f"Bearer {key}"}
        with httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r:
            assert r.status_code == 200
            return _sse_data(list(r.iter_lines())), dict(r.headers)

    direct, _ = events(sim.url + "/v1/chat/completions", "sk-direct")
    proxied, headers = events(gateway.url + "/openai/v1/chat/completions", ana)

    def strip(evs: list[Any]) -> list[Any]:  # ids and timestamps differ per response
        return [{k: v for k, v in e.items() if k not in ("id", "created")} for e in evs]

    assert len(proxied) == len(direct) > 2
    assert strip(proxied) == strip(direct)
    assert "event-stream" in headers["content-type"]
    assert PROVIDER_KEY not in json.dumps(proxied) + json.dumps(headers)


def test_a_non_streamed_answer_carries_its_cost(stack: tuple[Sim, Gateway], ana: str) -> None:
    _, gateway = stack
    r = httpx.post(
        gateway.url + "/openai/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5},
        headers={"authorization": f"Bearer {ana}"},
        timeout=60,
    )
    assert r.status_code == 200
    assert float(r.headers["x-llmspend-cost-usd"]) > 0
    assert "x-llmspend-estimate-usd" not in r.headers  # no budget applies: none estimated
    assert r.headers["x-llmspend-budget-state"] == "ok"
    assert PROVIDER_KEY not in r.text + json.dumps(dict(r.headers))


def test_a_hard_budget_refuses_with_a_status_no_sdk_retries_and_nothing_goes_upstream(
    stack: tuple[Sim, Gateway],
) -> None:
    import anthropic
    import openai
    from google.genai import errors as genai_errors

    sim, gateway = stack
    key = gateway.capped_key("capped", "carl")
    sent = sim.count()
    with pytest.raises(openai.PermissionDeniedError) as oe:
        _openai(gateway, key).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
        )
    assert oe.value.status_code == 403
    assert "acme/capped" in str(oe.value) and "limit" in str(oe.value)
    refused = oe.value.response.headers
    assert refused["x-llmspend-budget-state"] == "exceeded"
    assert refused["x-llmspend-budget"] == "acme/capped"
    assert (refused["x-llmspend-budget-scope"], refused["x-llmspend-budget-period"]) == (
        "project", "day",
    )  # fmt: skip
    with pytest.raises(anthropic.PermissionDeniedError):
        _anthropic(gateway, key).messages.create(
            model="claude-sonnet-4-5", max_tokens=50, messages=MESSAGES
        )
    client = _genai(gateway, key)  # held: a collected client closes its connection pool
    with pytest.raises(genai_errors.ClientError) as ge:
        client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert ge.value.code == 403 and ge.value.status == "PERMISSION_DENIED"
    assert sim.count() == sent  # nothing reached the upstream
    rows = gateway.rows("user_name = :u", u="carl")
    # One refused row per call: no SDK retried a refusal (each retry would be refused again).
    assert [(r.provider, r.status, r.cost_nanos) for r in rows] == [
        ("openai", "refused", 0), ("anthropic", "refused", 0), ("google", "refused", 0)
    ]  # fmt: skip


def test_bad_revoked_and_expired_keys_get_the_providers_401(stack: tuple[Sim, Gateway]) -> None:
    import anthropic
    import openai
    from google.genai import errors as genai_errors

    sim, gateway = stack
    revoked = gateway.new_key("acme", "churn", "rex")
    key_id = json.loads(gateway.cli("gateway", "keys", "list", "--json"))[-1]["id"]
    gateway.cli("gateway", "keys", "revoke", str(key_id))
    _, expired = keys.create_key(
        open_store(gateway.db), org="acme", project="churn", user="old",
        expires=dt.timedelta(seconds=-1),
    )  # fmt: skip
    listed = {k["id"]: k for k in json.loads(gateway.cli("gateway", "keys", "list", "--json"))}
    assert listed[key_id]["state"] == "revoked"
    assert all(
        revoked not in json.dumps(k) and expired not in json.dumps(k) for k in listed.values()
    )
    sent = sim.count()
    for key in ("lsk_made-up", revoked, expired, PROVIDER_KEY):
        with pytest.raises(openai.AuthenticationError) as oe:
            _openai(gateway, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert oe.value.body["code"] == "invalid_api_key"  # type: ignore[index]
        with pytest.raises(anthropic.AuthenticationError) as ae:
            _anthropic(gateway, key).messages.create(
                model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES
            )
        assert ae.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
        client = _genai(gateway, key)  # held: a collected client closes its connection pool
        with pytest.raises(genai_errors.ClientError) as ge:
            client.models.generate_content(model="gemini-2.5-flash", contents="hi")
        assert ge.value.code == 401 and ge.value.status == "UNAUTHENTICATED"
    # No key at all, and Gemini's ?key= form.
    assert httpx.post(gateway.url + "/openai/v1/chat/completions", json={}).status_code == 401
    r = httpx.post(
        gateway.url + "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=lsk_nope",
        json={"contents": [{"parts": [{"text": "hi"}]}]},
    )
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    assert sim.count() == sent


def test_request_size_limit_and_unknown_upstream(stack: tuple[Sim, Gateway], ana: str) -> None:
    sim, gateway = stack
    sent = sim.count()
    auth = {"x-api-key": ana, "anthropic-version": "2023-06-01"}
    big = {"model": "claude-sonnet-4-5", "max_tokens": 5,
           "messages": [{"role": "user", "content": "x" * 300_000}]}  # fmt: skip
    r = httpx.post(gateway.url + "/anthropic/v1/messages", json=big, headers=auth, timeout=60)
    assert r.status_code == 413 and r.json()["type"] == "error"
    r = httpx.post(gateway.url + "/nowhere/v1/chat/completions", json={}, headers=auth)
    assert r.status_code == 404
    assert sim.count() == sent


def test_no_provider_key_in_the_store(stack: tuple[Sim, Gateway], ana: str) -> None:
    _, gateway = stack
    _openai(gateway, ana).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
    )
    store = open_store(gateway.db)
    with store.begin() as conn:
        tables = [
            r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        ]
        dump = "".join(repr(list(conn.execute(text(f'SELECT * FROM "{t}"')))) for t in tables)
    assert "llmspend_gateway_keys" in tables and "acme" in dump
    assert PROVIDER_KEY not in dump and ana not in dump


def test_upstream_errors_pass_through_unchanged_and_cost_nothing(
    stack: tuple[Sim, Gateway], ana: str
) -> None:
    _, gateway = stack
    errors = {"x-sim-directives": "error=400"}
    direct = httpx.post(stack[0].url + "/v1/chat/completions", json=SHORT_CHAT, headers=errors)
    r, added = _post_chat(gateway, ana, "/openai/v1/chat/completions", errors)
    assert (r.status_code, r.json()) == (direct.status_code, direct.json()) and r.status_code == 400
    (row,) = added
    assert (row.status, row.cost_nanos, row.user_name) == ("error", 0, "ana")


def test_a_stream_cut_upstream_is_settled_partial_with_what_was_received(
    stack: tuple[Sim, Gateway], ana: str
) -> None:
    _, gateway = stack
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 40, "stream": True}
    before = len(gateway.rows())
    headers = {"x-sim-directives": "cut=2", "authorization": f"Bearer {ana}"}
    url = gateway.url + "/openai/v1/chat/completions"
    with (
        pytest.raises(httpx.RemoteProtocolError),  # the client sees the cut too
        httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r,
    ):
        assert r.status_code == 200
        for _ in r.iter_raw():
            pass
    deadline = time.monotonic() + 60
    while len(gateway.rows()) == before:  # settled after the client saw the cut: poll
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (row,) = gateway.rows()[before:]
    assert (row.status, row.user_name, bool(row.streamed)) == ("partial", "ana", True)
    assert row.output_tokens > 0  # estimated from the chunks that arrived


ODD_USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


class _Upstream:
    """An OpenAI-shaped upstream in this process that compresses its answers with gzip
    although asked for ``identity``, and can hold a stream open after its first event
    (``?hold=1``) until :attr:`release` is set."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.release = threading.Event()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                import gzip

                self.rfile.read(int(self.headers.get("content-length", 0)))
                seen = {**self.headers, "path": self.path}
                self.server.seen.append(seen)  # type: ignore[attr-defined]
                if self.path.endswith("?hold=1"):
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    event = (
                        b'data: {"id":"c1","object":"chat.completion.chunk",'
                        b'"model":"gpt-4o-mini","choices":[{"index":0,"delta":'
                        b'{"content":"hi"}}]}\n\n'
                    )
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    up.release.wait(60)
                    self.close_connection = True
                    return
                if self.path.endswith(("?br=1", "?badgzip=1")):  # an error it cannot read
                    brotli = self.path.endswith("?br=1")
                    data = b"\x1b\x2a\x00" + f"bad key {PROVIDER_KEY}".encode()
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-encoding", "br" if brotli else "gzip")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                body: dict[str, Any]
                if self.path.endswith("?fail=1"):
                    status = 400
                    body = {"error": {"message": f"bad key {PROVIDER_KEY}", "type": "x"}}
                else:
                    status = 200
                    body = {
                        "id": "c1", "object": "chat.completion", "model": "gpt-4o-mini",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "hi"}}],
                        "usage": ODD_USAGE,
                    }  # fmt: skip
                data = gzip.compress(json.dumps(body).encode())
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-encoding", "gzip")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.path.endswith("?half=1"):  # the answer cut off half-way
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.seen = []  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Upstream, Gateway, str]]:
    """A gateway whose ``/odd`` upstream is :class:`_Upstream`."""
    sim, upstream = Sim(), _Upstream()
    extra = "".join(
        f'[upstreams.{name}]\nbase_url = "{url}"\nkey_env = "{KEY_ENV}"\n'
        'dialect = "openai"\nprovider = "openai"\n'
        for name, url in (("odd", upstream.url), ("dead", f"http://127.0.0.1:{_free_port()}"))
    )
    gateway = Gateway(tmp_path_factory.mktemp("odd"), sim, extra=extra, name="odd")
    try:
        yield upstream, gateway, gateway.new_key("acme", "churn", "ana")
    finally:
        log = gateway.stop()
        upstream.stop()
        sim.stop()
        assert PROVIDER_KEY not in log


def test_a_compressed_answer_passes_through_as_sent_and_its_usage_is_read(
    odd: tuple[_Upstream, Gateway, str],
) -> None:
    upstream, gateway, key = odd
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 60}
    auth = {"authorization": f"Bearer {key}"}
    r = httpx.post(gateway.url + "/odd/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.json()["usage"] == ODD_USAGE  # decoded by the client: body and header agree
    assert upstream.server.seen[-1]["accept-encoding"] == "identity"  # type: ignore[attr-defined]
    (row,) = gateway.rows()[-1:]
    assert (row.status, row.input_tokens, row.output_tokens) == ("ok", 1234, 56)
    # An error answer quoting the provider key: scrubbed, so passed on decoded.
    r = httpx.post(gateway.url + "/odd/v1/chat/completions?fail=1", json=body, headers=auth)
    assert r.status_code == 400 and "content-encoding" not in r.headers
    assert PROVIDER_KEY not in r.text and "[redacted]" in r.json()["error"]["message"]
    (row,) = gateway.rows()[-1:]
    assert (row.status, row.cost_nanos) == ("error", 0)


def test_a_client_leaving_mid_stream_is_settled_partial_and_the_upstream_read_stops(
    odd: tuple[_Upstream, Gateway, str],
) -> None:
    upstream, gateway, key = odd
    before = len(gateway.rows())
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 60, "stream": True}
    url = gateway.url + "/odd/v1/chat/completions?hold=1"
    with httpx.stream(
        "POST", url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as r:
        assert r.status_code == 200
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    # The client has left; the upstream still holds its stream open (until released).
    deadline = time.monotonic() + 60
    while len(gateway.rows()) == before:
        assert time.monotonic() < deadline, gateway.log.read_text()
        time.sleep(0.05)
    assert not upstream.release.is_set()
    (row,) = gateway.rows()[before:]
    assert (row.status, row.user_name, bool(row.streamed)) == ("partial", "ana", True)
    upstream.release.set()


def test_an_unreachable_upstream_is_a_502_recorded_as_an_error_costing_nothing(
    odd: tuple[_Upstream, Gateway, str],
) -> None:
    _, gateway, key = odd
    r, added = _post_chat(gateway, key, "/dead/v1/chat/completions")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
    (row,) = added
    assert (row.status, row.cost_nanos, row.user_name) == ("error", 0, "ana")


def test_an_answer_cut_off_upstream_is_a_502_recorded_as_an_error_costing_nothing(
    odd: tuple[_Upstream, Gateway, str],
) -> None:
    _, gateway, key = odd
    r, added = _post_chat(gateway, key, "/odd/v1/chat/completions?half=1")
    assert r.status_code == 502 and "cut off" in r.json()["error"]["message"]
    (row,) = added  # recorded, and its reservation given back
    assert (row.status, row.cost_nanos, row.user_name) == ("error", 0, "ana")


@pytest.mark.parametrize("how", ["br", "badgzip"])
def test_an_error_body_the_gateway_cannot_decode_becomes_its_own_error(
    odd: tuple[_Upstream, Gateway, str], how: str
) -> None:
    """An error body in an encoding the gateway cannot read (it may quote the key) is not
    passed on: the status stays, the body is the provider's error shape, uncompressed."""
    _, gateway, key = odd
    r, added = _post_chat(gateway, key, f"/odd/v1/chat/completions?{how}=1")
    assert r.status_code == 400 and "content-encoding" not in r.headers
    assert "cannot read" in r.json()["error"]["message"]
    assert PROVIDER_KEY not in r.text
    (row,) = added
    assert (row.status, row.cost_nanos) == ("error", 0)


def test_a_gemini_style_query_key_is_never_forwarded(odd: tuple[_Upstream, Gateway, str]) -> None:
    upstream, gateway, key = odd
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
    r = httpx.post(gateway.url + f"/odd/v1/chat/completions?key={key}&x=a+b", json=body)
    assert r.status_code == 200
    seen = upstream.server.seen[-1]  # type: ignore[attr-defined]
    assert seen["path"] == "/v1/chat/completions?x=a+b" and key not in json.dumps(seen)


def test_request_headers_pass_as_sent_with_none_added(
    odd: tuple[_Upstream, Gateway, str],
) -> None:
    upstream, gateway, key = odd
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5})
    url, auth = gateway.url + "/odd/v1/chat/completions", {"authorization": f"Bearer {key}"}
    assert httpx.post(url, content=body, headers=auth).status_code == 200  # no content-type
    seen = {k.lower(): v for k, v in upstream.server.seen[-1].items()}  # type: ignore[attr-defined]
    assert "content-type" not in seen  # aiohttp would add application/octet-stream
    assert seen["user-agent"].startswith("python-httpx/")  # the client's own, not aiohttp's
    typed = auth | {"content-type": "application/json", "user-agent": "mine/1"}
    assert httpx.post(url, content=body, headers=typed).status_code == 200
    seen = {k.lower(): v for k, v in upstream.server.seen[-1].items()}  # type: ignore[attr-defined]
    assert (seen["content-type"], seen["user-agent"]) == ("application/json", "mine/1")


def test_a_transport_tap_in_the_gateways_process_leaves_its_upstream_calls_to_it(
    fresh_sim: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The gateway's upstream requests are recorded once, by the gateway, even where the
    aiohttp tap is installed and the upstream is a declared provider endpoint."""
    import asyncio

    import aiohttp

    import llmspend
    from llmspend.dialects import hosts
    from llmspend.gateway.config import load_config
    from llmspend.gateway.proxy import Proxy

    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    config_path = tmp_path / "gw.toml"
    config_path.write_text(
        f'[upstreams.openai]\nbase_url = "{fresh_sim.url}"\nkey_env = "{KEY_ENV}"\n'
    )
    config = load_config(str(config_path), {KEY_ENV: PROVIDER_KEY})
    tracker = llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}")
    try:
        llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
        _, key = keys.create_key(tracker.store, org="acme", project="churn", user="ana")
        proxy = Proxy(config, tracker.store)
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5}
        sent: list[dict[str, Any]] = []

        async def run() -> None:
            url = fresh_sim.openai_base_url + "/chat/completions"
            async with aiohttp.ClientSession() as session, session.post(url, json=body) as r:
                assert r.status == 200  # the tap is on: recorded
                await r.read()
            messages = [{"type": "http.request", "body": json.dumps(body).encode()}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()  # the client never leaves
                raise AssertionError

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http", "method": "POST", "path": "/openai/v1/chat/completions",
                "query_string": b"", "headers": [
                    (b"authorization", f"Bearer {key}".encode()),
                    (b"content-type", b"application/json"),
                ],
            }  # fmt: skip
            await proxy.open()
            try:
                await proxy(scope, receive, send)
            finally:
                await proxy.aclose()

        asyncio.run(run())
        assert sent[0]["status"] == 200
        with tracker.store.begin() as conn:
            users = [r[0] for r in conn.execute(text("SELECT user_name FROM llmspend_usage"))]
    finally:
        llmspend.uninstall()
    assert fresh_sim.request_count == 2
    assert len(users) == 2 and users.count("ana") == 1  # not a third row for the tap


def test_a_store_job_still_queued_runs_when_its_request_is_cancelled() -> None:
    """A settlement waiting for a busy store thread is not thrown away when the request's
    task is cancelled (a client leaving, a server's shutdown): the job runs all the same."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from llmspend.gateway.proxy import _blocking

    pool = ThreadPoolExecutor(1)
    busy, ran = threading.Event(), threading.Event()
    pool.submit(busy.wait, 60)  # the only thread is taken: the next job queues

    async def run() -> None:
        task = asyncio.ensure_future(_blocking(pool, ran.set))
        await asyncio.sleep(0)  # the job is submitted and waited for
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    busy.set()
    assert ran.wait(60)  # the queued job ran after the cancellation
    pool.shutdown()


def test_a_second_lifespan_of_the_same_proxy_still_reaches_its_store(tmp_path: Path) -> None:
    import asyncio

    from llmspend.gateway.config import load_config
    from llmspend.gateway.proxy import Proxy, _blocking
    from llmspend.store.engine import open_store

    config_path = tmp_path / "gw.toml"
    config_path.write_text(
        f'[upstreams.openai]\nbase_url = "http://127.0.0.1:9"\nkey_env = "{KEY_ENV}"\n'
    )
    proxy = Proxy(
        load_config(str(config_path), {KEY_ENV: PROVIDER_KEY}),
        open_store(f"sqlite:///{tmp_path / 'g.sqlite'}"),
    )

    async def lifespan() -> int:
        await proxy.open()
        try:
            return await _blocking(proxy._db, lambda: 42)
        finally:
            await proxy.aclose()

    assert asyncio.run(lifespan()) == 42
    assert asyncio.run(lifespan()) == 42  # not "cannot schedule new futures after shutdown"


def _response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length, read whole from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head


def test_an_idle_connection_outlives_the_sdks_own_keepalive(stack: Any) -> None:
    """The gateway keeps an idle client connection open longer than the SDKs' httpx pools keep
    theirs, so the client always closes first. The other way round, a request sent just as the
    server closes is reset (uvicorn's default, 5 s, is httpx's own limit)."""
    import openai._constants

    _, gateway = stack
    sdk = openai._constants.DEFAULT_CONNECTION_LIMITS.keepalive_expiry
    idle = max(httpx.Limits().keepalive_expiry or 0, sdk or 0)
    assert idle > 0
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=60) as sock:
        sock.sendall(request)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        # past the client's own limit the server has not closed: nothing to read, no EOF
        readable, _, _ = select.select([sock], [], [], idle + 3)
        assert not readable, "the gateway closed an idle connection the SDK would still use"
        sock.sendall(request)
        assert _response(sock).startswith(b"HTTP/1.1 200")


def test_keepalive_timeout_is_configurable_and_checked(tmp_path: Path) -> None:
    from llmspend.errors import ConfigError
    from llmspend.gateway.config import KEEPALIVE_SECONDS, load_config

    path = tmp_path / "gateway.toml"
    upstream = f'[upstreams.openai]\nbase_url = "http://127.0.0.1:9"\nkey_env = "{KEY_ENV}"\n'
    path.write_text(upstream)
    assert load_config(str(path), {KEY_ENV: PROVIDER_KEY}).keepalive_timeout == KEEPALIVE_SECONDS
    path.write_text("[gateway]\nkeepalive_timeout = 120\n" + upstream)
    assert load_config(str(path), {KEY_ENV: PROVIDER_KEY}).keepalive_timeout == 120
    for bad in ("0", "-5", '"75"', "true"):
        path.write_text(f"[gateway]\nkeepalive_timeout = {bad}\n" + upstream)
        with pytest.raises(ConfigError, match="keepalive_timeout must be a positive number"):
            load_config(str(path), {KEY_ENV: PROVIDER_KEY})
