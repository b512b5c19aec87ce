"""Who may see and change what through the gateway: roles and the decisions over them.

Three roles (docs/team.md, "Roles"):

- ``admin``: everything.
- ``owner`` of an org (``"acme"``) or a project (``"acme/churn"``): the budgets, webhooks,
  records and alerts within it.
- ``member`` (everyone with an identity): their own records (their user in their org), the
  status of the budgets that apply to them and the alerts of those budgets.

Roles are granted in the gateway's configuration and, for JupyterHub identities, by a hub
scope (default ``custom:llmspend:admin``) or a group mapped to what it owns:

```toml
[roles]
admins = ["root"]                        # user names
admin_groups = ["llmspend-admins"]       # hub groups whose users are admins
admin_scope = "custom:llmspend:admin"    # a hub token with this scope is an admin

[roles.owners]                           # org or org/project = user names
"acme" = ["bob"]
"acme/churn" = ["carol"]

[roles.group_owners]                     # hub group = what its users own
"acme-leads" = ["acme"]
```

A user name is the identity's user (a key's ``--user``, a hub user's name), and an owner
grant covers that user in the owned org only; nothing else (a header, the environment)
grants a role. This module is pure: decisions are functions of
a :class:`Roles` and plain names, each of which returns ``None`` when allowed and the
missing role, as a phrase, when refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..attribution import validate_name
from ..budgets.spec import BudgetKey
from ..errors import ConfigError, ValidationError
from .keys import Identity

__all__ = [
    "DEFAULT_ADMIN_SCOPE",
    "RoleConfig",
    "Roles",
    "can_acknowledge_alert",
    "can_manage_budget",
    "can_read_records",
    "can_see_budget",
    "parse_roles",
    "roles_for",
]

DEFAULT_ADMIN_SCOPE = "custom:llmspend:admin"
_Owned = tuple[str, str | None]  # (org, None) for an org, (org, project) for a project


@dataclass(frozen=True, slots=True)
class RoleConfig:
    """The ``[roles]`` table of the gateway's configuration."""

    admins: frozenset[str] = frozenset()
    owners: dict[_Owned, frozenset[str]] = field(default_factory=dict)
    admin_scope: str = DEFAULT_ADMIN_SCOPE
    admin_groups: frozenset[str] = frozenset()
    group_owners: dict[str, tuple[_Owned, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Roles:
    """One identity's roles: who it is, whether it is an admin, what it owns."""

    org: str
    project: str
    user: str
    admin: bool = False
    orgs: frozenset[str] = frozenset()
    projects: frozenset[tuple[str, str]] = frozenset()

    def owns(self, org: str, project: str | None = None) -> bool:
        """Whether these roles own ``org`` (or ``org/project``, which an org owner owns)."""
        return org in self.orgs or (project is not None and (org, project) in self.projects)


def _owned(where: str, text: Any) -> _Owned:
    if not isinstance(text, str):
        raise ConfigError(f"gateway config: {where}: {text!r} must be 'org' or 'org/project'")
    parts = text.split("/")
    try:
        if len(parts) == 1:
            return validate_name("org", parts[0]), None
        if len(parts) == 2:
            return validate_name("org", parts[0]), validate_name("project", parts[1])
    except ValidationError as exc:
        raise ConfigError(f"gateway config: {where}: {exc}") from None
    raise ConfigError(f"gateway config: {where}: {text!r} must be 'org' or 'org/project'")


def _names(where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"gateway config: {where} must be a list of names")
    return frozenset(value)


def parse_roles(spec: Any) -> RoleConfig:
    """The ``[roles]`` table (``None``: no roles granted) as a :class:`RoleConfig`."""
    if spec is None:
        return RoleConfig()
    if not isinstance(spec, dict):
        raise ConfigError("gateway config: [roles] must be a table")
    known = {"admins", "owners", "admin_scope", "admin_groups", "group_owners"}
    if unknown := set(spec) - known:
        raise ConfigError(f"gateway config: unknown keys in [roles]: {sorted(unknown)}")
    owners, group_owners = spec.get("owners", {}), spec.get("group_owners", {})
    if not isinstance(owners, dict) or not isinstance(group_owners, dict):
        raise ConfigError("gateway config: [roles.owners] and [roles.group_owners] are tables")
    scope = spec.get("admin_scope", DEFAULT_ADMIN_SCOPE)
    if not isinstance(scope, str) or not scope:
        raise ConfigError("gateway config: [roles] admin_scope must be a scope name")
    grants: dict[_Owned, frozenset[str]] = {}
    for where, users in owners.items():
        owned = _owned("[roles.owners]", where)
        grants[owned] = grants.get(owned, frozenset()) | _names(f"[roles.owners] {where!r}", users)
    return RoleConfig(
        admins=_names("[roles] admins", spec.get("admins", [])),
        owners=grants,
        admin_scope=scope,
        admin_groups=_names("[roles] admin_groups", spec.get("admin_groups", [])),
        group_owners={
            group: tuple(_owned(f"[roles.group_owners] {group!r}", w) for w in owned)
            for group, owned in group_owners.items()
            if _names(f"[roles.group_owners] {group!r}", owned)
        },
    )


def roles_for(
    identity: Identity,
    config: RoleConfig,
    *,
    hub_scopes: Iterable[str] = (),
    hub_groups: Iterable[str] = (),
) -> Roles:
    """The roles of ``identity`` under ``config`` (``hub_scopes``/``hub_groups``: what the
    hub said of a hub identity's token and user; nothing for a gateway key).

    A ``[roles.owners]`` grant names users of the org it grants: ``"acme/churn" = ["ana"]``
    covers ana of acme, not a key made for an ``ana`` of another org (users are per org, as
    in budgets and records). Admins are matched by name in any org; a hub group's grant is
    the hub's word on that hub user."""
    groups = set(hub_groups)
    owned = {
        w for w, users in config.owners.items() if identity.user in users and w[0] == identity.org
    }
    for group in groups:
        owned.update(config.group_owners.get(group, ()))
    return Roles(
        org=identity.org,
        project=identity.project,
        user=identity.user,
        admin=(
            identity.user in config.admins
            or config.admin_scope in set(hub_scopes)
            or bool(groups & config.admin_groups)
        ),
        orgs=frozenset(org for org, project in owned if project is None),
        projects=frozenset((org, project) for org, project in owned if project is not None),
    )


def _owner_of(org: str, project: str | None) -> str:
    where = org if project is None else f"{org}/{project}"
    return f"owner of {where} or admin"


def can_read_records(
    roles: Roles, org: str | None, project: str | None, user: str | None
) -> str | None:
    """Records of ``org``/``project``/``user`` (``None``: any): an admin's; within an owned
    org or project; a member's own (their user in their org)."""
    if roles.admin:
        return None
    if org is None:
        return "admin"
    if roles.owns(org, project):
        return None
    if user is not None and (org, user) == (roles.org, roles.user):
        return None
    return _owner_of(org, project)


def _applies(roles: Roles, key: BudgetKey) -> bool:
    """Whether the budget ``key`` applies to the roles' own identity (``*``: any)."""

    def same(part: str | None, mine: str) -> bool:
        return part is None or part in ("*", mine)

    if key.org != roles.org or not same(key.project, roles.project):
        return False
    return key.scope != "user" or same(key.user, roles.user)


def can_see_budget(roles: Roles, key: BudgetKey) -> str | None:
    """A budget (its definition, status and alerts): an admin's, an owner's within what
    they own, a member's when it applies to them."""
    if roles.admin or _applies(roles, key):
        return None
    project = key.project if key.project not in (None, "*") else None
    return None if roles.owns(key.org, project) else _owner_of(key.org, project)


def can_manage_budget(roles: Roles, key: BudgetKey) -> str | None:
    """Create, change or delete a budget (and so its webhook): an admin anywhere; an org
    owner within the org; a project owner for the project's own and its users' budgets
    (not the org's, nor an org-wide user budget or default)."""
    if roles.admin:
        return None
    project = key.project if key.project not in (None, "*") else None
    return None if roles.owns(key.org, project) else _owner_of(key.org, project)


def can_acknowledge_alert(roles: Roles, key: BudgetKey) -> str | None:
    """Acknowledge an alert of the budget ``key``: who may manage it, or a member for a
    budget of their own user (nobody else's alert, nor a shared budget's)."""
    if key.scope == "user" and key.user == roles.user and _applies(roles, key):
        return None
    return can_manage_budget(roles, key)
