"""One simulated exchange: a parsed request, its directives, and the reply channel.

Standard library only. The provider handlers (:mod:`llmspend.sim.openai_api`,
:mod:`llmspend.sim.gemini_api`, :mod:`llmspend.sim.anthropic_api`) receive an
:class:`Exchange`; :mod:`llmspend.sim.server` runs the HTTP server that makes them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import select
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HANG_MAX", "Behavior", "Directives", "Exchange", "SimRequest", "iter_sse"]

HANG_MAX = 30.0
"""Upper bound (seconds) of ``#sim:hang`` and of any ``delay``."""

_DIRECTIVE = re.compile(r"#sim:([a-z_]+)(?:=([\w.\-]+))?", re.IGNORECASE)


class SimRequest(NamedTuple):
    """One logged request: the path includes the query string; header names are lower case."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


@dataclasses.dataclass
class Directives:
    """The per-request behaviour, after merging server defaults, prompt and header."""

    error: int | None = None
    delay: float = 0.0
    hang: bool = False
    cut: int | None = None
    cached: int | None = None
    reasoning: int | None = None
    tokens: int | None = None
    completion: int | None = None
    cache_write: int | None = None


@dataclasses.dataclass
class Behavior(Directives):
    """Server-wide defaults (every :class:`Directives` field) plus configuration.

    ``error_times`` limits ``error`` to that many requests (then it clears itself);
    ``hang_limit`` bounds ``hang``; ``thinking_models`` are substrings of Gemini model
    names that report ``thoughtsTokenCount``; ``reasoning_models`` are prefixes of OpenAI
    model names that report reasoning tokens; ``azure_deployments`` maps an Azure
    deployment name to the model the reply names; ``provider`` ("openrouter", "xai")
    applies that provider's usage extras to every OpenAI-dialect request.
    """

    error_times: int | None = None
    hang_limit: float = HANG_MAX
    thinking_models: tuple[str, ...] = ("pro", "thinking", "2.5")
    reasoning_models: tuple[str, ...] = ("o1", "o3", "o4", "gpt-5")
    azure_deployments: dict[str, str] = dataclasses.field(default_factory=dict)
    provider: str | None = None


_DIRECTIVE_FIELDS = {f.name for f in dataclasses.fields(Directives)}


def _parse_directives(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in _DIRECTIVE.findall(text or ""):
        key = key.lower()
        key = "reasoning" if key == "thoughts" else key
        value = value.rstrip(".")  # "... #sim:delay=1.5." ends a sentence
        if key == "hang":
            found["hang"] = True
        elif key in _DIRECTIVE_FIELDS and value:
            with contextlib.suppress(ValueError):
                found[key] = min(float(value), HANG_MAX) if key == "delay" else int(value)
    return found


# --------------------------------------------------------------------------- one exchange


class Exchange:
    """One parsed request and the means to answer it."""

    def __init__(self, handler: Any, raw: bytes) -> None:
        self._handler = handler  # the server's request handler (http.server)
        self.sim: Any = handler.server.sim  # the SimServer
        split = urlsplit(handler.path)
        self.method = handler.command
        self.path = split.path
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))
        self.headers = {k.lower(): v for k, v in handler.headers.items()}
        self.raw = raw
        self.body: Any = None
        ctype = self.headers.get("content-type", "")
        if raw and ("json" in ctype or raw[:1] in (b"{", b"[")):
            with contextlib.suppress(ValueError):
                self.body = json.loads(raw)
        self.sent = False
        self.error_body: Callable[[int, str | None], dict[str, Any]] = _plain_error
        self.extra_headers: dict[str, str] = {}
        self.seq = 0

    def ident(self, prefix: str) -> str:
        """An id unique per request: ``{prefix}sim{seq:06d}{crc32(body):08x}``."""
        return f"{prefix}sim{self.seq:06d}{zlib.crc32(self.raw) & 0xFFFFFFFF:08x}"

    def directives(self, prompt_text: str) -> Directives:
        """Server defaults, overridden by ``#sim:`` directives, then by ``X-Sim-Directives``."""
        found = self.sim._consume_defaults()
        found.update(_parse_directives(prompt_text))
        header = self.headers.get("x-sim-directives", "")
        found.update(_parse_directives(" ".join("#sim:" + p for p in re.split(r"[\s,;]+", header))))
        return Directives(**found)

    def prelude(self, d: Directives, *, stream: bool = False) -> bool:
        """Apply hang, delay, error and non-stream cut; ``True`` means: now answer."""
        if d.hang:
            self.wait(min(self.sim.behavior.hang_limit, HANG_MAX))
            self.drop()
            return False
        if d.delay > 0 and not self.wait(d.delay):
            self.drop()
            return False
        if d.error is not None:
            self.send_error(d.error)
            return False
        if d.cut is not None and not stream:
            self.drop()
            return False
        return True

    def wait(self, seconds: float) -> bool:
        """Sleep; ``False`` early if the server stops or the client goes away."""
        deadline = time.monotonic() + seconds
        sock = self._handler.connection
        while (left := deadline - time.monotonic()) > 0:
            if self.sim._stopping.is_set():
                return False
            try:
                readable, _, _ = select.select([sock], [], [], min(left, 0.05))
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return False
            except (OSError, ValueError):
                return False
            if readable:  # pipelined bytes: nothing to learn from the socket now
                self.sim._stopping.wait(min(left, 0.05))
        return True

    def send_error(self, status: int, message: str | None = None) -> None:
        """A provider-shaped error reply."""
        self.send_json(self.error_body(status, message), status)

    def send_json(
        self, obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        """A JSON reply with ``Content-Length``."""
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
        self.send_body(data, "application/json", status, headers)

    def send_body(
        self, data: bytes, ctype: str, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> None:
        """A reply with ``Content-Length`` (keeps the connection alive)."""
        self._start(status, ctype, {"Content-Length": str(len(data)), **(headers or {})})
        self._write(data)

    def stream(self, events: Iterable[bytes], cut: int | None, ctype: str) -> None:
        """A chunked reply; after ``cut`` events the connection is dropped."""
        self._start(200, ctype, {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"})
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                self.drop()
                return
            if not self._write(b"%x\r\n%s\r\n" % (len(event), event)):
                return
        self._write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the connection without (finishing) a reply."""
        self.sent = True
        self._handler.close_connection = True
        with contextlib.suppress(OSError):
            self._handler.connection.shutdown(socket.SHUT_RDWR)

    def _start(self, status: int, ctype: str, headers: Mapping[str, str]) -> None:
        self.sent = True
        h = self._handler
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        for key, value in {**self.extra_headers, **headers}.items():
            h.send_header(key, value)
        h.end_headers()

    def _write(self, data: bytes) -> bool:
        try:
            self._handler.wfile.write(data)
            return True
        except OSError:
            self._handler.close_connection = True
            return False


def _plain_error(status: int, message: str | None) -> dict[str, Any]:
    return {"error": {"code": status, "message": message or "llmspend.sim: no such route"}}


def iter_sse(events: Iterable[Any], *, named: bool = False, crlf: bool = False) -> Iterator[bytes]:
    """Encode objects as SSE ``data:`` events (``event:`` lines too when ``named``)."""
    end = b"\r\n\r\n" if crlf else b"\n\n"
    for obj in events:
        if isinstance(obj, bytes):
            yield obj
            continue
        head = b"event: %s\n" % obj["type"].encode() if named else b""
        yield head + b"data: " + json.dumps(obj, separators=(",", ":")).encode() + end
