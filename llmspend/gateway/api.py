"""The gateway's data API, mounted at ``/llmspend/api/v1``: budgets, records, status,
alerts and analytics, scoped by role (:mod:`.roles`, :mod:`.scoping`).

Authenticated as the proxy is (a gateway key or a JupyterHub token, in any header the SDKs
use); who is asking comes only from that credential, never from a header or the
environment. Every answer is JSON; ``GET records`` answers an Arrow IPC stream when asked
with ``Accept: application/vnd.apache.arrow.stream``.

    GET    whoami                     the caller's identity and roles
    GET    budgets                    the budgets the caller may see (webhook URLs masked)
    POST   budgets                    create or replace one: {"scope", "name", "limit", ...}
    PATCH  budgets/{scope}/{name}     change some fields
    DELETE budgets/{scope}/{name}
    GET    status                     status of the budgets the caller may see
    GET    records?since=&user=&...   records (members: their own; owners: what they own)
    GET    alerts?since=&budget=&...  alerts of the budgets the caller may see (the filters
                                      of ``llmspend.alerts()``, ``acknowledged=true|false``)
    POST   alerts/acknowledge         {"ids": [...]}: only alerts the caller may acknowledge;
                                      without ids, every unacknowledged one they may
    POST   analytics/{function}       llmspend.analytics, as Arrow (:mod:`.analytics_api`)
    GET    history/{scope}/{name}     budget_history() of a budget the caller may see
    GET    names                      the org/project/user names the caller may read

Changes go through :mod:`llmspend.budgets.manage` with ``actor=`` the caller's user, so the
audit names them. A refusal is a 403 naming the missing role; bad input a 400 with the
message (and ``type``, the error's class) the function would raise in solo mode.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..alerting.query import acknowledge, fetch_alerts
from ..budgets import manage
from ..budgets.spec import BudgetKey, mask_url, parse_key
from ..errors import BudgetError, GatewayRefused, HubDenied, LLMSpendError
from ..store.engine import Store
from ..usage import FILTERS, fetch_records
from .analytics_api import AnalyticsApi
from .config import GatewayConfig
from .hub import HubIdentities
from .keys import KEY_PREFIX, Identity, authenticate
from .proxy import STORE_DOWN, client_key, store_down
from .roles import (
    Roles,
    can_acknowledge_alert,
    can_manage_budget,
    can_see_budget,
    roles_for,
)
from .scoping import budget_visible, read_scope, require

__all__ = ["ARROW_STREAM", "data_api"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
_BUDGET_FIELDS = {
    "scope", "name", "limit", "period", "mode", "thresholds", "timezone", "week_start",
    "unpriced", "webhook_url",
}  # fmt: skip
_UPDATE_FIELDS = _BUDGET_FIELDS - {"scope", "name"}
_ALERT_FILTERS = ("org", "project", "user", "budget", "scope", "kind")


def _answer(
    status: int, message: str, role: str | None = None, kind: str | None = None
) -> JSONResponse:
    error: dict[str, Any] = {"message": message}
    if role is not None:
        error["missing_role"] = role
    if kind is not None:
        error["type"] = kind
    return JSONResponse({"error": error}, status_code=status)


def _plain(value: Any) -> Any:
    """A value as JSON holds it: Decimal and times as text, NaN/NaT as null."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


def _frame_json(frame: Any) -> list[dict[str, Any]]:
    cols = list(frame.columns)
    return [
        {c: _plain(v) for c, v in zip(cols, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


class DataApi:
    """The routes, over one store and the gateway's identities and roles."""

    def __init__(self, config: GatewayConfig, store: Store, hub: HubIdentities | None) -> None:
        self.config, self.store, self.hub = config, store, hub

    # -- who is asking --------------------------------------------------------------------
    async def caller(self, request: Request) -> Roles:
        """The caller's roles, from their credential alone (401 without a live one)."""
        key = client_key(request.headers, {})
        identity: Identity | None = None
        scopes: list[str] = []
        groups: list[str] = []
        if key and key.startswith(KEY_PREFIX):
            try:
                identity = await run_in_threadpool(authenticate, self.store, key)
            except STORE_DOWN as exc:
                raise store_down(exc) from None
        elif key and self.hub is not None:
            # The identity as the proxy takes it; the roles from the hub's model of the token
            # (HubAuth caches it): its scopes, and the user's groups.
            # TODO(hub.py): a public HubIdentities method returning the model would replace
            # the two private hops below.
            try:
                identity = await self.hub.identify(key)
                if identity is not None:
                    model = await self.hub._auth.user_for_token(key, sync=False)
                    found = model.get("groups")
                    if found is None:
                        found = await self.hub._groups(identity.user)
                    groups = [g for g in found if isinstance(g, str)]
                    scopes = [s for s in model.get("scopes") or () if isinstance(s, str)]
            except HubDenied as exc:
                raise GatewayRefused(403, str(exc)) from None
            except Exception:  # HubUnavailable, or the hub failing between the two asks
                raise GatewayRefused(503, "llmspend gateway: the hub cannot be asked") from None
        if identity is None:
            what = "gateway key or hub token" if self.hub is not None else "gateway key"
            raise GatewayRefused(401, f"llmspend gateway: invalid, expired or revoked {what}")
        return roles_for(identity, self.config.roles, hub_scopes=scopes, hub_groups=groups)

    # -- budgets ----------------------------------------------------------------------------
    def _visible(self, roles: Roles, scope: str, name: str) -> bool:
        return budget_visible(roles, scope, name)

    _check = staticmethod(require)

    def whoami(self, roles: Roles, request: Request) -> Any:
        """Who the credential is, and the roles the gateway grants it."""
        return {
            "org": roles.org, "project": roles.project, "user": roles.user,
            "admin": roles.admin, "owns": sorted(
                [*roles.orgs, *(f"{o}/{p}" for o, p in roles.projects)]
            ),
        }  # fmt: skip

    def list_budgets(self, roles: Roles, request: Request) -> Any:
        budgets = manage.list_budgets(self.store, request.query_params.get("scope"))
        return [
            {**{k: _plain(v) for k, v in asdict(b).items()}, "webhook_url": mask_url(b.webhook_url)}
            for b in budgets
            if self._visible(roles, b.scope, b.name)
        ]

    async def _body(self, request: Request) -> dict[str, Any]:
        limit, size, parts = self.config.max_request_bytes, 0, []
        async for chunk in request.stream():  # as the proxy: over max_request_bytes, a 413
            size += len(chunk)
            if size > limit:
                raise GatewayRefused(413, f"llmspend gateway: request body over {limit} bytes")
            parts.append(chunk)
        try:
            body = json.loads(b"".join(parts) or b"{}")
        except ValueError:
            raise GatewayRefused(400, "llmspend gateway: the body must be a JSON object") from None
        if not isinstance(body, dict):
            raise GatewayRefused(400, "llmspend gateway: the body must be a JSON object")
        return body

    def set_budget(self, roles: Roles, body: dict[str, Any]) -> Any:
        if unknown := set(body) - _BUDGET_FIELDS:
            raise GatewayRefused(400, f"unknown budget fields: {', '.join(sorted(unknown))}")
        if "limit" not in body:
            raise GatewayRefused(400, "a budget needs a limit")
        key = parse_key(body.get("scope"), body.get("name"))
        self._check(roles, can_manage_budget, key, "set")
        fields = {k: v for k, v in body.items() if k not in ("scope", "name", "limit", "period")}
        if isinstance(fields.get("thresholds"), list):
            fields["thresholds"] = tuple(fields["thresholds"])
        budget = manage.set_budget(
            self.store, key.scope, key.name, body["limit"], body.get("period", "month"),
            actor=roles.user, **fields,
        )  # fmt: skip
        return {k: _plain(v) for k, v in asdict(budget).items()}

    def update_budget(self, roles: Roles, scope: str, name: str, body: dict[str, Any]) -> Any:
        key = parse_key(scope, name)
        self._check(roles, can_manage_budget, key, "change")
        if unknown := set(body) - _UPDATE_FIELDS:  # as update_budget says; never its own
            raise BudgetError(  # arguments (store, scope, name, actor) from a body
                f"cannot update {', '.join(sorted(unknown))};"
                f" use: {', '.join(sorted(_UPDATE_FIELDS))}"
            )
        if isinstance(body.get("thresholds"), list):
            body["thresholds"] = tuple(body["thresholds"])
        budget = manage.update_budget(self.store, key.scope, key.name, actor=roles.user, **body)
        return {k: _plain(v) for k, v in asdict(budget).items()}

    def delete_budget(self, roles: Roles, scope: str, name: str) -> Any:
        key = parse_key(scope, name)
        self._check(roles, can_manage_budget, key, "delete")
        manage.delete_budget(self.store, key.scope, key.name, actor=roles.user)
        return {"deleted": key.label}

    def status(self, roles: Roles, request: Request) -> Any:
        return [
            {k: _plain(v) for k, v in asdict(s).items()}
            for s in manage.budget_status(self.store, request.query_params.get("scope"))
            if self._visible(roles, s.scope, s.budget)
        ]

    # -- records ----------------------------------------------------------------------------
    def records(self, roles: Roles, request: Request) -> Any:
        """The records asked for, when every org/project/user asked for may be read; with
        none asked for, a member gets their own and an owner what they own."""
        query = request.query_params
        if unknown := set(query) - {"since", "until", "columns", *FILTERS}:
            raise GatewayRefused(400, f"unknown records parameters: {', '.join(sorted(unknown))}")
        filters: dict[str, Any] = {
            f: (values if len(values) > 1 else values[0])
            for f in FILTERS
            if (values := query.getlist(f))
        }
        columns: list[str] | None = query.getlist("columns") or None
        filters = read_scope(roles, filters)
        arrow = ARROW_STREAM in request.headers.get("accept", "")
        result = fetch_records(
            self.store, query.get("since"), query.get("until"), columns=columns,
            as_="arrow" if arrow else "pandas", **filters,
        )  # fmt: skip
        if not arrow:
            return _frame_json(result)
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, result.schema) as writer:
            writer.write_table(result)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)

    # -- alerts -----------------------------------------------------------------------------
    def _alert_key(self, scope: Any, budget: Any) -> BudgetKey | None:
        try:
            return parse_key(scope, budget)
        except LLMSpendError:
            return None

    def alerts(self, roles: Roles, request: Request) -> Any:
        query = request.query_params
        if unknown := set(query) - {"since", "until", "acknowledged", *_ALERT_FILTERS}:
            raise GatewayRefused(400, f"unknown alerts parameters: {', '.join(sorted(unknown))}")
        filters: dict[str, Any] = {
            f: (values if len(values) > 1 else values[0])
            for f in _ALERT_FILTERS
            if (values := query.getlist(f))
        }
        acked = query.get("acknowledged")
        if acked is not None:
            if acked.lower() not in ("true", "false"):
                raise GatewayRefused(400, "llmspend gateway: acknowledged must be true or false")
            filters["acknowledged"] = acked.lower() == "true"
        frame = fetch_alerts(self.store, query.get("since"), query.get("until"), **filters)
        keep = [
            roles.admin or (k is not None and can_see_budget(roles, k) is None)
            for k in (
                self._alert_key(s, b) for s, b in zip(frame["scope"], frame["budget"], strict=True)
            )
        ]
        return _frame_json(frame[keep] if len(frame) else frame)

    def acknowledge(self, roles: Roles, body: dict[str, Any]) -> Any:
        ids = body.get("ids")
        if ids is None:  # every unacknowledged alert the caller may acknowledge
            frame = fetch_alerts(self.store, acknowledged=False)
            ids = [
                int(i)
                for i, s, b in zip(frame["id"], frame["scope"], frame["budget"], strict=True)
                if roles.admin
                or ((k := self._alert_key(s, b)) is not None and can_acknowledge_alert(roles, k)
                    is None)
            ]  # fmt: skip
            if not ids:
                return {"acknowledged": 0}
        elif (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        ):
            raise GatewayRefused(400, "llmspend gateway: ids must be a non-empty list of alert ids")
        frame = fetch_alerts(self.store)
        found = {
            int(i): (s, b)
            for i, s, b in zip(frame["id"], frame["scope"], frame["budget"], strict=True)
        }
        for alert_id in ids:
            # an alert of a budget the caller may not see is as unknown as a missing one:
            # a 403 would name its org and project
            if alert_id not in found or not self._visible(roles, *found[alert_id]):
                raise GatewayRefused(400, f"no alert with id {alert_id}")
            key = self._alert_key(*found[alert_id])
            missing = "admin" if key is None else can_acknowledge_alert(roles, key)
            if missing is not None and not roles.admin:
                raise GatewayRefused(
                    403, f"llmspend gateway: {roles.user} may not acknowledge alert {alert_id}:"
                    f" needs {missing}", role=missing,
                )  # fmt: skip
        return {"acknowledged": acknowledge(self.store, ids, by=roles.user)}


def _endpoint(api: DataApi, work: Callable[..., Any], *parts: str, body: bool = False) -> Any:
    """A route handler: authenticate, read the path parts (and JSON body), run ``work`` off
    the event loop, answer JSON; refusals and bad input become their JSON errors."""

    async def handle(request: Request) -> Response:
        try:
            roles = await api.caller(request)
            args: list[Any] = [request.path_params[p] for p in parts]
            if body:
                args.append(await api._body(request))
            elif not parts:
                args.append(request)
            result = await run_in_threadpool(work, roles, *args)
        except GatewayRefused as r:  # bad input (400) is a ValidationError, as in solo mode
            return _answer(
                r.status, r.message, r.role, "ValidationError" if r.status == 400 else None
            )
        except STORE_DOWN as exc:  # not the caller's bad input: a 503, no store URL in it
            down = store_down(exc)
            return _answer(down.status, down.message)
        except LLMSpendError as exc:  # BudgetError, ValidationError: what set_budget says
            return _answer(400, str(exc), kind=type(exc).__name__)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    return handle


def data_api(config: GatewayConfig, store: Store, hub: HubIdentities | None) -> Starlette:
    """The data API as an ASGI app, to mount at ``/llmspend/api/v1``."""
    api = DataApi(config, store, hub)
    analytics = AnalyticsApi(store)
    return Starlette(
        routes=[
            Route("/whoami", _endpoint(api, api.whoami), methods=["GET"]),
            Route("/budgets", _endpoint(api, api.list_budgets), methods=["GET"]),
            Route("/budgets", _endpoint(api, api.set_budget, body=True), methods=["POST"]),
            Route(
                "/budgets/{scope}/{name:path}",
                _endpoint(api, api.update_budget, "scope", "name", body=True),
                methods=["PATCH"],
            ),
            Route(
                "/budgets/{scope}/{name:path}",
                _endpoint(api, api.delete_budget, "scope", "name"),
                methods=["DELETE"],
            ),
            Route("/status", _endpoint(api, api.status), methods=["GET"]),
            Route("/records", _endpoint(api, api.records), methods=["GET"]),
            Route("/alerts", _endpoint(api, api.alerts), methods=["GET"]),
            Route(
                "/alerts/acknowledge", _endpoint(api, api.acknowledge, body=True), methods=["POST"]
            ),
            Route(
                "/analytics/{function}",
                _endpoint(api, analytics.run, "function", body=True),
                methods=["POST"],
            ),
            Route(
                "/history/{scope}/{name:path}",
                _endpoint(api, analytics.history, "scope", "name"),
                methods=["GET"],
            ),
            Route("/names", _endpoint(api, analytics.names), methods=["GET"]),
        ]
    )
