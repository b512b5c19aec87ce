"""What a read through the gateway covers, for the data API and the analytics routes.

One rule for ``GET records`` and the analytics routes: every org/project/user combination
asked for must be readable (:func:`.roles.can_read_records`), else a 403 naming the missing
role; with none asked for, a member reads their own usage and an owner what they own.
Budgets (and their alerts) are shown when :func:`.roles.can_see_budget` allows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..budgets.spec import BudgetKey, parse_key
from ..errors import GatewayRefused, LLMSpendError
from ..names import name_list
from .roles import Roles, can_read_records, can_see_budget

__all__ = ["SCOPED", "budget_visible", "default_scope", "read_scope", "require"]

#: The filters that decide whose usage is read.
SCOPED = ("org", "project", "user")


def default_scope(roles: Roles) -> dict[str, Any]:
    """What a non-admin reads when naming no org/project/user: an owned org, else the
    owned projects of their org, else their own records."""
    if roles.org in roles.orgs:
        return {"org": roles.org}
    mine = sorted(p for o, p in roles.projects if o == roles.org)
    if mine:
        return {"org": roles.org, "project": mine if len(mine) > 1 else mine[0]}
    return {"org": roles.org, "user": roles.user}


def read_scope(roles: Roles, filters: dict[str, Any], *, default: bool = True) -> dict[str, Any]:
    """``filters`` as the caller may read them: the default scope added when a non-admin
    names no org/project/user (``default=False``: left as asked), their own org when they
    name a project or user without one; a :class:`GatewayRefused` 403 when any combination
    asked for is not theirs to read, a ``ValidationError`` (solo mode's) for a filter that
    is not a name or a non-empty list of names."""
    filters = {k: v for k, v in filters.items() if v is not None}
    for f in SCOPED:  # bad names are solo mode's ValidationError (a 400), not a refusal
        if f in filters:  # and what is checked below is what the query reads
            names = name_list(filters[f], f) or []
            filters[f] = names[0] if len(names) == 1 and isinstance(filters[f], str) else names
    if roles.admin:
        return filters
    if not any(f in filters for f in SCOPED):
        return {**filters, **default_scope(roles)} if default else filters
    if "org" not in filters:
        filters["org"] = roles.org  # "user=bob": bob in the caller's org
    combos: list[tuple[Any, ...]] = [()]
    for wanted in (filters.get(f) for f in SCOPED):
        options: list[Any] = wanted if isinstance(wanted, list) else [wanted]
        combos = [(*c, v) for c in combos for v in options]
    for org, project, user in combos:
        missing = can_read_records(roles, org, project, user)
        if missing is not None:
            where = "/".join(p for p in (org, project, user) if p) or "every org"
            raise GatewayRefused(
                403, f"llmspend gateway: {roles.user} may not read the records of {where}:"
                f" needs {missing}", role=missing,
            )  # fmt: skip
    return filters


def budget_visible(roles: Roles, scope: Any, name: Any) -> bool:
    """Whether the caller may see the budget ``scope``/``name`` (one that cannot be parsed:
    admins only)."""
    try:
        return can_see_budget(roles, parse_key(scope, name)) is None
    except LLMSpendError:
        return roles.admin


def require(
    roles: Roles, decision: Callable[[Roles, BudgetKey], str | None], key: BudgetKey, what: str
) -> None:
    """A :class:`GatewayRefused` 403 naming the missing role unless ``decision`` allows."""
    missing = decision(roles, key)
    if missing is not None:
        raise GatewayRefused(
            403, f"llmspend gateway: {roles.user} may not {what} {key.label}: needs {missing}",
            role=missing,
        )  # fmt: skip
