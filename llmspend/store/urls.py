"""Database URLs as a store opens and shows them.

Every URL a message, a log record, a report or a ``repr`` shows has its password hidden,
in the userinfo (``postgresql://u:***@h/db``) and in the query string (``?password=***``,
``sslpassword``, tokens, secrets): :func:`safe_url` for a URL, :func:`redacted` for any
text, even one that does not parse. ``postgresql://`` URLs open with psycopg 3
(:func:`normalize_url`). :func:`reason` gives the one line of a driver error that such
messages quote (redacted too).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import make_url

from ..errors import ConfigError

__all__ = ["is_secret_key", "normalize_url", "reason", "redacted", "safe_url"]

HIDDEN = "***"

# a query key naming a credential: any key containing one of these words, or exactly
# ``pass``/``auth`` (``passfile``, ``sslkey``, ``sslcert`` name files and are shown)
_SECRET_WORDS = re.compile(
    r"password|passwd|pwd|secret|token|api_?key|access_?key|private_?key|credential",
    re.IGNORECASE,
)
_SECRET_EXACT = frozenset({"pass", "auth", "key"})

# userinfo ``scheme://user:password@`` — the password runs to the last ``@`` before the
# host (a raw ``@`` or ``/`` in a password is taken as part of it)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)[^\s'\"]*@")
# ``key=value`` in a query string (after ``?``, ``&`` or ``;``), or as a libpq keyword;
# also percent-encoded (``%3B``, ``%26``, ``%3D``) as a rendered URL shows it
_QUERY = re.compile(
    r"(?P<head>(?:^|[?&;\s]|%3[bB]|%26)(?P<key>[A-Za-z0-9_.\-]+)(?:=|%3[dD]))"
    r"(?P<value>(?:[^&;#\s'\"%]|%(?!26|3[bB]))*)"
)


def is_secret_key(key: str) -> bool:
    """Whether a URL query key (or libpq keyword) names a credential."""
    k = key.lower()
    return k in _SECRET_EXACT or bool(_SECRET_WORDS.search(k))


def redacted(text: str) -> str:
    """``text`` with every password in it hidden: URLs' userinfo passwords and the values
    of credential-looking query keys (:func:`is_secret_key`); works on any text."""

    def query(m: re.Match[str]) -> str:
        return m["head"] + HIDDEN if is_secret_key(m["key"]) and m["value"] else m[0]

    text = _USERINFO.sub(lambda m: m["head"] + HIDDEN + "@", str(text))
    return _QUERY.sub(query, text)


def safe_url(url: Any) -> str:
    """``url`` to show, every password in it hidden (``<unparseable URL>`` if it does not
    parse)."""
    try:
        parsed = make_url(url)
    except Exception:
        return "<unparseable URL>"
    query = {k: HIDDEN if is_secret_key(k) else v for k, v in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return redacted(shown)


def normalize_url(url: str) -> Any:
    """``url`` parsed for SQLAlchemy, PostgreSQL through psycopg 3; ``ConfigError`` if it
    is not a database URL."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError):
        raise ConfigError(
            f"not a database URL: {redacted(url)!r} (expected e.g. "
            "'sqlite:///path/to/llmspend.sqlite' or 'postgresql://user@host/db')"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def reason(e: BaseException) -> str:
    """The first line of what the driver said (else the exception's type name)."""
    said = str(getattr(e, "orig", None) or e).strip()
    return redacted(said.splitlines()[0]) if said else type(e).__name__
