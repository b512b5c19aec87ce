"""The gateway's ASGI app (Starlette) and ``serve`` (uvicorn).

Routes: ``GET /health`` (unauthenticated, says only that it is up), the data API under
``/llmspend/api/v1/`` (:mod:`.api`) and ``/{upstream}/...`` for every upstream of the
configuration (:mod:`.proxy`); a proxied request goes to the proxy straight, past
Starlette's routing and middleware (loop time per call a pass-through does not use). The
app holds one :class:`~llmspend.tracker.Tracker` (the store, the price book, the budget
stages, installed as the pipeline's) and the proxy's pooled upstream client (aiohttp,
opened and closed with the app). Nothing else is kept between requests: any number of
replicas can share one store.

Logging: one line per request (method, upstream, status; never a query string or a
header), uvicorn's access log off (a Gemini client may send its key as ``?key=``).
uvicorn runs on uvloop and httptools when they are installed (the gateway extra has them).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..alerting import WebhookPolicy
from ..config import Settings
from ..store.engine import open_store
from ..tracker import Tracker, set_tracker
from .api import data_api
from .config import GatewayConfig
from .hub import HubIdentities
from .proxy import Proxy

__all__ = ["build_app", "serve", "warn_keyless"]

log = logging.getLogger("llmspend.gateway")
_PING_IDLE_SECONDS = 10.0
_API = "/llmspend/api/v1/"


class _Gateway:
    """``/{upstream}/...`` to the proxy; everything else (``/health``, the data API, the
    lifespan) to the Starlette app, which routes a proxied path the same way."""

    __slots__ = ("app", "proxy")

    def __init__(self, app: Starlette, proxy: Proxy) -> None:
        self.app = app
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.find("/", 1) > 0 and not path.startswith(_API):
                await self.proxy(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "server": "llmspend-gateway"})


def build_app(config: GatewayConfig, database_url: str | None = None) -> ASGIApp:
    """The gateway for ``config``, recording into the store at ``database_url`` (default:
    ``LLMSPEND_DATABASE_URL`` or the per-user SQLite file)."""
    # Connections a busy gateway used within seconds are not pinged on every checkout.
    url = Settings.resolve(database_url, None).database_url
    open_store(url, ping_idle=_PING_IDLE_SECONDS)
    tracker = Tracker(url)
    # Budgets' webhooks are fired here, never by kernels in team mode; allow-list: [webhooks].
    tracker.alerts.webhooks = WebhookPolicy(budget_webhooks=True, allow=config.webhook_allow)
    hub = None
    if config.hub is not None:  # groups that grant roles never name an org and project
        role_groups = config.roles.admin_groups | frozenset(config.roles.group_owners)
        hub = HubIdentities(config.hub, role_groups=role_groups)
    proxy = Proxy(config, tracker.store, hub)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        set_tracker(tracker, installed=True)  # begin_call records into it
        await proxy.open()
        try:
            yield
        finally:
            await proxy.aclose()
            set_tracker(None)

    app = Starlette(
        routes=[
            Route("/health", _health, methods=["GET"]),
            Mount(_API.rstrip("/"), app=data_api(config, tracker.store, hub)),
            Route("/{upstream}/{rest:path}", proxy),
        ],
        lifespan=lifespan,
    )
    return _Gateway(app, proxy)


def warn_keyless(config: GatewayConfig) -> list[str]:
    """Log a warning for each upstream whose ``key_env`` names a variable that is unset or
    empty (its requests go upstream with no provider key, so the provider refuses them);
    returns their names."""
    keyless = [u.name for u in config.upstreams.values() if u.key_env and not u.key]
    for name in keyless:
        up = config.upstreams[name]
        log.warning(
            "upstream %s: %s is not set; its requests go to %s without a provider key",
            name, up.key_env, up.base_url,
        )  # fmt: skip
    return keyless


def serve(
    config: GatewayConfig,
    host: str = "127.0.0.1",
    port: int = 8780,
    database_url: str | None = None,
) -> None:
    """Run the gateway in the foreground until stopped (SIGINT or SIGTERM)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_app(config, database_url)
    names = ", ".join(f"/{u.name} → {u.base_url}" for u in config.upstreams.values())
    log.info("llmspend gateway on http://%s:%d (%s)", host, port, names)
    warn_keyless(config)
    uvicorn.run(
        app, host=host, port=port, access_log=False, log_level="info", lifespan="on",
        timeout_keep_alive=math.ceil(config.keepalive_timeout),
    )  # fmt: skip
