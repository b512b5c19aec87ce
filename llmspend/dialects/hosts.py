"""Which HTTP requests are provider calls: the providers' hosts, and endpoints users declare.

The transport taps see every request an HTTP client library sends; only those to a
provider endpoint are handed to a dialect. An endpoint is known when its host is one of
the providers' public API hosts (below), or when a user declared its base URL — a local
OpenAI-compatible server, a corporate proxy, a gateway:

* ``LLMSPEND_ENDPOINTS``: comma-separated ``URL=DIALECT`` or ``URL=DIALECT:PROVIDER``, e.g.
  ``http://127.0.0.1:8000/v1=openai, https://llm.corp.example/gemini=gemini``;
* :func:`declare_endpoint` (``llmspend.declare_endpoint``) from Python.

**Team mode.** The llmspend gateway's URL (``LLMSPEND_GATEWAY_URL``, or
``install(gateway_url=...)`` through :func:`set_gateway`) is recognized here too, and
first: :func:`gateway_bound` says a request goes to the gateway, which records and budgets
it. Such a request is observed, not tracked (:mod:`llmspend.teammode`), by every tap.

A declared endpoint matches requests to its scheme, host and port whose path starts with
its path; the rest of the path is what the dialect reads. Nothing is recorded for a
request to any other host. A request an SDK tap records itself (the openai, Gemini and
Anthropic SDKs, whatever their base URL) is never looked at here.
"""

from __future__ import annotations

import os
import threading
from typing import NamedTuple
from urllib.parse import urlsplit

from ..config import gateway_url_from_env
from ..errors import ConfigError

__all__ = [
    "DIALECTS",
    "Endpoint",
    "declare_endpoint",
    "declared_endpoints",
    "gateway",
    "gateway_bound",
    "gateway_bound_url",
    "match",
    "set_gateway",
]

#: The dialects a request can be handed to, by name (modules of this package).
DIALECTS = ("openai", "gemini", "anthropic")


class Endpoint(NamedTuple):
    """Where requests of one dialect go: ``prefix`` is the base path (``""`` for a host)."""

    dialect: str
    provider: str | None  # ``None``: the dialect tells it from the host
    scheme: str
    host: str
    port: int | None
    prefix: str


# The providers' public API hosts: (exact host or ".suffix", dialect, provider).
_KNOWN: tuple[tuple[str, str, str | None], ...] = (
    ("api.openai.com", "openai", "openai"),
    (".openai.azure.com", "openai", "azure"),
    (".cognitiveservices.azure.com", "openai", "azure"),
    (".services.ai.azure.com", "openai", "azure"),
    ("api.x.ai", "openai", "xai"),
    ("openrouter.ai", "openai", "openrouter"),
    ("generativelanguage.googleapis.com", "gemini", "google"),
    ("aiplatform.googleapis.com", "gemini", "google"),
    ("-aiplatform.googleapis.com", "gemini", "google"),
    ("api.anthropic.com", "anthropic", "anthropic"),
)

_declared: list[Endpoint] = []
_from_env: tuple[str, list[Endpoint]] | None = None
_lock = threading.Lock()


def _parse(url: str, dialect: str, provider: str | None) -> Endpoint:
    if dialect not in DIALECTS and dialect != "gateway":
        raise ConfigError(f"unknown dialect {dialect!r} for {url!r}: one of {', '.join(DIALECTS)}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"an endpoint must be an http(s) URL with a host, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in endpoint {url!r}") from None
    return Endpoint(
        dialect, provider or None, parts.scheme, parts.hostname.lower(), port,
        parts.path.rstrip("/"),
    )  # fmt: skip


def declare_endpoint(base_url: str, dialect: str = "openai", provider: str | None = None) -> None:
    """Treat requests under ``base_url`` as calls in ``dialect`` (``"openai"``,
    ``"gemini"`` or ``"anthropic"``), recorded under ``provider`` (default: the dialect's
    own, e.g. ``openai-compatible`` for an OpenAI-style server on another host)."""
    endpoint = _parse(base_url, dialect, provider)
    with _lock:
        if endpoint not in _declared:
            _declared.append(endpoint)


def _env_endpoints() -> list[Endpoint]:
    """``LLMSPEND_ENDPOINTS``, parsed once per value (a bad one is a ConfigError)."""
    global _from_env
    raw = os.environ.get("LLMSPEND_ENDPOINTS", "")
    cached = _from_env
    if cached is not None and cached[0] == raw:
        return cached[1]
    out = []
    for item in filter(None, (i.strip() for i in raw.split(","))):
        url, sep, spec = item.rpartition("=")
        if not sep or not url:
            raise ConfigError(
                f"LLMSPEND_ENDPOINTS entries are URL=DIALECT[:PROVIDER], got {item!r}"
            )
        dialect, _, provider = spec.strip().partition(":")
        out.append(_parse(url, dialect.strip(), provider.strip() or None))
    _from_env = (raw, out)
    return out


def declared_endpoints() -> list[Endpoint]:
    """Every declared endpoint: from Python, then from ``LLMSPEND_ENDPOINTS``."""
    return [*_declared, *_env_endpoints()]


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def match(scheme: str, host: str, port: int | None, path: str) -> tuple[Endpoint, str] | None:
    """The endpoint a request goes to and the path under it, or ``None`` (not a provider)."""
    host = host.lower().rstrip(".")
    declared = _declared or os.environ.get("LLMSPEND_ENDPOINTS")
    if declared:
        want = port or _default_port(scheme)
        for ep in declared_endpoints():
            if ep.host != host or (ep.port or _default_port(ep.scheme)) != want:
                continue
            if ep.scheme != scheme:
                continue
            if not ep.prefix or path == ep.prefix or path.startswith(ep.prefix + "/"):
                return ep, path[len(ep.prefix) :] or "/"
    for known, dialect, provider in _KNOWN:
        if host == known or (known[0] in ".-" and host.endswith(known)):
            return Endpoint(dialect, provider, scheme, host, port, ""), path
    return None


# -- team mode: the gateway ------------------------------------------------------------------

_gateway_set: list[Endpoint] = []  # install(gateway_url=...); empty: the environment's
_gateway_env: tuple[str | None, Endpoint | None] = (None, None)


def set_gateway(url: str | None) -> None:
    """Send-to-the-gateway means recorded-by-the-gateway: requests under ``url`` are not
    recorded here. ``None`` goes back to ``LLMSPEND_GATEWAY_URL``."""
    endpoint = _parse(url, "gateway", None) if url else None
    with _lock:
        _gateway_set[:] = [endpoint] if endpoint is not None else []


def gateway() -> Endpoint | None:
    """The gateway requests are bound for in team mode, or ``None`` (solo mode)."""
    if _gateway_set:
        return _gateway_set[0]
    global _gateway_env
    raw = gateway_url_from_env()
    if raw is None:
        return None
    if _gateway_env[0] != raw:
        _gateway_env = (raw, _parse(raw, "gateway", None))
    return _gateway_env[1]


#: Names of this machine's loopback, one host to :func:`gateway_bound`: a gateway set as
#: ``http://localhost:8780`` is the one an SDK reaches at ``http://127.0.0.1:8780``.
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def _same_host(a: str, b: str) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b or (a in _LOOPBACK and b in _LOOPBACK)


def gateway_bound(scheme: str, host: str, port: int | None, path: str) -> bool:
    """Whether a request to this URL goes to the gateway (team mode)."""
    ep = gateway()
    if ep is None or ep.scheme != scheme or not _same_host(ep.host, host):
        return False
    if (ep.port or _default_port(ep.scheme)) != (port or _default_port(scheme)):
        return False
    return not ep.prefix or path == ep.prefix or path.startswith(ep.prefix + "/")


def gateway_bound_url(url: object) -> bool:
    """:func:`gateway_bound` for a URL (a string or an ``httpx``-style URL object)."""
    if gateway() is None:
        return False
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        return False
    return gateway_bound(parts.scheme, parts.hostname or "", port, parts.path or "/")
