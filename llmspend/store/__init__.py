"""The store: where llmspend keeps calls, budgets, holds and alerts (SQLite or PostgreSQL).

Modules, each one job, none importing a layer above the store:

- ``engine``: :func:`~.engine.open_store` / ``forget_store`` and the ``Store`` object;
- ``transactions``: ``Store.begin`` (SQLAlchemy) and ``Store.tx`` (the per-call DBAPI path,
  with a SQLite connection per thread);
- ``sqlite``: SQLite's connection settings and the background WAL checkpointer;
- ``migrate``: the Alembic migrations (``upgrade``, ``current_revisions``);
- ``urls``: database URLs parsed and shown with the password hidden;
- ``fastsql``: hand-written SQL for the hot path (``SQL``, ``Tx``, time values);
- ``models``: the tables; ``hierarchy``: org/project/user rows; ``rollups``: the
  pre-aggregated usage tables.

Nothing is imported here: ``import llmspend.store.fastsql`` loads no engine.
"""
