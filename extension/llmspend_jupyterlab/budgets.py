"""What the ``/llmspend/budgets`` route answers and does, through llmspend's public API.

Blocking Python (the handlers run it in a worker thread). A body that is not the expected
shape is a :class:`BadRequest`; the values themselves are judged by the library
(``llmspend.set_budget`` / ``update_budget`` / ``delete_budget``), whose ``BudgetError``
message the route returns as a ``400``. Money goes out as exact decimal strings,
thresholds as decimal strings of fractions (``"0.8"``). A webhook URL is only ever shown
masked (``https://host/***``, as the library returns it), and only to those who may
manage budgets. In team mode the gateway answers only the budgets the caller may see, and
the context is the identity the gateway takes from the server's credential. Each budget
says whether the caller may change it (``can_change``): all of them in solo mode when the
caller may manage; in team mode those the gateway's rule grants the roles its ``whoami``
names (an admin: all; an owner: within what they own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import llmspend
from llmspend import BudgetError, teamclient
from llmspend.budgets.spec import parse_key
from llmspend.gateway.roles import Roles, can_manage_budget

from .payloads import Context, current_context, usd

if TYPE_CHECKING:
    from llmspend import Budget

__all__ = [
    "BadRequest",
    "Grants",
    "NotFound",
    "budgets_payload",
    "create_budget",
    "delete_budget",
    "update_budget",
]

#: Fields a budget is created with (besides scope and name), and which may be changed.
FIELDS = ("limit", "period", "mode", "thresholds", "timezone", "week_start", "unpriced",
          "webhook_url")  # fmt: skip


class BadRequest(ValueError):
    """The request's body or arguments are not the expected shape (a ``400``)."""


class NotFound(LookupError):
    """No such budget (a ``404``)."""


@dataclass(frozen=True, slots=True)
class Grants:
    """Which budgets the caller may change: every one (``everything``), those the
    gateway's roles allow (``roles``, team mode), or none (the default)."""

    everything: bool = False
    roles: Roles | None = None

    @classmethod
    def from_whoami(cls, me: Mapping[str, Any]) -> Grants:
        """The roles a gateway's ``whoami`` answer names (``owns``: ``org`` or
        ``org/project`` names)."""
        owns = [o for o in me.get("owns") or () if isinstance(o, str)]
        projects = [(org, project) for org, _, project in (o.partition("/") for o in owns)]
        roles = Roles(
            org=str(me.get("org") or ""),
            project=str(me.get("project") or ""),
            user=str(me.get("user") or ""),
            admin=me.get("admin") is True,
            orgs=frozenset(o for o in owns if "/" not in o),
            projects=frozenset((o, p) for o, p in projects if p and "/" not in p),
        )
        return cls(roles=roles)

    @property
    def any(self) -> bool:
        """Whether the caller may change some budget (the panel then shows its form)."""
        r = self.roles
        return self.everything or (r is not None and bool(r.admin or r.orgs or r.projects))

    def allows(self, scope: str, name: str) -> bool:
        """Whether the caller may change (or create, or delete) the budget ``scope name``."""
        if self.everything or self.roles is None:
            return self.everything
        try:
            key = parse_key(scope, name)
        except BudgetError:
            return False
        return can_manage_budget(self.roles, key) is None


def budget_json(b: Budget, *, show_webhook: bool, can_change: bool = False) -> dict[str, Any]:
    """A budget's definition as JSON."""
    return {
        "scope": b.scope,
        "name": b.name,
        "limit_usd": usd(b.limit_usd),
        "period": b.period,
        "mode": b.mode,
        "thresholds": [format(t, "f") for t in b.thresholds],
        "timezone": b.timezone,
        "week_start": b.week_start,
        "unpriced": b.unpriced_policy,
        "webhook_url": b.webhook_url if show_webhook else None,
        "has_webhook": b.webhook_url is not None,
        "is_default": b.is_default,
        "inherited": b.inherited,
        "updated_at": b.updated_at.isoformat(),
        "can_change": can_change,
    }


def _visible(ctx: Context, can_manage: bool) -> list[Budget]:
    """Every budget for a manager; otherwise those that apply to ``ctx`` (org first)."""
    every = llmspend.list_budgets()
    if can_manage or teamclient.active():  # the gateway answers what the caller may see
        return sorted(every, key=lambda b: (("org", "project", "user").index(b.scope), b.name))
    by_key = {(b.scope, b.name): b for b in every if not b.is_default}
    return [by_key[key] for key in ctx.budget_keys() if key in by_key]


def budgets_payload(grants: Grants) -> dict[str, Any]:
    """``GET /llmspend/budgets``: the budgets the caller may see, whether they may change
    some (``can_manage``) and which (each budget's ``can_change``)."""
    ctx = current_context()
    can_manage = grants.any
    return {
        "context": ctx.to_json(),
        "can_manage": can_manage,
        "budgets": [
            budget_json(b, show_webhook=can_manage, can_change=grants.allows(b.scope, b.name))
            for b in _visible(ctx, can_manage)
        ],
    }


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    scope, name = body.get("scope"), body.get("name")
    if not isinstance(scope, str) or not isinstance(name, str) or not scope or not name:
        raise BadRequest('say which budget: "scope" and "name" are required strings')
    return scope, name.strip()


def _exists(scope: str, name: str) -> bool:
    return any(b.scope == scope and b.name == name for b in llmspend.list_budgets())


def _changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The budget fields of ``body``, shape-checked; ``""`` or ``null`` as the webhook URL
    means none."""
    unknown = sorted(set(body) - {"scope", "name", *FIELDS})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; use: scope, name, {', '.join(FIELDS)}")
    out = {k: body[k] for k in FIELDS if k in body}
    if "limit" in out and (
        isinstance(out["limit"], bool) or not isinstance(out["limit"], (str, int, float))
    ):
        raise BadRequest("limit must be an amount of USD as a string (or a number)")
    if "thresholds" in out and not isinstance(out["thresholds"], list):
        raise BadRequest('thresholds must be a list of fractions, e.g. ["0.5", "0.8", "1"]')
    for field in ("period", "mode", "timezone", "unpriced"):
        if field in out and not isinstance(out[field], str):
            raise BadRequest(f"{field} must be a string")
    if "webhook_url" in out:
        url = out["webhook_url"]
        if url is not None and not isinstance(url, str):
            raise BadRequest("webhook_url must be a string or null")
        out["webhook_url"] = (url or "").strip() or None
    return out


def create_budget(body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /llmspend/budgets``: a new budget (an existing one is a ``BadRequest``:
    change it with ``PATCH``)."""
    scope, name = _key(body)
    fields = _changes(body)
    if "limit" not in fields:
        raise BadRequest('limit is required (an amount of USD, e.g. "100")')
    if _exists(scope, name):
        raise BadRequest(f"the {scope} budget {name} already exists; edit it instead")
    budget = llmspend.set_budget(scope, name, fields.pop("limit"), **fields)
    return {"budget": budget_json(budget, show_webhook=True, can_change=True)}


def update_budget(body: Mapping[str, Any]) -> dict[str, Any]:
    """``PATCH /llmspend/budgets``: change the given fields of an existing budget."""
    scope, name = _key(body)
    changes = _changes(body)
    if not changes:
        raise BadRequest(f"nothing to change; give one of: {', '.join(FIELDS)}")
    if not _exists(scope, name):
        raise NotFound(f"no {scope} budget {name}")
    budget = llmspend.update_budget(scope, name, **changes)
    return {"budget": budget_json(budget, show_webhook=True, can_change=True)}


def delete_budget(scope: str, name: str) -> dict[str, Any]:
    """``DELETE /llmspend/budgets?scope=...&name=...``."""
    if not _exists(scope, name):
        raise NotFound(f"no {scope} budget {name}")
    llmspend.delete_budget(scope, name)
    return {"deleted": {"scope": scope, "name": name}}
