"""Opening a store: :func:`open_store` and the :class:`Store` every module uses.

:func:`open_store` turns a database URL into an engine with the right settings (SQLite:
the file's directory must exist, connections set up by :mod:`.sqlite`; PostgreSQL:
psycopg 3 with pre-ping), applies pending migrations on first use (:mod:`.migrate`), and
keeps the store per URL and process until :func:`forget_store`. Errors from deep inside
SQLAlchemy become ``ConfigError`` or ``StoreError`` messages that say what is wrong and
what to do, and every URL they show has its password hidden.

Transactions on a store are :mod:`.transactions`'s; ``upgrade``, ``current_revisions`` and
``safe_url`` are re-exported here for the rest of llmspend.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, exc

from ..errors import ConfigError, StoreError
from .migrate import current_revisions, ensure_schema, upgrade
from .sqlite import busy_timeout_ms, file_path, install_events
from .transactions import Transactions
from .urls import normalize_url, redacted, safe_url

__all__ = ["Store", "current_revisions", "forget_store", "open_store", "safe_url", "upgrade"]


class Store(Transactions):
    """An open, migrated store: one engine and the transactions every module runs on it
    (``begin``, ``tx``; see :class:`~llmspend.store.transactions.Transactions`)."""

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"


_opened: dict[str, Store] = {}
_opened_lock = threading.Lock()


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the store at ``url``; cached per URL and process."""
    with _opened_lock:
        store = _opened.get(url)
        if store is not None:
            return store
        store = _create(url)
        try:
            if migrate:
                ensure_schema(store)
        except BaseException:
            store.dispose()
            raise
        _opened[url] = store
        return store


def forget_store(url: str) -> None:
    """Drop a cached store (tests, switching stores)."""
    with _opened_lock:
        store = _opened.pop(url, None)
    if store is not None:
        store.dispose()


def _create(url: str) -> Store:
    """A store for ``url``, neither cached nor migrated."""
    try:
        return _create_engine(url)
    except (ValueError, TypeError) as e:  # e.g. a NUL byte in a path, a port that is no number
        raise ConfigError(f"bad database URL {redacted(url)!r}: {e}") from None


def _create_engine(url: str) -> Store:
    parsed = normalize_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        db = file_path(parsed)
        if db is not None:
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(
                    f"cannot open the SQLite store {db!r}: directory {str(parent)!r} does not exist"
                )
        kwargs["connect_args"] = {"timeout": busy_timeout_ms() / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except exc.NoSuchModuleError:
        raise ConfigError(
            f"unsupported database URL {safe_url(url)!r}: no SQLAlchemy dialect "
            f"{parsed.drivername!r} (PostgreSQL needs: pip install 'llmspend[postgres]')"
        ) from None
    except ImportError as e:
        raise ConfigError(
            f"the driver for {safe_url(url)!r} is not installed ({e.name or e}); for "
            "PostgreSQL: pip install 'llmspend[postgres]'"
        ) from None
    except exc.ArgumentError as e:
        raise ConfigError(f"bad database URL {safe_url(url)!r}: {e}") from None
    if engine.dialect.name == "sqlite":
        install_events(engine)
    return Store(engine, url)
