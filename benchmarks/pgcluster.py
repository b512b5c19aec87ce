"""A PostgreSQL for the benchmarks: the URL given, or a throwaway cluster started the way
the tests start one (``tests/pgserver.py``; needs the PostgreSQL server binaries)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def postgres(pg_url: str | None) -> tuple[str | None, Any, str]:
    """(url, server to stop or None, note); url is None when no server could be had."""
    if pg_url:
        return pg_url, None, "given"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from tests.pgserver import PgServer, PgUnavailable
    except ImportError as exc:
        return None, None, f"cannot start a cluster: {exc}"
    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        return None, None, str(exc)
    return server.create_database(), server, "throwaway cluster"
