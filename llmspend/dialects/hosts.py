"""Which HTTP requests are provider calls: the providers' hosts, and endpoints users declare.

The transport taps see every request an HTTP client library sends; only those to a
provider endpoint are handed to a dialect. An endpoint is known when its host is one of
the providers' public API hosts (below), or when a user declared its base URL — a local
OpenAI-compatible server, a corporate proxy, a gateway:

* ``LLMSPEND_ENDPOINTS``: comma-separated ``URL=DIALECT`` or ``URL=DIALECT:PROVIDER``, e.g.
  ``http://127.0.0.1:8000/v1=openai, https://llm.corp.example/gemini=gemini``;
* :func:`declare_endpoint` (``llmspend.declare_endpoint``) from Python.

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

from ..errors import ConfigError

__all__ = ["DIALECTS", "Endpoint", "declare_endpoint", "declared_endpoints", "match"]

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
    if dialect not in DIALECTS:
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
