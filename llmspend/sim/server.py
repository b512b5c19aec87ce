"""HTTP machinery of the simulator: server, connections, routing, directives.

Everything here is standard library only. :class:`SimServer` runs a
:class:`http.server.ThreadingHTTPServer` (HTTP/1.1, keep-alive, chunked streaming) on a
daemon thread; each connection gets its own tracked thread, so :meth:`SimServer.stop`
can close idle keep-alive connections and join every thread it started.

The provider dialects live in :mod:`llmspend.sim.openai_api` and
:mod:`llmspend.sim.gemini_api`; they receive an :class:`Exchange` (one request and its
reply channel) and share the formulas of :mod:`llmspend.sim`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import select
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from ..dialects import gemini

__all__ = [
    "Behavior",
    "Directives",
    "Exchange",
    "SimRequest",
    "SimServer",
    "iter_sse",
    "serve",
]

log = logging.getLogger("llmspend.sim")

HANG_MAX = 30.0
"""Upper bound (seconds) of ``#sim:hang`` and of any ``delay``."""

_DIRECTIVE = re.compile(r"#sim:([a-z_]+)(?:=([\w.\-]+))?", re.IGNORECASE)
_LOOPBACK = ("127.", "localhost")


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

    def __init__(self, handler: _Handler, raw: bytes) -> None:
        self._handler = handler
        self.sim: SimServer = handler.server.sim
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


# --------------------------------------------------------------------------- routing

_GEMINI_MODELS = re.compile(r"^/(?:v1|v1beta|v1alpha)/models(?:/([^/:]+))?$")
_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(/.*)$")
_OPENAI_PREFIXES = (("/openai/v1", "azure"), ("/openai", "azure"), ("/api/v1", "openrouter"))


def _route(ex: Exchange) -> None:
    from . import gemini_api, openai_api  # lazy: the dialects import this module

    path = ex.path
    if target := gemini.parse_path(path):  # the dialect's reading of a Gemini call path
        return gemini_api.handle(ex, target.model, target.method)
    google = "x-goog-api-key" in ex.headers or "key" in ex.query
    if (m := _GEMINI_MODELS.match(path)) and google:
        return gemini_api.handle_models(ex, m.group(1))
    if m := _AZURE_DEPLOYMENT.match(path):
        return openai_api.handle(ex, m.group(2), provider="azure", deployment=m.group(1))
    for prefix, provider in (*_OPENAI_PREFIXES, ("/v1", None)):
        if path.startswith(prefix + "/"):
            return openai_api.handle(ex, path[len(prefix) :], provider=provider)
    if path in ("/", "/health"):
        return ex.send_json({"status": "ok", "server": "llmspend.sim", "url": ex.sim.url})
    if path == "/sim/image.png":
        return ex.send_body(openai_api.PNG, "image/png")
    return ex.send_error(404, f"llmspend.sim: no route for {ex.method} {path}")


# --------------------------------------------------------------------------- HTTP server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "llmspend-sim/1"
    timeout = 120  # idle keep-alive connections close after this
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every response on loopback.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _dispatch(self) -> None:
        raw = self._read_body()
        sim = self.server.sim
        ex = Exchange(self, raw)
        ex.seq = sim._record(SimRequest(ex.method, self.path, ex.body, ex.headers))
        try:
            _route(ex)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            log.exception("llmspend.sim: handler failed")
            if not ex.sent:
                ex.send_error(400, f"llmspend.sim could not handle this request: {exc}")
            else:
                self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: SimServer) -> None:
        self.sim = sim
        self._open: set[socket.socket] = set()  # connections still open
        self._conn_threads: list[threading.Thread] = []  # every connection thread not yet joined
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.sim._connections += 1  # only the serving thread writes this
        thread = threading.Thread(
            target=self._serve_conn,
            args=(request, client_address),
            name=f"llmspend-sim-{self.server_address[1]}-conn",
            daemon=True,
        )
        with self._conns_lock:
            self._conn_threads = [t for t in self._conn_threads if t.is_alive()]
            self._conn_threads.append(thread)
            self._open.add(request)
        thread.start()

    def _serve_conn(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._conns_lock:
                self._open.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("llmspend.sim: connection error from %s", client_address, exc_info=True)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down and join every connection thread."""
        with self._conns_lock:
            sockets, threads = list(self._open), list(self._conn_threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class SimServer:
    """A local simulated LLM provider (OpenAI, Azure OpenAI, OpenRouter, xAI, Gemini).

    Use as a context manager or with :meth:`start` / :meth:`stop`. ``port=0`` picks a free
    port. Only loopback hosts are accepted. Keyword arguments are server-wide defaults,
    as for :meth:`set_behavior`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **behavior: Any) -> None:
        if not host.startswith(_LOOPBACK):
            raise ValueError(f"llmspend.sim binds loopback addresses only, not {host!r}")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port
        self.behavior = Behavior()
        self._lock = threading.Lock()
        self._count = 0
        self._connections = 0
        self._log: deque[SimRequest] = deque(maxlen=1000)
        self.store: dict[str, Any] = {}
        """Responses API objects by id (for ``GET /v1/responses/{id}``), bounded."""
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        if behavior:
            self.set_behavior(**behavior)

    # ---- lifecycle
    def start(self) -> SimServer:
        """Bind and serve on a daemon thread; returns ``self``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"llmspend-sim-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join every thread."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (Gemini ``base_url``, Azure ``azure_endpoint``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"`` (OpenAI, xAI)."""
        return self.url + "/v1"

    @property
    def openrouter_base_url(self) -> str:
        """``url + "/api/v1"``: OpenAI dialect with OpenRouter's usage extras."""
        return self.url + "/api/v1"

    # ---- observation
    @property
    def request_count(self) -> int:
        """How many HTTP requests were received (including failed ones)."""
        with self._lock:
            return self._count

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since start or :meth:`reset` (keep-alive reuses them)."""
        return self._connections

    @property
    def requests(self) -> list[SimRequest]:
        """A copy of the request log (the last 1000)."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Clear the log, the count, the stored responses and the behaviour."""
        with self._lock:
            self._count = self._connections = 0
            self._log.clear()
            self.store.clear()
            self.behavior = Behavior()

    def set_behavior(self, **changes: Any) -> None:
        """Change server-wide defaults, e.g. ``set_behavior(error=429, error_times=1)``.

        Keys: every directive (``error delay hang cut cached reasoning thoughts tokens
        completion``) and ``error_times hang_limit thinking_models reasoning_models
        azure_deployments provider``. ``None`` clears a key back to its default.
        """
        if "thoughts" in changes:
            changes["reasoning"] = changes.pop("thoughts")
        fields = {f.name: f for f in dataclasses.fields(Behavior)}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"unknown behaviour keys: {sorted(unknown)}")
        with self._lock:
            default = Behavior()
            for key, value in changes.items():
                value = getattr(default, key) if value is None else value
                if key in ("thinking_models", "reasoning_models"):
                    value = (value,) if isinstance(value, str) else tuple(value)
                setattr(self.behavior, key, value)

    def _consume_defaults(self) -> dict[str, Any]:
        with self._lock:
            b = self.behavior
            found = {k: getattr(b, k) for k in _DIRECTIVE_FIELDS}
            if b.error is not None and b.error_times is not None:
                b.error_times -= 1
                if b.error_times <= 0:
                    b.error, b.error_times = None, None
        return {
            k: v
            for k, v in found.items()
            if v is not None and not (k in ("delay", "hang") and not v)
        }

    def _record(self, entry: SimRequest) -> int:
        with self._lock:
            self._count += 1
            self._log.append(entry)
            return self._count

    def _remember(self, response: dict[str, Any]) -> None:
        with self._lock:
            self.store[response["id"]] = response
            while len(self.store) > 256:
                self.store.pop(next(iter(self.store)))


def serve(host: str = "127.0.0.1", port: int = 8765, *, quiet: bool = False) -> None:
    """Run a :class:`SimServer` in the foreground until Ctrl-C."""
    sim = SimServer(host, port).start()
    if not quiet:
        print(f"llmspend.sim listening on {sim.url}  (OpenAI base_url {sim.openai_base_url})")
        print("Ctrl-C to stop", flush=True)
    stop = threading.Event()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


def iter_sse(events: Iterable[Any], *, named: bool = False, crlf: bool = False) -> Iterator[bytes]:
    """Encode objects as SSE ``data:`` events (``event:`` lines too when ``named``)."""
    end = b"\r\n\r\n" if crlf else b"\n\n"
    for obj in events:
        if isinstance(obj, bytes):
            yield obj
            continue
        head = b"event: %s\n" % obj["type"].encode() if named else b""
        yield head + b"data: " + json.dumps(obj, separators=(",", ":")).encode() + end
