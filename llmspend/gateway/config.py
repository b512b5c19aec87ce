"""The gateway's configuration: a TOML file naming the upstreams and their keys' env vars.

```toml
[gateway]
max_request_bytes = 33554432   # a larger request body gets a 413 (default 32 MiB)
timeout = 600                  # seconds for an upstream read (default 600)
connect_timeout = 10           # seconds to connect upstream (default 10)
key_cache_seconds = 5          # a revoked gateway key is refused within this (0: at once)
keepalive_timeout = 75         # seconds an idle client connection is kept (default 75: longer
                               # than clients and proxies keep theirs, so they close first)

[upstreams.openai]             # served at /openai/...: /openai/v1/chat/completions
dialect = "openai"             # openai | gemini | anthropic (default: the upstream's name)
base_url = "https://api.openai.com"
key_env = "OPENAI_API_KEY"     # the NAME of the environment variable holding the key
provider = "openai"            # optional: what rows are recorded under (default: by host)
auth = "bearer"                # optional: bearer | api-key | x-api-key | x-goog-api-key

[hub]                          # optional: accept JupyterHub API tokens (the ``hub`` extra)
api_url = "http://127.0.0.1:8081/hub/api"   # default: $JUPYTERHUB_API_URL
token_env = "JUPYTERHUB_API_TOKEN"          # the variable holding the service's token
cache_seconds = 30             # how long a token's answer (yes or no) is reused
group_pattern = "{org}-{project}"           # hub group names that map to org/project
default = {org = "acme", project = "general"}   # optional: users in no mapped group

[hub.groups]                   # explicit mappings, checked before the pattern
"data-science" = {org = "acme", project = "ds"}

[webhooks]                     # budgets' webhooks are delivered by the gateway only
allow = ["hooks.internal", "10.1.2.0/24"]   # non-public hosts/CIDRs allowed (default none)
```

Without a ``[hub]`` table, hub tokens are accepted when the gateway runs as a hub-managed
service (``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_API_URL`` set), with the default pattern.

The path after ``/NAME`` is appended to ``base_url`` as it is. Without a file the three
public providers are configured (``OPENAI_API_KEY``, ``GEMINI_API_KEY``,
``ANTHROPIC_API_KEY``). Keys are read from the environment once, at start; they are
never stored, logged or shown (``repr`` of an :class:`Upstream` hides its key).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..dialects.hosts import DIALECTS
from ..errors import ConfigError
from .roles import RoleConfig, parse_roles

__all__ = [
    "AUTH_HEADERS",
    "KEEPALIVE_SECONDS",
    "GatewayConfig",
    "HubConfig",
    "Upstream",
    "default_config",
    "load_config",
]

#: How each dialect's SDK sends its key, and so how the gateway sends the provider's.
AUTH_HEADERS = {"openai": "bearer", "gemini": "x-goog-api-key", "anthropic": "x-api-key"}
_AUTHS = ("bearer", "api-key", "x-api-key", "x-goog-api-key")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_DEFAULTS = {
    "openai": ("https://api.openai.com", "OPENAI_API_KEY"),
    "gemini": ("https://generativelanguage.googleapis.com", "GEMINI_API_KEY"),
    "anthropic": ("https://api.anthropic.com", "ANTHROPIC_API_KEY"),
}


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream: requests to ``/{name}/...`` go to ``base_url`` + the rest."""

    name: str
    dialect: str
    base_url: str
    key_env: str
    provider: str | None
    auth: str
    key: str = field(default="", repr=False)

    def auth_headers(self) -> dict[str, str]:
        """The header that carries the provider key upstream (none without a key)."""
        if not self.key:
            return {}
        if self.auth == "bearer":
            return {"authorization": f"Bearer {self.key}"}
        return {self.auth: self.key}


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Where the hub is and how its groups map to org/project."""

    api_url: str
    token: str = field(repr=False)
    cache_seconds: float = 30.0
    group_pattern: str | None = "{org}-{project}"
    groups: dict[str, tuple[str, str]] = field(default_factory=dict)
    default: tuple[str, str] | None = None


#: How long the gateway keeps an idle client connection open. Longer than the clients'
#: own idle limits (httpx, under the openai and anthropic SDKs: 5 s; aiohttp: 15 s; nginx's
#: upstream ``keepalive_timeout``: 60 s), so the client always closes first: a server that
#: closes an idle connection just as a client sends on it resets the request (uvicorn's own
#: default is 5 s, the very limit of httpx).
KEEPALIVE_SECONDS = 75.0


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    upstreams: dict[str, Upstream]
    max_request_bytes: int = 32 * 1024 * 1024
    timeout: float = 600.0
    connect_timeout: float = 10.0
    hub: HubConfig | None = None
    roles: RoleConfig = field(default_factory=RoleConfig)  # [roles]: see .roles
    key_cache_seconds: float = 5.0
    keepalive_timeout: float = KEEPALIVE_SECONDS
    webhook_allow: str = ""  # [webhooks] allow, as check_destination takes it


def _number(section: dict[str, Any], name: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"gateway config: {name} must be a positive number, got {value!r}")
    return float(value)


def _seconds(section: dict[str, Any], name: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"gateway config: {name} must be a number >= 0, got {value!r}")
    return float(value)


def _upstream(name: str, spec: Any, environ: dict[str, str]) -> Upstream:
    if not _NAME.match(name):
        raise ConfigError(f"gateway config: bad upstream name {name!r} (a-z, 0-9, - and _)")
    if not isinstance(spec, dict):
        raise ConfigError(f"gateway config: [upstreams.{name}] must be a table")
    unknown = set(spec) - {"dialect", "base_url", "key_env", "provider", "auth"}
    if unknown:
        raise ConfigError(f"gateway config: unknown keys in [upstreams.{name}]: {sorted(unknown)}")
    dialect = spec.get("dialect", name)
    if dialect not in DIALECTS:
        raise ConfigError(
            f"gateway config: [upstreams.{name}] dialect must be one of {', '.join(DIALECTS)}"
        )
    base_url = spec.get("base_url")
    if not isinstance(base_url, str):
        raise ConfigError(f"gateway config: [upstreams.{name}] base_url must be an http(s) URL")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"gateway config: [upstreams.{name}] base_url must be an http(s) URL")
    key_env = spec.get("key_env", "")
    if not isinstance(key_env, str):
        raise ConfigError(f"gateway config: [upstreams.{name}] key_env must be a string")
    auth = spec.get("auth", AUTH_HEADERS[dialect])
    if auth not in _AUTHS:
        raise ConfigError(f"gateway config: [upstreams.{name}] auth must be one of {_AUTHS}")
    provider = spec.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise ConfigError(f"gateway config: [upstreams.{name}] provider must be a string")
    key = environ.get(key_env, "") if key_env else ""
    return Upstream(name, dialect, base_url.rstrip("/"), key_env, provider, auth, key)


def _pair(where: str, spec: Any) -> tuple[str, str]:
    if (
        not isinstance(spec, dict)
        or set(spec) != {"org", "project"}
        or not all(isinstance(v, str) and v for v in spec.values())
    ):
        raise ConfigError(f'gateway config: {where} must be {{org = "...", project = "..."}}')
    return spec["org"], spec["project"]


def _hub(spec: Any, env: dict[str, str]) -> HubConfig | None:
    """The ``[hub]`` table; without one, the hub-managed service's environment if set."""
    if spec is None:
        if not (env.get("JUPYTERHUB_API_TOKEN") and env.get("JUPYTERHUB_API_URL")):
            return None
        spec = {}
    if not isinstance(spec, dict):
        raise ConfigError("gateway config: [hub] must be a table")
    known = {"api_url", "token_env", "cache_seconds", "group_pattern", "groups", "default"}
    if unknown := set(spec) - known:
        raise ConfigError(f"gateway config: unknown keys in [hub]: {sorted(unknown)}")
    api_url = spec.get("api_url") or env.get("JUPYTERHUB_API_URL", "")
    if not isinstance(api_url, str) or urlsplit(api_url).scheme not in ("http", "https"):
        raise ConfigError("gateway config: [hub] api_url (or $JUPYTERHUB_API_URL) must be a URL")
    token_env = spec.get("token_env", "JUPYTERHUB_API_TOKEN")
    token = env.get(token_env, "") if isinstance(token_env, str) else ""
    if not token:
        raise ConfigError(f"gateway config: [hub] needs the service's token in ${token_env}")
    pattern = spec.get("group_pattern", "{org}-{project}")
    if pattern is not None and (
        not isinstance(pattern, str) or pattern.count("{org}") != 1
        or pattern.count("{project}") != 1
    ):  # fmt: skip
        raise ConfigError("gateway config: [hub] group_pattern must hold {org} and {project}")
    groups = spec.get("groups", {})
    if not isinstance(groups, dict):
        raise ConfigError("gateway config: [hub.groups] must be a table")
    default = spec.get("default")
    return HubConfig(
        api_url=api_url.rstrip("/"),
        token=token,
        cache_seconds=_number(spec, "cache_seconds", 30.0),
        group_pattern=pattern or None,
        groups={g: _pair(f"[hub.groups] {g!r}", v) for g, v in groups.items()},
        default=None if default is None else _pair("[hub] default", default),
    )


def _webhook_allow(spec: Any) -> str:
    """The ``[webhooks]`` table's ``allow`` list, space-separated (``""``: none)."""
    if spec is None:
        return ""
    if not isinstance(spec, dict):
        raise ConfigError("gateway config: [webhooks] must be a table")
    if unknown := set(spec) - {"allow"}:
        raise ConfigError(f"gateway config: unknown keys in [webhooks]: {sorted(unknown)}")
    allow = spec.get("allow", [])
    if not isinstance(allow, list) or not all(
        isinstance(a, str) and a.strip() and not any(c in a for c in " ,\t\n") for a in allow
    ):
        raise ConfigError("gateway config: [webhooks] allow must be a list of hosts or CIDRs")
    return " ".join(allow)


def load_config(path: str | None, environ: dict[str, str] | None = None) -> GatewayConfig:
    """The configuration in the TOML file at ``path`` (``None``: :func:`default_config`),
    with the provider keys read from ``environ`` (default: the process environment)."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        return default_config(env)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the gateway config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the gateway config {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"gateway", "upstreams", "hub", "roles", "webhooks"}
    if unknown:
        raise ConfigError(f"gateway config: unknown sections {sorted(unknown)}")
    section = data.get("gateway", {})
    ups = data.get("upstreams", {})
    if not isinstance(section, dict) or not isinstance(ups, dict) or not ups:
        raise ConfigError("gateway config: [upstreams.NAME] tables are required")
    return GatewayConfig(
        {name: _upstream(name, spec, env) for name, spec in ups.items()},
        max_request_bytes=int(_number(section, "max_request_bytes", 32 * 1024 * 1024)),
        timeout=_number(section, "timeout", 600.0),
        connect_timeout=_number(section, "connect_timeout", 10.0),
        hub=_hub(data.get("hub"), env),
        roles=parse_roles(data.get("roles")),
        key_cache_seconds=_seconds(section, "key_cache_seconds", 5.0),
        keepalive_timeout=_number(section, "keepalive_timeout", KEEPALIVE_SECONDS),
        webhook_allow=_webhook_allow(data.get("webhooks")),
    )


def default_config(environ: dict[str, str] | None = None) -> GatewayConfig:
    """The three public providers, keys from their usual environment variables."""
    env = dict(os.environ if environ is None else environ)
    return GatewayConfig(
        {
            name: _upstream(name, {"base_url": url, "key_env": key_env}, env)
            for name, (url, key_env) in _DEFAULTS.items()
        },
        hub=_hub(None, env),
    )
