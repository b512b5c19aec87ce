"""The report's org/project/user filters, checked against the store's hierarchy (in team
mode, against the names the gateway lets the caller see: ``GatewayClient.names()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..errors import ValidationError
from ..names import name_list
from ..store.models import Org, Project, User

if TYPE_CHECKING:
    from ..store.engine import Store
    from ..teamclient import GatewayClient

__all__ = ["check_names", "filter_names", "known_names"]

Known = tuple[set[str], dict[str, set[str]], dict[str, set[str]]]


def filter_names(value: Any, what: str = "name") -> list[str] | None:
    """A filter value as a list of names: ``"acme"``, ``"acme,beta"`` or a list; ``""``,
    ``None`` and ``[]`` mean no filter."""
    return name_list(value, what, text=True)


def known_names(source: Store | GatewayClient) -> Known:
    """The org names, and the project and user names per org, that ``source`` knows: a
    store's hierarchy, or the names the gateway lets the caller see (``names()``: flat
    lists, so each org is taken to hold every project and user seen)."""
    names = getattr(source, "names", None)
    if names is None:
        return _known(source)  # type: ignore[arg-type]
    orgs, projects, users = names()
    return set(orgs), {o: set(projects) for o in orgs}, {o: set(users) for o in orgs}


def _known(store: Store) -> Known:
    with store.begin() as conn:
        orgs = dict(conn.execute(select(Org.id, Org.name)).all())
        projects: dict[str, set[str]] = {}
        users: dict[str, set[str]] = {}
        for org_id, name in conn.execute(select(Project.org_id, Project.name)):
            projects.setdefault(orgs[org_id], set()).add(name)
        for org_id, name in conn.execute(select(User.org_id, User.name)):
            users.setdefault(orgs[org_id], set()).add(name)
    return set(orgs.values()), projects, users


def _listing(names: set[str]) -> str:
    shown = sorted(names)
    if not shown:
        return "none yet"
    more = f", ... ({len(shown)} in all)" if len(shown) > 12 else ""
    return ", ".join(shown[:12]) + more


def check_names(
    store: Store | GatewayClient, org: Any = None, project: Any = None, user: Any = None
) -> dict[str, list[str]]:
    """The filters as lists of names, each checked against the store's hierarchy (or, given
    a :class:`~llmspend.teamclient.GatewayClient`, the names the gateway lets us see).

    A name the store has never seen (no usage, no budget) raises
    :class:`ValidationError` listing the names it knows, so a typo fails at once
    instead of producing an empty report.
    """
    flt = {
        k: v
        for k, v in (
            ("org", filter_names(org, "org")),
            ("project", filter_names(project, "project")),
            ("user", filter_names(user, "user")),
        )
        if v
    }
    if not flt:
        return {}
    orgs, projects, users = known_names(store)
    for name in flt.get("org", []):
        if name not in orgs:
            raise ValidationError(f"unknown org {name!r} (the store knows: {_listing(orgs)})")
    scope = flt.get("org") or sorted(orgs)
    where = f" in org {', '.join(flt['org'])}" if "org" in flt else ""
    for what, table in (("project", projects), ("user", users)):
        known = set().union(*(table.get(o, set()) for o in scope))
        for name in flt.get(what, []):
            if name not in known:
                raise ValidationError(
                    f"unknown {what} {name!r}{where} (the store knows: {_listing(known)})"
                )
    return flt
