"""Taking a test's store to a schema revision with Alembic, as llmspend's own upgrade does."""

from __future__ import annotations

from typing import Any


def migrate(store: Any, revision: str, *, down: bool = False) -> None:
    """Upgrade ``store`` to ``revision`` (``"head"``), or downgrade it (``down``), in one
    write transaction."""
    from alembic import command

    from llmspend.store.migrate import alembic_config

    with store.begin(write=True) as conn:
        (command.downgrade if down else command.upgrade)(alembic_config(conn), revision)
