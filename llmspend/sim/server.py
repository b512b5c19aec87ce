"""HTTP machinery of the simulator: server, connections and routing.

Everything here is standard library only. :class:`SimServer` runs a
:class:`http.server.ThreadingHTTPServer` (HTTP/1.1, keep-alive, chunked streaming) on a
daemon thread; each connection gets its own tracked thread, so :meth:`SimServer.stop`
can close idle keep-alive connections and join every thread it started.

The provider handlers live in :mod:`llmspend.sim.openai_api`,
:mod:`llmspend.sim.gemini_api` and :mod:`llmspend.sim.anthropic_api`; they receive an
:class:`~llmspend.sim.exchange.Exchange` (one request and its reply channel, with its
directives) and share the formulas of
:mod:`llmspend.sim.formulas`. Gemini call paths are read by :mod:`llmspend.dialects.gemini`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..dialects import gemini
from . import anthropic_api, costs_api, gemini_api, openai_api
from .exchange import (
    _DIRECTIVE_FIELDS,
    Behavior,
    Directives,
    Exchange,
    SimRequest,
    iter_sse,
)

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

_LOOPBACK = ("127.", "localhost")


# --------------------------------------------------------------------------- routing

_GEMINI_MODELS = re.compile(r"^/(?:v1|v1beta|v1alpha)/models(?:/([^/:]+))?$")
_GEMINI_BATCHES = re.compile(r"^/(?:v1|v1beta|v1alpha)/batches(?:/([^/:]+))?$")
_GEMINI_DOWNLOAD = re.compile(r"^/(?:v1|v1beta|v1alpha)/files/([^/:]+):download$")
_AZURE_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)(/.*)$")
_OPENAI_PREFIXES = (("/openai/v1", "azure"), ("/openai", "azure"), ("/api/v1", "openrouter"))


def _route(ex: Exchange) -> None:
    path = ex.path
    if target := gemini.parse_path(path):  # the dialect's reading of a Gemini call path
        return gemini_api.handle(ex, target.model, target.method)
    if "/v1/messages" in path or path.endswith("/v1/complete"):  # Anthropic (any prefix)
        return anthropic_api.handle(ex, path)
    google = "x-goog-api-key" in ex.headers or "key" in ex.query
    if (m := _GEMINI_MODELS.match(path)) and google:
        return gemini_api.handle_models(ex, m.group(1))
    if (m := _GEMINI_BATCHES.match(path)) and google:
        return gemini_api.handle_batches(ex, m.group(1))
    if (m := _GEMINI_DOWNLOAD.match(path)) and google:
        return gemini_api.handle_download(ex, m.group(1))
    if path.endswith(costs_api.PATH):  # the organization Costs API (admin)
        return costs_api.handle(ex)
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
    """A local simulated LLM provider (OpenAI, Azure OpenAI, OpenRouter, xAI, Gemini,
    Anthropic).

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
        self._serving = False  # the serving thread has entered (or is entering) serve_forever
        if behavior:
            self.set_behavior(**behavior)

    # ---- lifecycle
    def start(self) -> SimServer:
        """Bind and serve on a daemon thread; returns ``self``."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._serving = False
        self._httpd = httpd = _HTTPServer((self.host, self.port), self)
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._serve, args=(httpd,), daemon=True, name=f"llmspend-sim-{self.port}"
        )
        self._thread.start()
        return self

    def _serve(self, httpd: _HTTPServer) -> None:
        with self._lock:  # stop() shuts the loop down only if it is (about to be) running
            if self._stopping.is_set():
                return
            self._serving = True
        httpd.serve_forever(poll_interval=0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join every thread.

        Safe at any point of :meth:`start`, even one interrupted before its thread ran.
        """
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        with self._lock:
            self._stopping.set()
            serving = self._serving
        if serving:
            httpd.shutdown()
        httpd.server_close()
        httpd.close_connections(timeout)
        thread, self._thread = self._thread, None
        if thread is not None:
            # not started yet (start() interrupted): it sees _stopping and returns at once
            with contextlib.suppress(RuntimeError):
                thread.join(timeout)

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
        completion cache_write``) and ``error_times hang_limit thinking_models reasoning_models
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
    """Run a :class:`SimServer` in the foreground until Ctrl-C.

    The ``try`` is entered before the server starts, so a Ctrl-C at any moment after that
    (while binding, before or during the banner, while serving) stops every thread it
    started and returns; the serving threads are daemons, so nothing outlives the process.
    """
    sim = SimServer(host, port)
    try:
        sim.start()
        if not quiet:
            print(f"llmspend.sim listening on {sim.url}  (OpenAI base_url {sim.openai_base_url})")
            print("Ctrl-C to stop", flush=True)
        stop = threading.Event()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        _stop_uninterrupted(sim)


def _stop_uninterrupted(sim: SimServer) -> None:
    """``sim.stop()``; a second Ctrl-C while stopping is ignored (the threads are daemons)."""
    with contextlib.suppress(KeyboardInterrupt):
        sim.stop()
