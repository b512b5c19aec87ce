"""The store's schema: Alembic migrations, applied on first open and by ``llmspend db upgrade``.

The scripts are in ``migrations/versions`` (a released one never changes), run through
``migrations/env.py`` on a connection passed in (never from an ini file); the revisions
a store is at are in its ``llmspend_alembic_version`` table (:data:`VERSION_TABLE`).
:func:`upgrade` is idempotent and safe with many kernels: it runs in one write
transaction (SQLite's lock taken at ``BEGIN``, a transaction-scoped advisory lock on
PostgreSQL) and compares the revisions again inside it. A store at a revision this
llmspend does not know was migrated by a newer one: it is refused with
``SchemaTooNewError``, never touched. Alembic is imported only when a migration is
looked at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, exc, text

from ..errors import ConfigError, SchemaTooNewError, StoreCorrupted, StoreError
from .health import describe, is_corruption
from .transactions import Transactions
from .urls import reason, redacted, safe_url

__all__ = [
    "MIGRATIONS",
    "PG_MIGRATION_LOCK",
    "VERSION_TABLE",
    "alembic_config",
    "current_revisions",
    "ensure_schema",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "llmspend_alembic_version"
PG_MIGRATION_LOCK = 0x11A5E9D  # advisory lock key serializing migrations across kernels


def alembic_config(connection: Connection) -> Any:
    """An Alembic ``Config`` for llmspend's migrations, running on ``connection``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _script_heads() -> tuple[set[str], set[str]]:
    """The head revisions of the scripts, and every revision they know."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS), version_locations=[str(MIGRATIONS / "versions")])
    known = {rev.revision for rev in script.walk_revisions()}
    return set(script.get_heads()), known


def _recorded(conn: Connection) -> set[str]:
    """The revisions the store on ``conn`` is at."""
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return set(ctx.get_current_heads())


def _refuse_unknown(store: Transactions, current: set[str], known: set[str]) -> None:
    unknown = current - known
    if unknown:
        raise SchemaTooNewError(
            f"the store {safe_url(store.url)} has schema revision "
            f"{', '.join(sorted(unknown))}, which this llmspend does not know: it was "
            "migrated by a newer llmspend. Upgrade llmspend (pip install -U llmspend)."
        )


def upgrade(store: Transactions) -> list[str]:
    """Apply pending migrations (idempotent; safe with many kernels). Returns new heads."""
    from alembic import command

    heads, known = _script_heads()
    with store.begin(write=True) as conn:
        if store.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
        current = _recorded(conn)
        _refuse_unknown(store, current, known)
        if current != heads:
            command.upgrade(alembic_config(conn), "heads")
    return sorted(heads)


def current_revisions(store: Transactions) -> list[str]:
    """The schema revisions recorded in the store (empty for a new database)."""
    try:
        with store.engine.connect() as conn:
            return sorted(_recorded(conn))
    except exc.DBAPIError as e:
        _raise_if_corrupted(store, e)
        raise StoreError(f"cannot read the store {safe_url(store.url)}: {reason(e)}") from None


def _raise_if_corrupted(store: Transactions, e: BaseException) -> None:
    if is_corruption(e):
        raise StoreCorrupted(str(store._sqlite_path or safe_url(store.url)), describe(e)) from e


def ensure_schema(store: Transactions) -> None:
    """Migrate a store just opened if it is behind (a read first: no write lock when it
    is up to date); errors say whether it cannot be reached, read or migrated
    (``StoreCorrupted`` for a damaged SQLite file)."""
    heads, known = _script_heads()
    try:
        with store.engine.connect() as conn:
            current = _recorded(conn)
            conn.rollback()
    except exc.OperationalError as e:
        _raise_if_corrupted(store, e)
        raise StoreError(f"cannot open the store {safe_url(store.url)}: {reason(e)}") from None
    except exc.DBAPIError as e:
        _raise_if_corrupted(store, e)
        raise StoreError(f"cannot read the store {safe_url(store.url)}: {reason(e)}") from None
    except (ValueError, TypeError) as e:  # driver options that are not what they should be
        raise ConfigError(f"bad database URL {redacted(store.url)!r}: {e}") from None
    _refuse_unknown(store, current, known)
    if current != heads:
        try:
            upgrade(store)
        except exc.OperationalError as e:
            raise StoreError(
                f"cannot migrate the store {safe_url(store.url)}: {reason(e)}"
            ) from None
