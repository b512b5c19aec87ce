"""The gateway's analytics routes, part of the data API (``/llmspend/api/v1``, :mod:`.api`).

    POST analytics/{function}    an :mod:`llmspend.analytics` function; the body holds its
                                 keyword arguments as tagged JSON (:mod:`llmspend.teamwire`)
    GET  history/{scope}/{name}  :func:`llmspend.budget_history` of a budget the caller sees
    GET  names                   {"orgs", "projects", "users"}: the names the caller may read

Frames answer as one Arrow IPC stream (:func:`llmspend.teamwire.pack`). Scoped by role as
``GET records`` is (:mod:`.scoping`): usage covers what the caller may read (a member's own,
an owner's what they own, an admin's everything; naming more is a 403), and budget rows
(``budget_utilization``, ``alerts_summary``, forecasts, ``aggregated_spending``'s budget
columns, the dashboard's budgets and alerts) only budgets the caller may see. A bad argument
is a 400 with the message the function raises in solo mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from .. import analytics, teamwire
from ..analytics.frames import window
from ..budgets.manage import budget_history
from ..budgets.spec import parse_key
from ..errors import GatewayRefused, LLMSpendError
from ..store.engine import Store
from ..store.models import Org, Project, User
from .roles import Roles, can_read_records, can_see_budget
from .scoping import SCOPED, budget_visible, read_scope, require

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FUNCTIONS", "AnalyticsApi"]

ARROW_STREAM = "application/vnd.apache.arrow.stream"

#: The analytics functions served, by name.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        analytics.spending_trends, analytics.cost_breakdown, analytics.usage_comparison,
        analytics.realtime_metrics, analytics.usage_report, analytics.aggregated_spending,
        analytics.budget_utilization, analytics.budget_recommendations,
        analytics.alerts_summary, analytics.dashboard_data,
    )
}  # fmt: skip
_NOT_SENT = ("store", "pricebook")  # the gateway's own
_BUDGET_COLUMNS = ("budget", "budget_period", "budget_limit_usd", "budget_spent_usd",
                   "budget_remaining_usd", "budget_percent_used", "budget_state")  # fmt: skip


def _arrow(result: Any) -> Response:
    return Response(teamwire.pack(result), media_type=ARROW_STREAM)


def _seen(roles: Roles, frame: pd.DataFrame, scope: Any = None) -> pd.DataFrame:
    """The rows of budgets the caller may see (``scope``: all rows' scope, else the
    ``scope`` column's)."""
    if roles.admin or not len(frame):
        return frame
    scopes = [scope] * len(frame) if scope is not None else list(frame["scope"])
    keep = [budget_visible(roles, s, b) for s, b in zip(scopes, frame["budget"], strict=True)]
    return frame[keep].reset_index(drop=True)


class AnalyticsApi:
    """The analytics routes over the gateway's store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- arguments ------------------------------------------------------------------------
    @staticmethod
    def _arguments(name: str, body: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
        function = FUNCTIONS.get(name)
        if function is None:
            raise GatewayRefused(
                400, f"no analytics function {name!r}; use one of: {', '.join(sorted(FUNCTIONS))}"
            )
        args = teamwire.decode(body)
        params = inspect.signature(function).parameters
        if sent := [n for n in _NOT_SENT if n in args]:
            raise GatewayRefused(400, f"{name}: {', '.join(sent)} cannot be sent to the gateway")
        spread = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not spread and (unknown := set(args) - set(params)):
            raise GatewayRefused(400, f"unknown arguments for {name}: {', '.join(sorted(unknown))}")
        return function, args

    @staticmethod
    def _split(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the org/project/user filters, the other arguments)."""
        asked = {k: args[k] for k in SCOPED if k in args}
        return asked, {k: v for k, v in args.items() if k not in SCOPED}

    # -- routes ---------------------------------------------------------------------------
    def run(self, roles: Roles, name: str, body: dict[str, Any]) -> Response:
        """``POST analytics/{name}``: the function over what the caller may read."""
        function, args = self._arguments(name, body)
        asked, rest = self._split(args)
        scoped = read_scope(roles, asked)  # usage: the default scope when none is named
        named = read_scope(roles, asked, default=False)  # budgets: filtered by visibility
        try:
            if name in ("budget_utilization", "alerts_summary"):
                result = _seen(roles, function(**rest, **named, store=self.store))
            elif name == "aggregated_spending":
                result = self._aggregated(roles, rest, scoped)
            elif name == "budget_recommendations":
                result = self._recommendations(roles, rest, scoped, named)
            elif name == "dashboard_data":
                result = self._dashboard(roles, rest, scoped, named)
            else:
                result = function(**rest, **scoped, store=self.store)
        except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
            if isinstance(exc, LLMSpendError):
                raise
            raise GatewayRefused(400, f"{name}: {exc}") from None
        return _arrow(result)

    def _aggregated(self, roles: Roles, rest: dict[str, Any], scoped: dict[str, Any]) -> Any:
        frame = analytics.aggregated_spending(**rest, **scoped, store=self.store)
        if roles.admin or not len(frame):
            return frame
        level = rest.get("level", "project")
        hidden = [b is not None and not budget_visible(roles, level, b) for b in frame["budget"]]
        for col in _BUDGET_COLUMNS:
            frame.loc[hidden, col] = float("nan") if col == "budget_percent_used" else None
        return frame

    def _recommendations(
        self, roles: Roles, rest: dict[str, Any], scoped: dict[str, Any], named: dict[str, Any]
    ) -> Any:
        import pandas as pd

        frame = analytics.budget_recommendations(**rest, **scoped, store=self.store)
        if roles.admin:
            return frame
        forecasts = frame if scoped == named else analytics.budget_recommendations(
            **rest, **named, store=self.store
        )  # fmt: skip
        forecasts = _seen(roles, forecasts[forecasts["kind"] == "forecast"])
        cheaper = frame[frame["kind"] != "forecast"]
        if not len(cheaper):
            return forecasts.reset_index(drop=True)
        if not len(forecasts):
            return cheaper.reset_index(drop=True)
        return pd.concat([forecasts, cheaper], ignore_index=True)

    def _dashboard(
        self, roles: Roles, rest: dict[str, Any], scoped: dict[str, Any], named: dict[str, Any]
    ) -> Any:
        lo, hi = window(rest.pop("since", "30d"), rest.pop("until", None))
        data = analytics.dashboard_data(lo, hi, **rest, **scoped, store=self.store)
        if roles.admin:
            return data
        if scoped != named:  # budgets and alerts as asked, then only those the caller sees
            usage = {k: rest[k] for k in ("provider", "model") if rest.get(k) is not None}
            data["budgets"] = analytics.budget_utilization(**named, store=self.store)
            data["alerts"] = analytics.alerts_summary(lo, hi, **named, **usage, store=self.store)
        data["budgets"] = _seen(roles, data["budgets"])
        data["alerts"] = _seen(roles, data["alerts"])
        return data

    def history(self, roles: Roles, scope: str, name: str) -> Response:
        """``GET history/{scope}/{name}``: the periods of a budget the caller may see."""
        key = parse_key(scope, name)
        require(roles, can_see_budget, key, "see")
        return _arrow(budget_history(self.store, key.scope, key.name))

    def names(self, roles: Roles, request: Request) -> Any:
        """``GET names``: the org, project and user names the caller may read (an admin:
        every one stored), theirs and what they own included."""
        orgs, projects, users = {roles.org}, {roles.project}, {roles.user}
        if roles.admin:
            with self.store.begin() as conn:
                for model, found in ((Org, orgs), (Project, projects), (User, users)):
                    found.update(conn.execute(select(model.name).distinct()).scalars())
        else:
            orgs.update(roles.orgs)
            projects.update(p for _, p in roles.projects)
            groups = analytics.cost_breakdown(["org", "project", "user"], store=self.store)
            for org, project, user in zip(
                groups["org"], groups["project"], groups["user"], strict=True
            ):
                if can_read_records(roles, org, project, user) is None:
                    orgs.add(org)
                    projects.add(project)
                    users.add(user)
        return {
            "orgs": sorted(n for n in orgs if n),
            "projects": sorted(n for n in projects if n),
            "users": sorted(n for n in users if n),
        }
