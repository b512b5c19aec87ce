"""Transactions on a store: SQLAlchemy's for most work, plain DBAPI for the per-call path.

:meth:`Transactions.begin` yields a SQLAlchemy ``Connection`` in a transaction;
``write=True`` takes SQLite's write lock at ``BEGIN IMMEDIATE``. :meth:`Transactions.tx`
yields a :class:`~llmspend.store.fastsql.Tx` straight on a DBAPI connection, without
SQLAlchemy's checkout and events, which cost more than a call's statements.

On a SQLite file store each thread keeps a connection of its own for :meth:`tx` (opened
as the engine's are, in :func:`.sqlite.connect`; a forked child opens its own; one broken
by a driver error is dropped). Its transactions are numbered (``serial``) and it knows
which one last committed a write (``committed``); a ``Tx`` whose predecessor on the
connection committed a write gets that number as ``Tx.follows``. Together with ``PRAGMA
data_version``, which changes only when *another* connection commits, this proves that
nothing was written since: the connection's memo (``Tx.memo``) stays true, and a
standing hold (``llmspend.budgets``) is still there as its settlement left it.
:meth:`Transactions.thread_memo` and :meth:`Transactions.thread_data_version` answer
that check before a call without opening a transaction. These connections leave WAL
checkpoints to a :class:`.sqlite.Checkpointer` thread and tell it of each write commit.

**A locked store.** The per-call path waits at most :attr:`Transactions.lock_wait`
(``LLMSPEND_LOCK_WAIT``) for another process's write lock: its connections wait
:data:`.sqlite.LOCK_SLICE` at a time inside SQLite, and ``BEGIN IMMEDIATE`` is retried in
Python between slices, so a Ctrl-C is raised within a slice. Then the driver's "database is
locked" comes out (and the caller applies the outage policy). ``tx(wait=...)`` and
``begin(wait=...)`` choose another wait; ``begin`` waits the busy timeout by default, taking
the write lock a slice at a time too (a magic's Ctrl-C is honoured at once).

Driver errors come out as SQLAlchemy's (``sqlalchemy.exc.OperationalError`` and
friends) from both paths; a store that cannot be reached raises ``StoreError``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, exc

from .. import _process
from ..errors import StoreError
from .fastsql import Tx, data_version
from .forkguard import GUARD
from .sqlite import (
    LOCK_SLICE,
    Checkpointer,
    busy_timeout_ms,
    connect,
    file_path,
    is_busy,
    lock_wait,
)
from .urls import reason, safe_url

__all__ = ["Transactions", "TxScope"]

log = logging.getLogger("llmspend")


class _Direct:
    """A thread's own SQLite connection for the hot path (weakly tracked for dispose)."""

    __slots__ = ("__weakref__", "busy", "committed", "conn", "memo", "pid", "serial")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = _process.pid
        self.busy = False
        self.memo: dict[Any, Any] = {}  # see Tx.memo
        self.serial = 0  # transactions begun on it
        self.committed = -1  # the serial of the last write transaction it committed


class TxScope:
    """The context manager of :meth:`Transactions.tx` (a class: it runs on every call)."""

    __slots__ = ("autocommit", "dbapi", "direct", "ended", "store", "tx", "wait", "write")

    def __init__(self, store: Transactions, write: bool, wait: float | None) -> None:
        self.store = store
        self.write = write
        self.wait = wait
        self.direct: _Direct | None = None
        self.dbapi: Any = None
        self.tx: Tx | None = None
        self.ended = False
        self.autocommit: Any = None  # a pooled connection switched to autocommit (a read)

    def __enter__(self) -> Tx:
        GUARD.enter()  # no fork while this thread is in the driver (see forkguard)
        try:
            return self._begin()
        except BaseException:
            if not self.ended:
                self.ended = True
                GUARD.exit()
            raise

    def _begin(self) -> Tx:
        store = self.store
        dialect = store.engine.dialect
        direct = store._direct() if store._sqlite_path is not None else None
        serial = follows = None
        if direct is None:
            try:
                self.dbapi = store.engine.raw_connection()
            except (exc.OperationalError, dialect.loaded_dbapi.OperationalError) as e:
                raise StoreError(
                    f"cannot reach the store {safe_url(store.url)}: {reason(e)}"
                ) from e
        else:
            self.direct, self.dbapi = direct, direct.conn
            direct.busy = True
            follows = direct.committed if direct.committed == direct.serial else None
            direct.serial = serial = direct.serial + 1
        try:
            if direct is None and not self.write and not store.is_sqlite:
                self.autocommit = self.dbapi.driver_connection  # no BEGIN, no COMMIT trip
                self.autocommit.autocommit = True
            if self.write and store.is_sqlite:
                try:
                    self.dbapi.execute("BEGIN IMMEDIATE")
                except dialect.loaded_dbapi.OperationalError as e:
                    if direct is None or not is_busy(e):
                        raise
                    self._wait_for_lock(e)
        except BaseException as e:
            self.__exit__(type(e), e, None)  # raises driver errors as SQLAlchemy's
            raise
        memo = None if direct is None else direct.memo
        self.tx = Tx(self.dbapi, dialect, memo, serial, follows)
        return self.tx

    def _wait_for_lock(self, busy: Exception) -> None:
        """``BEGIN IMMEDIATE`` again, a slice at a time, until the lock is had or the wait
        runs out with no progress (then ``busy`` is raised). The first attempt waited one
        slice already. Other connections committing meanwhile (``PRAGMA data_version``
        moves: a busy store, not a stuck one) start the wait again, up to the busy
        timeout in all."""
        wait = self.store.lock_wait if self.wait is None else self.wait
        start = time.monotonic()
        deadline, limit = start + wait - LOCK_SLICE, start + self.store.busy_wait
        if start >= deadline:
            raise busy
        log.debug("llmspend: the store is locked by another connection; waiting %.2f s", wait)
        version = self._version()
        while True:
            try:
                self.dbapi.execute("BEGIN IMMEDIATE")
                return
            except Exception as e:
                if not is_busy(e):
                    raise
                now = time.monotonic()  # (between slices Python runs Ctrl-C's handler)
                if now >= deadline:
                    seen = self._version()
                    if seen is None or seen == version or now >= limit:
                        raise
                    version, deadline = seen, now + wait

    def _version(self) -> int | None:
        try:
            return data_version(self.dbapi)
        except Exception:
            return None

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        direct = self.direct
        try:
            if error is None:
                try:
                    if self.write or direct is None:  # a direct read ran in autocommit
                        self.dbapi.commit()
                except BaseException as e:
                    self._failed(e)
                    raise
                if direct is not None and self.write:
                    if self.tx is not None and self.tx.serial is not None:  # not rolled back
                        direct.committed = direct.serial
                    self.store._committed()
            else:
                self._failed(error)
        finally:
            if direct is not None:
                direct.busy = False
            else:
                self._close_pooled()
            if not self.ended:
                self.ended = True
                GUARD.exit()

    def _failed(self, e: BaseException) -> None:
        """Roll back; a driver error is raised again as SQLAlchemy's (a broken SQLite
        connection of the thread's own is dropped, a broken pooled one invalidated)."""
        store, direct = self.store, self.direct
        with contextlib.suppress(Exception):
            self.dbapi.rollback()
        driver = store.engine.dialect.loaded_dbapi
        if not isinstance(e, driver.Error):
            return
        if isinstance(e, driver.OperationalError | driver.InterfaceError):
            if direct is not None:
                direct.busy = False
                store._drop_direct(direct)
                self.direct = None
                self.dbapi = None  # nothing to give back to the pool
            else:
                with contextlib.suppress(Exception):
                    self.dbapi.invalidate()
        raise exc.DBAPIError.instance(
            None, None, e, driver.Error, dialect=store.engine.dialect
        ) from e

    def _close_pooled(self) -> None:
        if self.autocommit is not None:
            with contextlib.suppress(Exception):
                self.autocommit.autocommit = False  # as the pool's other users expect it
            self.autocommit = None
        if self.dbapi is not None:
            with contextlib.suppress(Exception):
                self.dbapi.close()  # back to the pool


class Transactions:
    """An engine and the ways to run a transaction on it (the base of ``Store``)."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        # The hot path's SQLite connections, one per thread, opened like the engine's.
        self._sqlite_path: str | None = file_path(engine.url) if self.is_sqlite else None
        self._busy_ms = busy_timeout_ms()  # as the engine's connections got it
        #: Seconds the per-call path waits for a locked store (see the module docstring).
        self.lock_wait = lock_wait() if self.is_sqlite else 0.0
        self.busy_wait = self._busy_ms / 1000  # what background work may wait
        self._local = threading.local()
        self._directs: weakref.WeakSet[_Direct] = weakref.WeakSet()
        self._directs_lock = threading.Lock()
        self._checkpointer: Checkpointer | None = None

    @contextlib.contextmanager
    def begin(self, *, write: bool = False, wait: float | None = None) -> Iterator[Connection]:
        """A transaction. ``write=True`` takes SQLite's write lock at BEGIN, waiting the
        busy timeout for it, or ``wait`` seconds, a slice at a time (Ctrl-C is raised
        between slices); the transaction's statements wait as long."""
        GUARD.enter()  # no fork while this thread is in the driver (see forkguard)
        try:
            try:
                conn = self.engine.connect()
            except exc.OperationalError as e:
                raise StoreError(f"cannot reach the store {safe_url(self.url)}: {reason(e)}") from e
            with conn:
                raw: Any = None
                lock = write and self.is_sqlite
                if self.is_sqlite and (wait is not None or lock):
                    raw = conn.connection.driver_connection
                if wait is None:
                    wait = self._busy_ms / 1000
                try:
                    if lock:
                        conn = conn.execution_options(llmspend_immediate=True)
                        began = self._lock(conn, raw, wait)
                    else:
                        if raw is not None:
                            raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                        began = conn.begin()
                    with began:
                        yield conn
                finally:
                    if raw is not None:
                        with contextlib.suppress(Exception):
                            raw.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
        finally:
            GUARD.exit()

    @staticmethod
    def _lock(conn: Connection, raw: Any, wait: float) -> Any:
        """``conn.begin()`` (``BEGIN IMMEDIATE``) again, :data:`.sqlite.LOCK_SLICE` at a
        time inside SQLite, until the lock is had or ``wait`` seconds have passed (then the
        driver's "database is locked" comes out, as SQLAlchemy's). Between slices Python
        runs Ctrl-C's handler. The transaction's statements then wait ``wait`` seconds."""
        slice_s = min(wait, LOCK_SLICE)
        raw.execute(f"PRAGMA busy_timeout = {int(slice_s * 1000)}")
        deadline = time.monotonic() + wait
        waiting = False
        while True:
            try:
                began = conn.begin()
                break
            except exc.OperationalError as e:
                if e.orig is None or not is_busy(e.orig) or time.monotonic() >= deadline:
                    raise
                if not waiting:
                    waiting = True
                    log.debug("llmspend: waiting up to %.2f s for another connection's lock", wait)
        raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        return began

    def tx(self, *, write: bool = False, wait: float | None = None) -> TxScope:
        """A transaction straight on a DBAPI connection: the per-call hot path.

        SQLite uses a connection of the thread's own (opened with the engine's settings,
        kept for the next call); ``write=True`` takes the write lock at ``BEGIN
        IMMEDIATE``, and without it statements run in autocommit (a lone SELECT needs no
        BEGIN/COMMIT). PostgreSQL checks a connection out of the engine's pool; without
        ``write`` it runs in autocommit too (each statement its own transaction, as a lone
        statement on SQLite: no BEGIN or COMMIT round trip). Commits on
        success, rolls back on any exception; driver errors come out as SQLAlchemy's
        (``sqlalchemy.exc.OperationalError`` and friends), like the rest of the store.
        A write waits at most :attr:`lock_wait` (or ``wait`` seconds) for another
        process's lock. Used as ``with store.tx(write=True) as tx:``.
        """
        return TxScope(self, write, wait)

    def thread_memo(self) -> dict[Any, Any] | None:
        """The memo of this thread's own SQLite connection (see ``Tx.memo``), if it has
        one and is not in a transaction; opens nothing."""
        d: _Direct | None = getattr(self._local, "d", None)
        if d is None or d.busy or d.pid != _process.pid:
            return None
        return d.memo

    def thread_data_version(self) -> int | None:
        """``PRAGMA data_version`` on this thread's own SQLite connection (see
        ``Tx.data_version``); ``None`` if it has none free or the read fails (whatever
        runs next on the store meets the failure and reports it)."""
        d: _Direct | None = getattr(self._local, "d", None)
        if d is None or d.busy or d.pid != _process.pid:
            return None
        try:
            return data_version(d.conn)
        except Exception:
            return None

    def _direct(self) -> _Direct | None:
        """This thread's SQLite connection (``None`` when it is in use: nested use)."""
        d: _Direct | None = getattr(self._local, "d", None)
        if d is not None and d.pid == _process.pid:
            return None if d.busy else d
        import sqlite3  # see llmspend.store.sqlite: only SQLite stores load it

        try:
            slice_ms = min(self._busy_ms, LOCK_SLICE * 1000)  # see _wait_for_lock
            conn = connect(self._sqlite_path, slice_ms)  # type: ignore[arg-type]
            if self._checkpoints():  # checkpoints in the background, not in our commits
                Checkpointer.take_over(conn)
        except sqlite3.Error as e:
            raise StoreError(f"cannot reach the store {safe_url(self.url)}: {e}") from e
        d = self._local.d = _Direct(conn)
        with self._directs_lock:
            self._directs.add(d)
        return d

    def _checkpoints(self) -> bool:
        """This process's background checkpointer, started if needed; False if it cannot
        run (then the connection keeps SQLite's automatic checkpoint)."""
        with self._directs_lock:
            ck = self._checkpointer
            if ck is None or not ck.alive:
                try:
                    ck = self._checkpointer = Checkpointer(
                        self._sqlite_path,  # type: ignore[arg-type]
                        self._busy_ms,
                    )
                except RuntimeError:  # no new threads (the interpreter is shutting down)
                    self._checkpointer = None
                    return False
            return True

    def _committed(self) -> None:
        ck = self._checkpointer
        if ck is not None and ck.alive:
            ck.committed()
        elif self._checkpoints() and self._checkpointer is not None:  # it stopped: restart
            self._checkpointer.committed()

    def _drop_direct(self, d: _Direct) -> None:
        if getattr(self._local, "d", None) is d:
            del self._local.d
        with contextlib.suppress(Exception):
            d.conn.close()

    def dispose(self) -> None:
        """Close every connection (the threads' own, the pool's) and stop the
        checkpointer; the store opens new ones when used again."""
        with self._directs_lock:
            directs = list(self._directs)
            self._directs.clear()
        for d in directs:
            if d.pid == _process.pid:
                with contextlib.suppress(Exception):
                    d.conn.close()
        self._local = threading.local()
        ck, self._checkpointer = self._checkpointer, None
        if ck is not None:
            ck.stop()
        self.engine.dispose()
