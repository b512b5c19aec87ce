"""One proxied request, through the same pipeline as a kernel's call.

    authenticate (a gateway key or a JupyterHub token → identity) → the dialect's route →
    begin_call (attribution from the identity, estimate, reservation: a refusal is answered
    here, nothing sent) →
    forward (the client's auth replaced by the provider key) → the response passed through
    chunk by chunk, a copy kept → settle from it (usage, price, the record transaction,
    alerts), as the transport taps do (:class:`llmspend.providers.http.Seen`)

Upstream requests go through one pooled ``aiohttp.ClientSession`` (its C HTTP parser;
no cookie jar, no redirects, no proxy variables, bodies passed on as the upstream encoded
them), marked :func:`~llmspend.pipeline.handled` so a transport tap installed in the same
process does not record them a second time. The store is reached through SQLAlchemy's
blocking drivers, off the event loop (a thread pool of the proxy's own, as many threads as
the store's pool keeps connections). A response with an error status
passes through unchanged (decompressed if the upstream compressed it anyway: scrubbed of
the provider key) and is recorded as an error costing 0; a client that leaves mid-stream
stops the upstream read and the call is settled as ``partial`` with what was received.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import anyio
from sqlalchemy import exc as sa_exc

from ..attribution import attribute
from ..call import Call
from ..dialects import Request, Route
from ..dialects import anthropic as anthropic_dialect
from ..dialects import gemini as gemini_dialect
from ..dialects import openai as openai_dialect
from ..errors import (
    BudgetExceeded,
    GatewayRefused,
    HubDenied,
    HubUnavailable,
    LLMSpendError,
    StoreError,
)
from ..money import nanos_to_usd
from ..pipeline import begin_call, handled, internal_error
from ..providers.http import Seen
from ..store.engine import Store
from ..store.urls import reason
from .config import GatewayConfig, Upstream
from .hub import HubIdentities
from .keys import KEY_PREFIX, Identity, KeyCache, authenticate
from .shapes import error_body, error_headers

__all__ = ["STORE_DOWN", "Proxy", "client_key", "store_down"]

log = logging.getLogger("llmspend.gateway")

T = TypeVar("T")
_DIALECTS = {"openai": openai_dialect, "gemini": gemini_dialect, "anthropic": anthropic_dialect}
Scope = MutableMapping[str, Any]
Send = Callable[[Scope], Awaitable[None]]
Receive = Callable[[], Awaitable[Scope]]  # messages: as Starlette types them

# Request headers never forwarded: the client's credentials, hop-by-hop headers, and what
# the upstream request sets itself.
_DROP_REQUEST = frozenset({
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "host", "content-length",
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization",
    "proxy-connection", "accept-encoding", "cookie",
})  # fmt: skip
_DROP_RESPONSE = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server",
})  # fmt: skip
# Headers aiohttp would add that the client did not send (a pass-through adds none).
_SKIP_AUTO = ("User-Agent", "Accept", "Content-Type")
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def client_key(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a client sent, in any of the providers' shapes: ``Authorization: Bearer``
    (OpenAI, xAI), ``api-key`` (Azure), ``x-api-key`` (Anthropic), ``x-goog-api-key`` or
    ``?key=`` (Gemini)."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "x-goog-api-key", "api-key"):
        if value := headers.get(name):
            return value.strip()
    return query.get("key") or None


#: What a store that cannot be reached raises: connecting, or a connection lost mid-query.
STORE_DOWN = (StoreError, sa_exc.OperationalError, sa_exc.InterfaceError)


def store_down(exc: BaseException) -> GatewayRefused:
    """The 503 for a store that cannot be reached (the detail is logged, never sent: it
    may name the store's host and database)."""
    log.warning("the store cannot be reached: %s", reason(exc))
    return GatewayRefused(503, "llmspend gateway: its store cannot be reached; try again later")


def _usd(nanos: int | None) -> str:
    return "" if nanos is None else str(nanos_to_usd(nanos))


async def _blocking(pool: Executor, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on one of ``pool``'s threads, in a copy of this context;
    finishes even if the request is cancelled (a settlement must not be lost to a client
    leaving). A bare executor hop (anyio's ``to_thread`` cost a third of the loop's time;
    ``run_in_executor`` inspects ``fn`` on every call)."""
    done = pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)
    with anyio.CancelScope(shield=True):  # an anyio cancel scope leaving: still waits
        # a direct Task.cancel() (a server's shutdown, a client leaving) interrupts only the
        # wait: asyncio.shield keeps wrap_future from cancelling the job still queued
        result: T = await asyncio.shield(asyncio.wrap_future(done))
    return result


class Proxy:
    """Serves ``/{upstream}/{path}`` for the upstreams of a :class:`GatewayConfig`."""

    def __init__(
        self, config: GatewayConfig, store: Store, hub: HubIdentities | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self._session: aiohttp.ClientSession | None = None
        self._key_cache = KeyCache(config.key_cache_seconds)
        # As many store hops at once as the store's pool keeps connections: more would open
        # and close an overflow connection per transaction (a new PostgreSQL backend each).
        size = getattr(getattr(store.engine, "pool", None), "size", None)
        threads = max(4, size() if callable(size) else 8)  # started when first needed
        self._db = ThreadPoolExecutor(threads, thread_name_prefix="llmspend-gateway")
        self._keys = tuple(u.key for u in config.upstreams.values() if u.key)

    # -- the upstream client ----------------------------------------------------------------
    async def open(self) -> None:
        """Open the pooled upstream client (on the running event loop)."""
        config = self.config
        # An idle upstream connection is dropped after 4 s, before the 5 s a uvicorn-served
        # upstream (vLLM, a local OpenAI-compatible server) keeps it: a request sent as the
        # server closes would be reset, and a POST is not sent again.
        connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=4.0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            # connect: waiting for a pooled connection and opening one; sock_read: between
            # two reads of the answer; no total (a stream may last as long as it sends).
            timeout=aiohttp.ClientTimeout(
                total=None, connect=config.timeout, sock_connect=config.connect_timeout,
                sock_read=config.timeout,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),  # no cookie of one user's for another's call
            auto_decompress=False,  # the body as sent, with its Content-Encoding
            trust_env=False,
            skip_auto_headers=_SKIP_AUTO,
            max_line_size=65536,
            max_field_size=65536,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Close the upstream client and its connections, and the store's threads."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        # The store's threads are not shut down: a stream still settling, or a second
        # lifespan of the same app, submits to them after this; idle, they cost nothing, and
        # the interpreter runs what is queued before it exits.

    # -- the ASGI face ----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        name, _, rest = path.lstrip("/").partition("/")
        upstream = self.config.upstreams.get(name)
        dialect = upstream.dialect if upstream is not None else "openai"
        status = 0
        try:
            if upstream is None:
                raise GatewayRefused(404, f"llmspend gateway: no upstream named {name!r}")
            status = await self._serve(scope, receive, send, upstream, "/" + rest)
        except GatewayRefused as r:
            status = r.status
            await self._answer(send, dialect, r.status, r.message, r.headers)
        log.info("%s /%s %s", scope["method"], name, status)

    async def _answer(
        self, send: Send, dialect: str, status: int, message: str, extra: dict[str, str]
    ) -> None:
        body = error_body(dialect, status, message)
        headers = {**error_headers(status), **extra, "content-length": str(len(body))}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    # -- one request ------------------------------------------------------------------------
    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, up: Upstream, rest: str
    ) -> int:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query_string = scope.get("query_string", b"").decode("latin-1")
        pairs = parse_qsl(query_string, keep_blank_values=True) if query_string else []
        query = dict(reversed(pairs))  # a repeated name: its first value
        identity = await self._identify(client_key(headers, query))
        content = await self._read_body(headers, receive)
        method: str = scope["method"]
        route = self._route(up, method, rest, content, headers, query)
        seen = None
        if route is not None and route.billed:
            call = await _blocking(self._db, self._begin, identity, route)
            seen = Seen(call, route, up.dialect)
        if "key" in query:  # a Gemini client's key, never forwarded
            query_string = urlencode([(k, v) for k, v in pairs if k != "key"])
        out = {k: v for k, v in headers.items() if k not in _DROP_REQUEST}
        out["accept-encoding"] = "identity"  # usage is read from the bytes passed through
        out.update(up.auth_headers())
        url = up.base_url + rest + ("?" + query_string if query_string else "")
        assert self._session is not None, "Proxy.open() was not awaited"
        try:
            with handled():  # recorded here: a transport tap in this process passes it by
                response = await self._session.request(
                    method, url, headers=out, data=content or None, allow_redirects=False
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            if seen is not None:
                await _blocking(self._db, seen.fail, exc)
            log.warning("upstream %s unreachable: %s", up.name, type(exc).__name__)
            raise GatewayRefused(502, f"llmspend gateway: upstream {up.name} unreachable") from None
        except BaseException as exc:  # cancelled while sending: recorded, the hold given back
            if seen is not None:
                await _blocking(self._db, seen.fail, exc)
            raise
        return await self._relay(send, receive, response, seen, up.dialect)

    async def _identify(self, key: str | None) -> Identity:
        """Who the request is: a gateway key (``lsk_``), else a JupyterHub token."""
        identity = None
        if key and key.startswith(KEY_PREFIX):
            identity = self._key_cache.get(key)
            if identity is None:
                try:
                    identity = await _blocking(self._db, authenticate, self.store, key)
                except STORE_DOWN as exc:  # fail closed, in the provider's shape
                    raise store_down(exc) from None
                if identity is not None:
                    self._key_cache.put(key, identity)
        elif key and self.hub is not None:
            try:
                identity = await self.hub.identify(key)
            except HubDenied as exc:
                raise GatewayRefused(403, str(exc)) from None
            except HubUnavailable as exc:
                log.warning("%s", exc)
                raise GatewayRefused(503, "llmspend gateway: the hub cannot be asked") from None
        if identity is None:
            what = "gateway key or hub token" if self.hub is not None else "gateway key"
            raise GatewayRefused(401, f"llmspend gateway: invalid, expired or revoked {what}")
        return identity

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        limit = self.config.max_request_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise GatewayRefused(413, f"llmspend gateway: request body over {limit} bytes")
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise GatewayRefused(400, "llmspend gateway: client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise GatewayRefused(413, f"llmspend gateway: request body over {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    @staticmethod
    def _route(
        up: Upstream,
        method: str,
        rest: str,
        content: bytes,
        headers: Mapping[str, str],
        query: Mapping[str, str],
    ) -> Route | None:
        body = None
        if content[:1] == b"{" or "json" in headers.get("content-type", ""):
            try:
                parsed = json.loads(content) if content else None
            except (ValueError, UnicodeDecodeError):
                parsed = None
            body = parsed if isinstance(parsed, dict) else None
        dialect: Any = _DIALECTS[up.dialect]
        host = _host(up.base_url)
        route: Route | None
        if up.dialect == "openai":
            url = up.base_url + rest
            route = dialect.route(
                Request(method, url, body, None, host, query), provider=up.provider
            )
            return route
        if up.dialect == "gemini" and "/models/" in rest:
            rest = "/v1/models/" + rest.split("/models/", 1)[1]
        route = dialect.route(Request(method, rest, body, None, host, query))
        if route is not None and up.provider:
            route.provider = up.provider
        return route

    @staticmethod
    def _begin(identity: Identity, route: Route) -> Call:
        """begin_call as the key's identity; a refusal or an unchecked call is answered."""
        try:
            with attribute(org=identity.org, project=identity.project, user=identity.user):
                call = begin_call(
                    route.provider, route.api, route.model, payload=route.payload,
                    input_tokens=route.input_upper, max_output_tokens=route.output_cap,
                    streamed=route.streamed,
                )  # fmt: skip
        except BudgetExceeded as exc:
            raise GatewayRefused(403, str(exc), _refusal_headers(exc)) from None
        except LLMSpendError as exc:  # the store is down and hard budgets fail closed
            raise GatewayRefused(
                503, f"llmspend gateway: budgets cannot be checked: {exc}"
            ) from None
        if call is None:  # a bug of llmspend's (logged): the gateway fails closed
            raise GatewayRefused(503, "llmspend gateway: the call could not be checked")
        return call

    # -- the response -----------------------------------------------------------------------
    async def _relay(
        self,
        send: Send,
        receive: Receive,
        response: aiohttp.ClientResponse,
        seen: Seen | None,
        dialect: str,
    ) -> int:
        status = response.status
        got = response.headers
        ctype = got.get("content-type", "")
        rid = got.get("x-request-id") or got.get("request-id")
        encoding = got.get("content-encoding", "")
        headers = [
            (k, v) for k, v in ((k.lower(), v) for k, v in response.raw_headers)
            if k not in _DROP_RESPONSE
        ]  # fmt: skip
        if status >= 400 or ("event-stream" not in ctype and not _streamed(seen)):
            try:
                body = await response.read()
            except BaseException as exc:
                response.close()  # cut or cancelled: the connection is dropped
                if seen is not None:  # recorded as an error (costs 0), the hold given back
                    await _blocking(self._db, seen.fail, exc)
                if isinstance(exc, (TimeoutError, aiohttp.ClientError)):
                    log.warning("upstream answer cut: %s", type(exc).__name__)
                    raise GatewayRefused(
                        502, "llmspend gateway: the upstream's answer was cut off"
                    ) from None
                raise
            response.release()  # read to its end: the connection goes back to the pool
            if status >= 400:
                if encoding:  # a key quoted in a compressed body could not be scrubbed
                    plain = _decompressed(body, encoding) if _decodable(encoding) else b""
                    if body and not plain:  # br, zstd, or damaged: nothing to pass on safely
                        plain = error_body(
                            dialect, status, f"llmspend gateway: the upstream answered "
                            f"{status} in an encoding it cannot read ({encoding.strip()})",
                        )  # fmt: skip
                        headers = [(k, v) for k, v in headers if k != b"content-type"]
                        headers.append((b"content-type", b"application/json"))
                    body, headers = plain, _without_encoding(headers)
                body = self._scrub(body)
                if seen is not None:
                    error = aiohttp.ClientResponseError(
                        response.request_info, response.history, status=status,
                        message=f"upstream status {status}",
                    )  # fmt: skip
                    await _blocking(self._db, seen.finish_status, error)
            elif seen is not None:
                await _blocking(
                    self._db, seen.finish_body, _decompressed(body, encoding), ctype, rid
                )
            headers += _encoded(_cost_headers(seen))
            headers.append((b"content-length", str(len(body)).encode()))
            await _start(send, status, headers)
            await send({"type": "http.response.body", "body": body})
            return status
        return await self._stream(send, receive, response, seen, headers, ctype, rid, encoding)

    async def _stream(
        self,
        send: Send,
        receive: Receive,
        response: aiohttp.ClientResponse,
        seen: Seen | None,
        headers: list[tuple[bytes, bytes]],
        ctype: str,
        rid: str | None,
        encoding: str,
    ) -> int:
        """Pass a streamed body through chunk by chunk, keeping a copy for its usage."""
        kept: list[bytes] = []
        ended = settled = False
        if seen is not None and seen.call.estimate_nanos is not None:
            headers.append((b"x-llmspend-estimate-usd", _usd(seen.call.estimate_nanos).encode()))
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                await _start(send, response.status, headers)
                try:
                    async for chunk in response.content.iter_any():
                        kept.append(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except (TimeoutError, aiohttp.ClientError) as exc:
                    # Cut upstream: a warning, not a traceback; the client's answer is left
                    # unfinished (uvicorn drops the connection), so its SDK sees the cut too.
                    log.warning("upstream stream cut: %s", type(exc).__name__)
                    tg.cancel_scope.cancel()
                    return response.status  # settled as partial below
                ended = True
                if seen is not None:  # the row is committed before the client sees the end
                    settled = True
                    body = _decompressed(b"".join(kept), encoding)
                    await _blocking(self._db, seen.finish_body, body, ctype, rid)
                await send({"type": "http.response.body", "body": b""})
                tg.cancel_scope.cancel()
        finally:
            if ended:
                response.release()  # the connection goes back to the pool
            else:
                response.close()  # cut: the connection is dropped
            if seen is not None and not settled:  # cut: the client left, or upstream failed
                body = _decompressed(b"".join(kept), encoding)
                await _blocking(self._db, seen.finish_body, body, ctype, rid, ended=ended)
        return response.status

    def _scrub(self, body: bytes) -> bytes:
        """An upstream error may quote the key it was sent: never pass a provider key on."""
        for key in self._keys:
            if key.encode() in body:
                body = body.replace(key.encode(), b"[redacted]")
        return body


@functools.lru_cache(maxsize=64)
def _host(base_url: str) -> str:
    """An upstream's host (parsed once, not per request)."""
    return urlsplit(base_url).hostname or ""


def _decompressed(body: bytes, encoding: str) -> bytes:
    """``body`` decoded per its ``Content-Encoding`` when it is gzip or deflate (the copy
    usage is read from; the client gets the bytes as sent), as much as decodes of a body
    cut short; any other encoding: as it is (usage estimated)."""
    name = encoding.strip().lower()
    wbits = _WBITS.get(name)
    if not body or wbits is None:
        return body
    try:
        return zlib.decompressobj(wbits).decompress(body)
    except zlib.error:
        if name == "deflate":  # raw deflate, as some servers send it
            try:
                return zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
            except zlib.error:
                pass
        return b""


def _decodable(encoding: str) -> bool:
    """Whether :func:`_decompressed` can read a body of this ``Content-Encoding``."""
    return encoding.strip().lower() in _WBITS


def _without_encoding(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k != b"content-encoding"]


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def _streamed(seen: Seen | None) -> bool:
    return seen is not None and seen.call.streamed


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})


def _cost_headers(seen: Seen | None) -> list[tuple[str, str]]:
    """The call's cost and budget state, for a team-mode kernel to show."""
    if seen is None:
        return []
    call = seen.call
    out = []
    if call.estimate_nanos is not None:  # estimated only when a budget applies
        out.append(("x-llmspend-estimate-usd", _usd(call.estimate_nanos)))
    row = call.row
    if row is not None:
        out.append(("x-llmspend-cost-usd", _usd(row.get("cost_nanos"))))
        out.append(("x-llmspend-price-status", str(row.get("price_status", ""))))
    try:
        crossed = [st.budget.name for st in call.settled or ()]
    except Exception as exc:  # headers are informative: never fail the answer for them
        internal_error("name the budgets a call brought past a threshold", exc)
        crossed = []
    out.append(("x-llmspend-budget-state", "warning" if crossed else "ok"))
    if crossed:
        out.append(("x-llmspend-budget-thresholds", ",".join(crossed)))
    return out


def _refusal_headers(exc: BudgetExceeded) -> dict[str, str]:
    headers = {
        "x-llmspend-budget-state": "exceeded",
        "x-llmspend-budget": exc.budget,
        "x-llmspend-budget-scope": exc.scope,
        "x-llmspend-budget-period": exc.period,
        "x-llmspend-budget-limit-usd": str(exc.limit),
        "x-llmspend-budget-spent-usd": str(exc.spent),
        "x-llmspend-budget-reserved-usd": str(exc.reserved),
    }
    if exc.estimate is not None:
        headers["x-llmspend-estimate-usd"] = str(exc.estimate)
    if exc.resets_at is not None:
        headers["x-llmspend-budget-resets-at"] = exc.resets_at.isoformat()
    return headers
