"""A PostgreSQL for the benchmarks: the URL given, or a throwaway cluster started the way
the tests start one (``tests/pgserver.py``; needs the PostgreSQL server binaries)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def postgres(pg_url: str | None) -> Iterator[tuple[str | None, str]]:
    """``(url, note)``; url is None (and note says why) when no server could be had. A
    throwaway cluster is stopped on exit."""
    if pg_url:
        yield pg_url, "given"
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from tests.pgserver import PgServer, PgUnavailable
    except ImportError as exc:
        yield None, f"cannot start a cluster: {exc}"
        return
    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        yield None, str(exc)
        return
    url = server.create_database()
    try:
        yield url, "throwaway cluster"
    finally:
        from llmspend.store.engine import forget_store

        forget_store(url)
        server.stop()
