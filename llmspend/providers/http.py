"""The transport taps' common part: from one HTTP request to one recorded call.

A transport tap (httpx, httpx2, requests, aiohttp) calls :func:`see` with what a request
says before it is sent. When the request goes to a provider endpoint
(:mod:`llmspend.dialects.hosts`) and its dialect calls it billed, the call is begun —
attribution, estimate, budget check; a refusal raises ``BudgetExceeded`` and nothing is
sent — and a :class:`Seen` comes back. The tap sends the request, then settles the call
from the response with :meth:`Seen.finish_body` (a body read whole), or hands the bytes of
a streamed body to a tee and calls :meth:`Seen.finish_body` when it ends or is closed.
Nothing here touches what the caller gets: the taps pass the library's own objects through.

A request an SDK tap is recording (:func:`llmspend.pipeline.is_handled`) is not looked at:
one call is one row however many layers see it.

A framework's retries of a refused request are refused each time and recorded once
(:func:`llmspend.pipeline.begin_call`'s ``request_key``).

Team mode: a request to the llmspend gateway is observed, not tracked (:class:`Watched`):
nothing is reserved or recorded here, and its answer's headers go to
:func:`llmspend.teammode.answered`.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ..call import Call, Usage
from ..dialects import Reading, Request, Route, tokens_from_bytes
from ..dialects.hosts import Endpoint, gateway_bound, match
from ..pipeline import asend_recorded, begin_call, internal_error, send_recorded
from ..teammode import answered, in_sdk_call, refusal
from ..tracker import installed_tracker
from .bytestreams import Tee, decoded

__all__ = ["Ending", "Seen", "Watched", "asend_seen", "see", "send_seen", "unbilled"]

log = logging.getLogger("llmspend")

_MAX_BODY = 64 * 1024 * 1024  # a request body larger than this is not parsed (estimated)

T = TypeVar("T")
_dialects: dict[str, Any] = {}


def _dialect(name: str) -> Any:
    module = _dialects.get(name)
    if module is None:
        module = _dialects[name] = importlib.import_module(f"llmspend.dialects.{name}")
    return module


def unbilled(status: int) -> bool:
    """Whether a final response with this status settles its call as an error that costs
    nothing: an error status, or a redirect the client did not follow (the provider never
    answered the request: it was sent elsewhere)."""
    return status >= 300


def _json(content: bytes | None, content_type: str) -> Mapping[str, Any] | None:
    if not content or len(content) > _MAX_BODY:
        return None
    if "json" not in content_type and content.lstrip()[:1] != b"{":
        return None
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _route(ep: Endpoint, method: str, path: str, body: Any, query: Any) -> Route | None:
    dialect = _dialect(ep.dialect)
    if ep.dialect == "openai":
        # The OpenAI routes are matched on the end of the path (Azure's and proxies'
        # prefixes vary): give the dialect the URL form it matches on.
        request = Request(method, f"{ep.scheme}://{ep.host}{path}", body, None, ep.host, query)
        openai_route: Route | None = dialect.route(request, provider=ep.provider)
        return openai_route
    if ep.dialect == "gemini" and "/models/" in path:
        path = "/v1/models/" + path.split("/models/", 1)[1]  # Vertex and proxy prefixes
    route: Route | None = dialect.route(Request(method, path, body, None, ep.host, query))
    if route is not None and ep.provider:
        route.provider = ep.provider
    return route


class Seen:
    """A provider call a transport tap found and began, until it is settled."""

    __slots__ = ("api", "call", "dialect")

    def __init__(self, call: Call, route: Route, dialect: str) -> None:
        self.call = call
        self.api = route.api
        self.dialect = dialect

    # -- settling ------------------------------------------------------------------------
    def observe(self, observe: Callable[[Seen, Any], None], response: Any, what: str) -> None:
        """``observe(self, response)``: settle now or arrange to; a failure of llmspend's
        there is logged and the call settled from an estimate, the response untouched."""
        try:
            observe(self, response)
        except Exception as exc:
            internal_error(what, exc)
            if not self.call.done:
                self.finish_body(b"", "", None)

    def fail(self, exc: BaseException) -> None:
        """The request raised: an error without usage (costs 0)."""
        self.call.finish(None, status="error", error=exc)

    def finish_status(self, error: BaseException) -> None:
        """The provider answered with an error status, or a redirect the caller's client did
        not follow (see :func:`unbilled`): nothing billed."""
        self.call.finish(None, status="error", error=error)

    def finish_body(
        self,
        data: bytes,
        content_type: str,
        request_id: str | None,
        *,
        ended: bool = True,
        error: BaseException | None = None,
    ) -> None:
        """Settle from a response body (JSON, SSE or a streamed JSON array); ``ended`` is
        false when the body was cut or closed before its end (``partial``)."""
        try:
            reading = self._read(data, content_type)
        except Exception as exc:
            internal_error(f"read a {self.dialect} response", exc)
            reading = Reading(None, complete=False, out_bytes=len(data))
        status = "ok" if ended or reading.complete else "partial"
        rid = reading.response_id or request_id
        if reading.usage is None:
            usage = Usage(
                tokens_from_bytes(self.call.input_upper), 0, 0,
                tokens_from_bytes(reading.out_bytes), 0,
            )  # fmt: skip
            self.call.finish(
                usage, status=status, response_model=reading.model, request_id=rid,
                error=error, usage_estimated=True, service_tier=reading.service_tier,
            )  # fmt: skip
        else:
            self.call.finish(
                reading.usage, status=status, response_model=reading.model, request_id=rid,
                error=error, service_tier=reading.service_tier,
            )  # fmt: skip

    def _read(self, data: bytes, content_type: str) -> Reading:
        dialect = _dialect(self.dialect)
        stripped = data.lstrip()
        if "event-stream" in content_type or stripped.startswith((b"data:", b"event:")):
            items, _ = _dialect("openai").sse_events(data)
            return self._fold(dialect, items)
        if not stripped:
            return Reading(None, complete=False)
        body = json.loads(data)
        if isinstance(body, list):  # a streamed JSON array (Gemini without alt=sse)
            return self._fold(dialect, body)
        reading: Reading = dialect.read(self.api, body)
        return reading

    def _fold(self, dialect: Any, items: list[Any]) -> Reading:
        reader = dialect.reader(self.api)
        for item in items:
            reader.feed(item)
        reading: Reading = reader.result()
        return reading


class Watched(Seen):
    """A request to the llmspend gateway (team mode): nothing to reserve or record here;
    its answer's headers are handed to :func:`llmspend.teammode.answered`. A refusal raises
    ``BudgetExceeded`` to a bare HTTP caller (an SDK tap's :func:`~llmspend.teammode.
    via_gateway` raises it instead, once the SDK has raised its own error)."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def observe(self, observe: Callable[[Seen, Any], None], response: Any, what: str) -> None:
        try:
            status: Any = getattr(response, "status_code", None) or getattr(response, "status", 0)
            answer = answered(int(status), response.headers, self.path)
        except Exception as exc:
            internal_error("read the gateway's answer", exc)
            return
        if answer.refused and not in_sdk_call():
            raise refusal(answer, _text(response))

    def fail(self, exc: BaseException) -> None:
        pass


def _text(response: Any) -> str:
    """A response body already read, as text (``""`` when it is not: never reads)."""
    try:
        content = response.__dict__.get("_content")
        return content.decode("utf-8", "replace") if isinstance(content, bytes) else ""
    except Exception:
        return ""


class Ending:
    """Settles one streamed response once, from what its tee kept: when the body ends or
    is closed (``partial`` before its end), when the response is collected unclosed (off
    the collector's thread), or when the caller's cell is interrupted after reading began."""

    __slots__ = ("__weakref__", "_done", "content_type", "encoding", "library", "readable",
                 "request_id", "seen", "tee")  # fmt: skip

    def __init__(
        self,
        seen: Seen,
        content_type: str,
        request_id: str | None,
        library: str = "",
        encoding: str = "identity",
    ) -> None:
        self.seen = seen
        self.content_type = content_type
        self.request_id = request_id
        self.library = library  # the httpx-family library whose decoder a tee needs
        self.encoding = encoding
        self.tee = Tee(True)
        self.readable = True  # false once bytes were read still compressed (not kept apart)
        self._done = threading.Lock()

    def closed(self, tee: Tee | None = None) -> None:
        self.end(False, tee.error if tee is not None else None)

    def end(self, eof: bool, error: BaseException | None = None) -> None:
        if not self._done.acquire(blocking=False):
            return  # once, whoever comes first
        tee = self.tee
        tee.eof = tee.eof or eof
        body = b"".join(tee.chunks) if tee.chunks is not None and self.readable else b""
        if body and self.library and self.encoding not in ("", "identity"):
            body = decoded(self.library, body, self.encoding)
        self.seen.finish_body(body, self.content_type, self.request_id, ended=tee.eof, error=error)

    def collected(self) -> None:
        if not self._done.locked():
            threading.Thread(target=self.end, args=(False,), daemon=True).start()

    def interrupted(self, error: BaseException) -> bool:
        if self.tee.size and not self._done.locked():
            self.end(False, error)
            return True
        return False


def send_seen(
    seen: Seen | None,
    send: Callable[[], T],
    observe: Callable[[Seen, T], None],
    what: str,
) -> T:
    """``send()`` the request a tap found (as recorded by it: nested layers pass it through),
    then settle its call from the response with ``observe``; an error is recorded and
    re-raised unchanged. Without a call (``seen`` is ``None``) just ``send()``."""
    if seen is None:
        return send()
    response = send_recorded(seen.fail, send)
    seen.observe(observe, response, what)
    return response


async def asend_seen(
    seen: Seen | None,
    send: Callable[[], Awaitable[T]],
    observe: Callable[[Seen, T], None],
    what: str,
) -> T:
    """:func:`send_seen` for a coroutine."""
    if seen is None:
        return await send()
    response = await asend_recorded(seen.fail, send)
    seen.observe(observe, response, what)
    return response


def see(
    method: str,
    scheme: str,
    host: str,
    port: int | None,
    path: str,
    query: Mapping[str, str] | None,
    content: bytes | None,
    content_type: str,
) -> Seen | None:
    """Begin the call a request makes, before it is sent; ``None`` when it is not a billed
    call to a provider endpoint (or llmspend is not installed). Raises ``BudgetExceeded``
    (nothing may be sent) when a hard budget refuses it."""
    tracker = installed_tracker()
    if tracker is None:
        return None
    if gateway_bound(scheme, host, port, path):
        return Watched(path)
    found = match(scheme, host, port, path)
    if found is None:
        return None
    ep, under = found
    body = _json(content, content_type)
    route = _route(ep, method, under, body, query)
    if route is None or not route.billed:
        return None
    call = begin_call(
        route.provider,
        route.api,
        route.model,
        payload=route.payload,
        input_tokens=route.input_upper,
        max_output_tokens=route.output_cap,
        streamed=route.streamed,
        service_tier=_dialect("openai").requested_tier(route.api, body)
        if ep.dialect == "openai"
        else None,
        request_key=lambda: b"%s %s://%s:%d%s\n%s"
        % (method.encode(), scheme.encode(), host.encode(), port or 0, path.encode(),
           content or b""),
    )  # fmt: skip
    if call is None:
        return None
    return Seen(call, route, ep.dialect)
