"""Opening a store: :func:`open_store` and the :class:`Store` every module uses.

:func:`open_store` turns a database URL into an engine with the right settings (SQLite:
the file's directory must exist, connections set up by :mod:`.sqlite`; PostgreSQL:
psycopg 3 with pre-ping, or with ``ping_idle`` only a connection idle that long pinged),
applies pending migrations on first use (:mod:`.migrate`), and
keeps the store per URL and process until :func:`forget_store`. Errors from deep inside
SQLAlchemy become ``ConfigError`` or ``StoreError`` messages that say what is wrong and
what to do, and every URL they show has its password hidden.

A SQLite store is checked for damage as it opens (:func:`.health.check_on_open`) and
whenever SQLite says "malformed" or "not a database" through ``begin``/``tx``. A damaged
store is *quarantined*: it still opens (so a tracker on it spools its calls), but every
transaction on it raises ``StoreCorrupted`` — naming the file and ``llmspend db recover``
— and nothing more is written into the file, until the file is replaced by a recovered
one (another inode at its path: then the store reopens on it).

Transactions on a store are :mod:`.transactions`'s; ``upgrade``, ``current_revisions`` and
``safe_url`` are re-exported here for the rest of llmspend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, exc

from ..errors import ConfigError, StoreCorrupted, StoreError
from ..extras import POSTGRES, require_extra
from .health import (
    check_file,
    check_in_child,
    check_on_open,
    describe,
    file_identity,
    is_corruption,
)
from .migrate import current_revisions, ensure_schema, upgrade
from .sqlite import busy_timeout_ms, file_path, install_events
from .transactions import Transactions, TxScope
from .urls import normalize_url, redacted, safe_url

__all__ = ["Store", "current_revisions", "forget_store", "open_store", "safe_url", "upgrade"]


class Store(Transactions):
    """An open, migrated store: one engine and the transactions every module runs on it
    (``begin``, ``tx``; see :class:`~llmspend.store.transactions.Transactions`)."""

    corruption: str | None = None  # what quick_check found, while quarantined
    checking: threading.Thread | None = None  # a large file's quick_check, running
    _corrupt_inode: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    @contextlib.contextmanager
    def begin(self, *, write: bool = False, **kw: Any) -> Iterator[Connection]:
        """A transaction (see ``Transactions.begin``); ``StoreCorrupted`` on a damaged file."""
        if self.corruption is not None:
            self._quarantined()
        try:
            with super().begin(write=write, **kw) as conn:
                yield conn
        except Exception as e:  # SQLAlchemy's, or the driver's from a raw cursor
            if isinstance(e, StoreCorrupted) or not is_corruption(e):
                raise
            raise self.corrupted(e) from e

    def tx(self, *, write: bool = False, wait: float | None = None) -> TxScope:
        """The per-call transaction (see ``Transactions.tx``); ``StoreCorrupted`` on a
        damaged file."""
        if self.corruption is not None:
            self._quarantined()
        return _CheckedScope(self, write, wait)

    @property
    def path(self) -> str | None:
        """The SQLite file of the store (``None`` for PostgreSQL or in-memory SQLite)."""
        return self._sqlite_path

    def quarantine(self, detail: str) -> None:
        """Mark the store damaged: every transaction raises ``StoreCorrupted`` from now on,
        until the file at its path is replaced."""
        ident = file_identity(self._sqlite_path) if self._sqlite_path else None
        self._corrupt_inode = ident[:2] if ident else None
        self.corruption = detail
        log.warning("llmspend: %s", StoreCorrupted(str(self._sqlite_path), detail))

    def corrupted(self, e: BaseException) -> StoreCorrupted:
        """The error for a driver error that says the file is damaged; quarantines the
        store when ``quick_check`` agrees."""
        path = str(self._sqlite_path or safe_url(self.url))
        if self.corruption is None and self._sqlite_path is not None:
            found = check_file(self._sqlite_path, limit=1)
            if found:
                self.quarantine(found[0])
        return StoreCorrupted(path, self.corruption or describe(e))

    def _quarantined(self) -> None:
        """Raise ``StoreCorrupted``, unless the damaged file was replaced (recovered): then
        close every connection to the old one and check the new one."""
        path = self._sqlite_path
        ident = file_identity(path) if path else None
        if ident is None or ident[:2] == self._corrupt_inode:
            raise StoreCorrupted(str(path), str(self.corruption))
        with _heal_lock:
            if self.corruption is not None and ident[:2] != self._corrupt_inode:
                self.dispose()
                found = check_file(path, limit=1)  # type: ignore[arg-type]
                if found:
                    self.quarantine(found[0])
                else:
                    self.corruption = self._corrupt_inode = None
                    log.warning("llmspend: the store %s was replaced; using it again", path)
        if self.corruption is not None:
            raise StoreCorrupted(str(path), self.corruption)


class _CheckedScope(TxScope):
    """``TxScope`` raising ``StoreCorrupted`` for a damaged file (only its error path differs)."""

    __slots__ = ()

    def _failed(self, e: BaseException) -> None:
        try:
            super()._failed(e)
        except exc.DBAPIError as d:
            if not is_corruption(d):
                raise
            raise self.store.corrupted(d) from d  # type: ignore[attr-defined]


log = logging.getLogger("llmspend")

_opened: dict[str, Store] = {}
_opened_lock = threading.Lock()
_heal_lock = threading.Lock()  # a quarantined store looking at its replaced file


def open_store(url: str, *, migrate: bool = True, ping_idle: float | None = None) -> Store:
    """Open (and by default migrate) the store at ``url``; cached per URL and process.

    A damaged SQLite file opens quarantined (see the module's docstring), unmigrated.
    ``ping_idle`` (PostgreSQL, when this call opens the store): ping a pooled connection
    on checkout only when it was idle that many seconds, instead of on every checkout (a
    round trip per transaction; the gateway's choice).
    """
    with _opened_lock:
        store = _opened.get(url)
        if store is not None:
            return store
        store = _create(url, ping_idle)
        try:
            if store.path and os.path.isdir(store.path):  # no damage to recover from
                raise StoreError(
                    f"the store {safe_url(url)} names a directory, not a SQLite file; "
                    "name a file in it (e.g. sqlite:///DIR/llmspend.sqlite)"
                )
            problem, later = check_on_open(store.path) if store.path else (None, False)
            if later:
                _check_later(store)
            if problem is not None:
                store.quarantine(problem)
            elif migrate:
                try:
                    ensure_schema(store)
                except StoreCorrupted as e:
                    store.quarantine(e.detail)
        except BaseException:
            store.dispose()
            raise
        _opened[url] = store
        return store


def _check_later(store: Store) -> None:
    """``quick_check`` a large store file in a child process, watched from a thread
    (seconds of work: in this process it would hold off every fork meanwhile, see
    :mod:`.forkguard`); the store is quarantined if the file is damaged."""

    def run() -> None:
        try:
            problem = check_in_child(store.path)  # type: ignore[arg-type]
        except Exception:  # never break anything for a check
            log.debug("llmspend: background quick_check failed", exc_info=True)
            return
        if problem is not None and store.corruption is None:
            store.quarantine(problem)

    thread = threading.Thread(target=run, name="llmspend-quick-check", daemon=True)
    with contextlib.suppress(RuntimeError):  # no new threads at interpreter shutdown
        thread.start()
        store.checking = thread


def forget_store(url: str) -> None:
    """Drop a cached store (tests, switching stores)."""
    with _opened_lock:
        store = _opened.pop(url, None)
    if store is not None:
        store.dispose()


def _create(url: str, ping_idle: float | None = None) -> Store:
    """A store for ``url``, neither cached nor migrated."""
    try:
        return _create_engine(url, ping_idle)
    except (ValueError, TypeError) as e:  # e.g. a NUL byte in a path, a port that is no number
        raise ConfigError(f"bad database URL {redacted(url)!r}: {e}") from None


def _create_engine(url: str, ping_idle: float | None = None) -> Store:
    parsed = normalize_url(url)
    if parsed.drivername == "postgresql+psycopg":
        require_extra("a PostgreSQL store", *POSTGRES)
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
        kwargs["pool_pre_ping"] = ping_idle is None
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
    elif ping_idle is not None:
        _ping_when_idle(engine, ping_idle)
    return Store(engine, url)


def _ping_when_idle(engine: Any, seconds: float) -> None:
    """Ping a pooled connection on checkout only if it was idle over ``seconds``; a dead
    one is replaced (SQLAlchemy retries the checkout on ``DisconnectionError``)."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("llmspend_checkin", 0.0) <= seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            raise exc.DisconnectionError(str(e)) from e

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["llmspend_checkin"] = time.monotonic()
