"""requests' ``response.raw`` read directly, every way urllib3 offers: the caller gets the
bytes it gets without llmspend, and the call is one row priced from the usage it reports
(before, reading by iteration, ``read1``, ``readinto``, ``readline`` or ``read_chunked``
went around the tee: a row ``partial``, estimated with no output).
"""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable
from typing import Any

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
STREAM: dict[str, Any] = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def _read1(raw: Any) -> bytes:
    return b"".join(iter(lambda: raw.read1(13), b""))


def _readinto(raw: Any) -> bytes:
    buf, out = bytearray(17), bytearray()
    while n := raw.readinto(buf):
        out += buf[:n]
    return bytes(out)


def _copy(raw: Any) -> bytes:
    sink = io.BytesIO()
    shutil.copyfileobj(raw, sink)
    return sink.getvalue()


READS: dict[str, Callable[[Any], bytes]] = {
    "iteration": lambda raw: b"".join(raw),
    "read1": _read1,
    "readinto": _readinto,
    "readline": lambda raw: b"".join(iter(raw.readline, b"")),
    "read_chunked": lambda raw: b"".join(raw.read_chunked() if raw.chunked else raw.stream()),
    "copyfileobj": _copy,
}


@pytest.fixture
def url(fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    return fresh_sim.openai_base_url + "/chat/completions"


def _scrub(data: bytes) -> bytes:
    return re.sub(rb'"(id|created)":\s*("[^"]*"|\d+)', b"", data)


@pytest.mark.parametrize("how", list(READS))
@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["json", "sse"])
def test_every_way_of_reading_raw_is_teed(
    url: str, how: str, body: dict[str, Any], tmp_path: Any
) -> None:
    read = READS[how]
    with requests.post(url, json=body, stream=True) as r:
        without = read(r.raw)
    llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    try:
        with requests.post(url, json=body, stream=True) as r:
            got = read(r.raw)
        tracker = installed_tracker()
        assert tracker is not None
        [row] = tracker.recent
    finally:
        llmspend.uninstall()
    assert _scrub(got) == _scrub(without)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 10, 30)
    assert not row["usage_estimated"]
