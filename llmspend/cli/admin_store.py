"""The database an admin command works on (``audit``, ``gateway keys``), never a guess.

In team mode (``--gateway`` or ``LLMSPEND_GATEWAY_URL``) with no database named
(``--database-url``, ``LLMSPEND_DATABASE_URL``), the default would be this machine's own
SQLite file, which no gateway reads: ``audit verify`` would say ``ok: 0 entries`` of it and
``keys create`` print a key no gateway knows. That is a :class:`ConfigError` instead.
"""

from __future__ import annotations

import argparse
import os

from ..config import resolve_database_url
from ..errors import ConfigError
from . import database_url

__all__ = ["admin_database_url"]


def admin_database_url(args: argparse.Namespace, command: str) -> str:
    """The store URL for admin ``command``; refuses the per-user default in team mode."""
    url = database_url(args) or os.environ.get("LLMSPEND_DATABASE_URL") or None
    gateway = getattr(args, "gateway", None) or os.environ.get("LLMSPEND_GATEWAY_URL")
    if url is None and gateway:
        raise ConfigError(
            f"llmspend {command} works on the gateway's database itself, and none is named"
            " (the gateway is set, so this machine's own store would be read instead):"
            " pass --database-url or set LLMSPEND_DATABASE_URL"
        )
    return resolve_database_url(url)
