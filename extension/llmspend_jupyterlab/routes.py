"""The Jupyter server routes under ``{base_url}/llmspend/``.

=======  ===========================  ================================================
GET      ``status``                   budgets of the user's context, today's spend
GET      ``summary``                  today's and this period's spend, calls, top model
GET      ``alerts``                   recent alerts of those budgets, newest first
POST     ``alerts/acknowledge``       ``{"ids": [...]}``: acknowledge alerts
=======  ===========================  ================================================

Every verb requires Jupyter authentication (``@tornado.web.authenticated``); the POST is
also XSRF-protected by ``APIHandler``. Acknowledging is the only write: the rest reads
the store the kernels write (blocking llmspend calls run in a worker thread, off the
server's event loop). Payloads are described in :mod:`llmspend_jupyterlab.payloads`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from llmspend import ConfigError, LLMSpendError, StoreError

from . import payloads

__all__ = ["HANDLERS", "NAMESPACE", "setup_route_handlers"]

NAMESPACE = "llmspend"
MAX_ALERTS = 200


class _LLMSpendHandler(APIHandler):
    """Runs a payload function in a thread and answers JSON.

    A store that cannot be opened or reached (or is misconfigured) is a ``503``; bad
    arguments (``ValidationError``, ``BudgetError``, an unknown time zone) are a ``400``;
    both carry the error's text as the JSON ``message``.
    """

    async def respond(self, compute: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> None:
        try:
            payload = await asyncio.to_thread(compute, *args, **kw)
        except (StoreError, ConfigError) as exc:  # the server's store, not the request
            raise tornado.web.HTTPError(503, str(exc)) from exc
        except (LLMSpendError, ValueError) as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def timezone_argument(self) -> str | None:
        return self.get_query_argument("tz", None) or None


class StatusHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(payloads.status_payload, self.timezone_argument())


class SummaryHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.respond(payloads.summary_payload, self.timezone_argument())


class AlertsHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        raw_limit = self.get_query_argument("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_ALERTS:
            raise tornado.web.HTTPError(400, f"limit must be an integer in 1..{MAX_ALERTS}")
        raw_ack = self.get_query_argument("acknowledged", None)
        if raw_ack not in (None, "true", "false"):
            raise tornado.web.HTTPError(400, "acknowledged must be 'true' or 'false'")
        await self.respond(
            payloads.alerts_payload,
            since=self.get_query_argument("since", None) or None,
            limit=int(raw_limit),
            acknowledged=None if raw_ack is None else raw_ack == "true",
        )


class AcknowledgeHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the body must be JSON") from None
        ids = body.get("ids") if isinstance(body, dict) else None
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise tornado.web.HTTPError(400, 'the body must be {"ids": [alert id, ...]}')
        await self.respond(payloads.acknowledge_payload, ids)


# (path under /llmspend/, handler): the single list the server registers and the tests walk.
HANDLERS: list[tuple[str, type[APIHandler]]] = [
    ("status", StatusHandler),
    ("summary", SummaryHandler),
    ("alerts", AlertsHandler),
    ("alerts/acknowledge", AcknowledgeHandler),
]


def setup_route_handlers(web_app: Any) -> None:
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base_url, NAMESPACE, path), cls) for path, cls in HANDLERS]
    )
