"""Alembic environment for llmspend's own migrations.

Always run with a ``Config`` from :func:`llmspend.store.migrate.alembic_config` (as
``upgrade`` does), which passes an open connection in ``config.attributes["connection"]``;
never configured from an ini file.
"""

from __future__ import annotations

from alembic import context

from llmspend.store.migrate import VERSION_TABLE
from llmspend.store.models import Base

config = context.config
connection = config.attributes["connection"]

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)

with context.begin_transaction():
    context.run_migrations()
