"""The org → project → user hierarchy rows, created on first sight."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection

from ..timeutil import utcnow
from .fastsql import SQL, Tx, db_time

__all__ = ["ensure_entities"]

_ORG = SQL(
    "INSERT INTO llmspend_orgs (name, created_at) VALUES (:name, :now) ON CONFLICT DO NOTHING"
)
_ORG_ID = SQL("SELECT id FROM llmspend_orgs WHERE name = :name")


def _member(table: str) -> SQL:
    """The insert of a project or user (an org's member; see ``models._OrgMember``)."""
    return SQL(
        f"INSERT INTO {table} (org_id, name, created_at) VALUES (:org_id, :name, :now) "  # noqa: S608
        "ON CONFLICT DO NOTHING"
    )


_PROJECT = _member("llmspend_projects")
_USER = _member("llmspend_users")


def ensure_entities(
    conn: Connection | Tx, triples: Iterable[tuple[str, str | None, str | None]]
) -> None:
    """Make sure every (org, project, user) named exists; ``None`` parts are skipped."""
    triples = set(triples)
    if not triples:
        return
    tx = Tx.of(conn)
    now = db_time(tx, utcnow())
    orgs = sorted({o for o, _, _ in triples})
    tx.executemany(_ORG, [{"name": o, "now": now} for o in orgs])
    ids = {o: tx.run(_ORG_ID, {"name": o}).one().id for o in orgs}
    projects = sorted({(o, p) for o, p, _ in triples if p})
    users = sorted({(o, u) for o, _, u in triples if u})
    for sql, members in ((_PROJECT, projects), (_USER, users)):
        if members:
            tx.executemany(sql, [{"org_id": ids[o], "name": m, "now": now} for o, m in members])
