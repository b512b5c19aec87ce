"""JupyterHub identities: a user's hub API token as a gateway credential.

The gateway, as a hub service, asks the hub who a token belongs to
(``jupyterhub.services.auth.HubAuth.user_for_token``, ``GET /hub/api/user`` with the
user's token). The hub's answer — yes or no — is cached for ``cache_seconds``: a token
revoked at the hub is refused at most that long after (each replica keeps its own cache,
so replicas may differ by at most that long, never longer). The user is the hub's name;
org and project come from the user's hub groups: ``[hub.groups]`` first, then
``group_pattern`` (sorted group names, the first that maps wins; the groups ``[roles]``
grants roles by are skipped), else ``default``; a user
in no mapped group and no default is refused (403). If the hub's answer for a token lacks
the groups (a hub that shows them only to tokens allowed to read them), they are looked up
with the service's token (``read:users``), cached as long. Needs the ``hub`` extra (jupyterhub),
imported only when a hub is configured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from ..attribution import validate_name
from ..errors import ConfigError, HubDenied, HubUnavailable, ValidationError
from ..extras import require_extra
from .config import HubConfig
from .keys import Identity

__all__ = ["HubDenied", "HubIdentities", "HubUnavailable", "group_identity"]


def _pattern(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\{org\}|\{project\})", pattern)
    regex = "".join(
        "(?P<org>.+?)" if p == "{org}" else "(?P<project>.+?)" if p == "{project}" else re.escape(p)
        for p in parts
    )
    return re.compile(f"^{regex}$")


def group_identity(
    config: HubConfig, user: str, groups: list[str], role_groups: Collection[str] = ()
) -> Identity:
    """The identity of hub user ``user`` in ``groups`` under ``config``'s mapping;
    ``role_groups`` (``[roles]``' admin and owner groups) grant roles and never name an org
    and project by the pattern (``llmspend-admins`` is not org ``llmspend``)."""
    pattern = _pattern(config.group_pattern) if config.group_pattern else None
    found: tuple[str, str] | None = None
    for group in sorted(groups):
        if group in config.groups:
            found = config.groups[group]
            break
    if found is None and pattern is not None:
        for group in sorted(set(groups) - set(role_groups)):
            if m := pattern.match(group):
                found = (m["org"], m["project"])
                break
    found = found or config.default
    if found is None:
        raise HubDenied(
            f"llmspend gateway: hub user {user!r} is in no group that names an org and project"
        )
    try:
        org, project = validate_name("org", found[0]), validate_name("project", found[1])
        return Identity(0, org, project, validate_name("user", user))
    except ValidationError as exc:
        raise HubDenied(f"llmspend gateway: hub user {user!r}: {exc}") from None


class HubIdentities:
    """Validates hub tokens for the gateway (one per process, one cache)."""

    def __init__(self, config: HubConfig, role_groups: Collection[str] = ()) -> None:
        """``role_groups``: the hub groups ``[roles]`` grants roles by (admin_groups,
        group_owners), which the group pattern skips."""
        require_extra("the gateway's JupyterHub identities", "hub", ("jupyterhub",))
        try:
            from jupyterhub.services.auth import HubAuth
        except ImportError as exc:  # pragma: no cover - found but broken
            raise ConfigError(f"JupyterHub identities need the 'hub' extra ({exc})") from None
        self.config = config
        self.role_groups = frozenset(role_groups)
        self._group_cache: dict[str, tuple[float, list[str]]] = {}
        self._auth: Any = HubAuth(
            api_token=config.token,
            api_url=config.api_url,
            cache_max_age=max(1, round(config.cache_seconds)),
        )

    async def identify(self, token: str) -> Identity | None:
        """The identity of a live hub user token, ``None`` for an unknown, expired or
        revoked one; raises :class:`HubDenied` or :class:`HubUnavailable`."""
        if not token or len(token) > 200:
            return None
        try:
            model = await self._auth.user_for_token(token, sync=False)
        except Exception as exc:  # tornado HTTPError: hub down or our token refused
            raise HubUnavailable(f"llmspend gateway: the hub cannot be asked ({exc})") from None
        if not isinstance(model, dict) or model.get("kind", "user") != "user":
            return None
        name = model.get("name")
        if not isinstance(name, str):
            return None
        groups = model.get("groups")
        if groups is None:  # a token not allowed to read its owner's groups
            groups = await self._groups(name)
        return group_identity(self.config, name, list(groups), self.role_groups)

    async def _groups(self, name: str) -> list[str]:
        """``name``'s hub groups, asked with the service's own token (``read:users``),
        cached as long as a token's answer."""
        now = time.monotonic()
        hit = self._group_cache.get(name)
        if hit is not None and now - hit[0] < self.config.cache_seconds:
            return hit[1]
        url = f"{self.config.api_url}/users/{quote(name, safe='')}"
        try:
            model = await self._auth._api_request("GET", url)
        except Exception as exc:
            raise HubUnavailable(f"llmspend gateway: the hub cannot be asked ({exc})") from None
        groups = [g for g in (model or {}).get("groups") or () if isinstance(g, str)]
        if len(self._group_cache) >= 10_000:
            self._group_cache.clear()
        self._group_cache[name] = (now, groups)
        return groups
