"""Database URLs as a store opens and shows them.

Every URL a message or a ``repr`` shows has its password hidden (:func:`safe_url`, or
:func:`redacted` for text that does not even parse). ``postgresql://`` URLs open with
psycopg 3 (:func:`normalize_url`). :func:`reason` gives the one line of a driver error
that such messages quote.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import make_url

from ..errors import ConfigError

__all__ = ["normalize_url", "reason", "redacted", "safe_url"]


def safe_url(url: str) -> str:
    """``url`` with its password hidden (``<unparseable URL>`` if it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def redacted(url: str) -> str:
    """The URL for a message, password hidden even when it does not parse."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


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
    orig = getattr(e, "orig", None)
    return str(orig or e).strip().splitlines()[0] if str(orig or e).strip() else type(e).__name__
