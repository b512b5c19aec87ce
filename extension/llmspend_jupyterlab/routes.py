"""The Jupyter server routes under ``{base_url}/llmspend/``.

=======  ===========================  ================================================
GET      ``status``                   budgets of the user's context, today's spend
GET      ``summary``                  today's and this period's spend, calls, top model
GET      ``alerts``                   recent alerts of those budgets, newest first
POST     ``alerts/acknowledge``       ``{"ids": [...]}``: acknowledge alerts of those budgets
GET      ``budgets``                  the budgets the caller may see, and ``can_manage``
POST     ``budgets``                  ``{"scope", "name", "limit", ...}``: create a budget
PATCH    ``budgets``                  ``{"scope", "name", <fields to change>}``
DELETE   ``budgets?scope=&name=``     delete a budget
=======  ===========================  ================================================

Every verb requires Jupyter authentication (``@tornado.web.authenticated``) and then
jupyter_server's authorizer (``@authorized``) for the resource ``llmspend`` (the action
follows the HTTP verb: ``GET`` is ``read``, the rest ``write``); the writes are also
XSRF-protected by ``APIHandler``. Changing budgets also needs ``can_manage``: not
``LLMSpendLab.read_only`` and the authorizer granting ``write`` on ``llmspend``; otherwise
``403``. Blocking llmspend calls run in a worker thread, off the server's event loop.
Payloads are described in :mod:`llmspend_jupyterlab.payloads` and
:mod:`llmspend_jupyterlab.budgets`.

Team mode: with ``LLMSPEND_GATEWAY_URL`` and a credential (``LLMSPEND_GATEWAY_KEY`` or
``JUPYTERHUB_API_TOKEN``) in the server's environment, llmspend's public functions read and
write through the gateway (:mod:`llmspend.teamclient`), scoped by the role the gateway
grants that credential. ``can_manage`` then also needs the gateway's ``whoami`` to name an
admin or an owner, each listed budget's ``can_change`` says whether those roles may change
it, and a change the gateway refuses is its ``403`` (with its message).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import tornado.web
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from llmspend import ConfigError, LLMSpendError, PermissionDenied, StoreError, teamclient

from . import budgets, payloads
from .config import LLMSpendLab

__all__ = ["AUTH_RESOURCE", "HANDLERS", "NAMESPACE", "SETTINGS_KEY", "setup_route_handlers"]

NAMESPACE = "llmspend"
#: The resource name the routes ask jupyter_server's authorizer about.
AUTH_RESOURCE = "llmspend"
#: Where the server's :class:`LLMSpendLab` settings live in ``web_app.settings``.
SETTINGS_KEY = "llmspend_lab"
MAX_ALERTS = 200


class _LLMSpendHandler(APIHandler):
    """Runs a payload function in a thread and answers JSON.

    A store that cannot be opened or reached (or is misconfigured) is a ``503``; bad
    arguments (``ValidationError``, ``BudgetError``, an unknown time zone) are a ``400``;
    both carry the error's text as the JSON ``message``; an unknown budget is a ``404``;
    a refusal by the gateway (team mode) is a ``403``.
    """

    auth_resource = AUTH_RESOURCE

    async def respond(self, compute: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> None:
        try:
            payload = await asyncio.to_thread(compute, *args, **kw)
        except PermissionDenied as exc:  # the gateway's refusal (team mode)
            raise tornado.web.HTTPError(403, str(exc)) from exc
        except (StoreError, ConfigError) as exc:  # the server's store, not the request
            raise tornado.web.HTTPError(503, str(exc)) from exc
        except budgets.NotFound as exc:
            raise tornado.web.HTTPError(404, str(exc)) from exc
        except (LLMSpendError, ValueError) as exc:
            raise tornado.web.HTTPError(400, str(exc)) from exc
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"message", "reason"}`` as ``APIHandler`` writes it, but the message as
        given: tornado keeps a message raised without arguments with each ``%`` doubled
        (for its log), which ``APIHandler`` would send as is (``80 %%``)."""
        exc = (kwargs.get("exc_info") or (None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.log_message % exc.args, "reason": exc.reason}))
            return
        super().write_error(status_code, **kwargs)

    def timezone_argument(self) -> str | None:
        return self.get_query_argument("tz", None) or None

    def json_body(self) -> dict[str, Any]:
        """The request's JSON object (else a ``400``)."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "the body must be a JSON object")
        return body

    @property
    def lab_settings(self) -> LLMSpendLab:
        found = self.settings.get(SETTINGS_KEY)
        return found if isinstance(found, LLMSpendLab) else LLMSpendLab()

    async def may_write(self) -> bool:
        """Not read-only, and the authorizer grants ``write`` on ``llmspend``."""
        if self.lab_settings.read_only:
            return False
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "write", AUTH_RESOURCE)
        )
        return bool(allowed)

    async def grants(self) -> budgets.Grants:
        """Which budgets the caller may change: none when the server is read-only or its
        authorizer refuses ``write`` on ``llmspend``; otherwise all in solo mode, and in
        team mode those the gateway's ``whoami`` roles allow (none if it cannot say)."""
        if not await self.may_write():
            return budgets.Grants()
        gateway = teamclient.client()
        if gateway is None:
            return budgets.Grants(everything=True)
        try:
            me = await asyncio.to_thread(gateway.whoami)
        except LLMSpendError:
            return budgets.Grants()
        return budgets.Grants.from_whoami(me)

    async def can_manage(self) -> bool:
        """Whether the caller may change some budget (see :meth:`grants`)."""
        return (await self.grants()).any

    async def require_manage(self) -> None:
        # In team mode the gateway decides each change (its 403 is passed on as a 403).
        allowed = await self.may_write() if teamclient.active() else await self.can_manage()
        if not allowed:
            raise tornado.web.HTTPError(403, "budgets are read-only here: you may not change them")


class StatusHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.respond(payloads.status_payload, self.timezone_argument())


class SummaryHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.respond(payloads.summary_payload, self.timezone_argument())


class AlertsHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    @authorized
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
    @authorized
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


class BudgetsHandler(_LLMSpendHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        await self.respond(budgets.budgets_payload, await self.grants())

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        await self.require_manage()
        body = self.json_body()
        await self.respond(budgets.create_budget, body)

    @tornado.web.authenticated
    @authorized
    async def patch(self) -> None:
        await self.require_manage()
        body = self.json_body()
        await self.respond(budgets.update_budget, body)

    @tornado.web.authenticated
    @authorized
    async def delete(self) -> None:
        await self.require_manage()
        scope = self.get_query_argument("scope", "")
        name = self.get_query_argument("name", "")
        if not scope or not name:
            raise tornado.web.HTTPError(400, "say which budget: ?scope=...&name=...")
        await self.respond(budgets.delete_budget, scope, name)


# (path under /llmspend/, handler): the single list the server registers and the tests walk.
HANDLERS: list[tuple[str, type[APIHandler]]] = [
    ("status", StatusHandler),
    ("summary", SummaryHandler),
    ("alerts", AlertsHandler),
    ("alerts/acknowledge", AcknowledgeHandler),
    ("budgets", BudgetsHandler),
]


def setup_route_handlers(web_app: Any, settings: LLMSpendLab | None = None) -> None:
    """Register the routes; ``settings`` (default: all defaults) is what they obey."""
    web_app.settings[SETTINGS_KEY] = settings or LLMSpendLab()
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$", [(url_path_join(base_url, NAMESPACE, path), cls) for path, cls in HANDLERS]
    )
