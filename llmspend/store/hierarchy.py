"""The org → project → user hierarchy rows, created on first sight."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, select

from ..timeutil import utcnow
from .models import Org, Project, User

__all__ = ["ensure_entities"]


def _insert_ignore(conn: Connection, table: Any) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def ensure_entities(
    conn: Connection, triples: Iterable[tuple[str, str | None, str | None]]
) -> None:
    """Make sure every (org, project, user) named exists; ``None`` parts are skipped."""
    triples = set(triples)
    if not triples:
        return
    now = utcnow()
    orgs = sorted({o for o, _, _ in triples})
    conn.execute(
        _insert_ignore(conn, Org.__table__), [{"name": o, "created_at": now} for o in orgs]
    )
    ids = dict(conn.execute(select(Org.name, Org.id).where(Org.name.in_(orgs))).all())
    projects = sorted({(o, p) for o, p, _ in triples if p})
    users = sorted({(o, u) for o, _, u in triples if u})
    if projects:
        conn.execute(
            _insert_ignore(conn, Project.__table__),
            [{"org_id": ids[o], "name": p, "created_at": now} for o, p in projects],
        )
    if users:
        conn.execute(
            _insert_ignore(conn, User.__table__),
            [{"org_id": ids[o], "name": u, "created_at": now} for o, u in users],
        )
