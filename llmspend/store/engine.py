"""Opening a store: engines with the right settings, migrations applied on first use.

SQLite gets WAL, a busy timeout, foreign keys and ``synchronous=NORMAL``; SQLAlchemy
emits ``BEGIN`` itself so that write transactions can take the lock up front
(``BEGIN IMMEDIATE``) and never fail half-way with "database is locked". PostgreSQL goes
through psycopg 3. Errors from deep inside SQLAlchemy are turned into ``StoreError``\\s
that say what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url

from .. import _process
from ..errors import ConfigError, SchemaTooNewError, StoreError
from .fastsql import Tx, data_version

__all__ = ["Store", "current_revisions", "forget_store", "open_store", "safe_url", "upgrade"]

SQLITE_BUSY_TIMEOUT_MS = 30_000

log = logging.getLogger("llmspend")


def _busy_timeout_ms() -> int:
    """How long SQLite waits for a lock (``LLMSPEND_SQLITE_BUSY_TIMEOUT``, ms; default 30 s)."""
    raw = os.environ.get("LLMSPEND_SQLITE_BUSY_TIMEOUT")
    if not raw:
        return SQLITE_BUSY_TIMEOUT_MS
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"LLMSPEND_SQLITE_BUSY_TIMEOUT must be milliseconds, got {raw!r}"
        ) from None
    if value < 0:
        raise ConfigError(f"LLMSPEND_SQLITE_BUSY_TIMEOUT must be >= 0, got {raw!r}")
    return value


_MIGRATIONS = Path(__file__).with_name("migrations")
_VERSION_TABLE = "llmspend_alembic_version"
_PG_MIGRATION_LOCK = 0x11A5E9D  # advisory lock key serializing migrations across kernels


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _redacted(url: str) -> str:
    """The URL for a message, password hidden even when it does not parse."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def _normalize_url(url: str) -> Any:
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError, TypeError):
        raise ConfigError(
            f"not a database URL: {_redacted(url)!r} (expected e.g. "
            "'sqlite:///path/to/llmspend.sqlite' or 'postgresql://user@host/db')"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout = {busy}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)


def _sqlite_events(engine: Engine) -> None:
    busy = _busy_timeout_ms()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                cur.execute(pragma.format(busy=int(busy)))
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("llmspend_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class _Checkpointer:
    """SQLite's WAL checkpoints, run by a background thread off the calls' path.

    A checkpoint copies the write-ahead log back into the database file and fsyncs it:
    milliseconds, which SQLite's automatic checkpoint would charge to whichever call's
    commit crossed 1,000 pages (the p99 of a call). The hot path's connections turn the
    automatic checkpoint off and tell this thread how many transactions they committed;
    it checkpoints (PASSIVE: it never blocks a writer) every :attr:`EVERY` of them, and
    whatever is pending after a few idle seconds. Other connections of the store keep
    SQLite's default, and the last connection to close checkpoints too.
    """

    EVERY = 64  # write transactions between checkpoints (≈ 1,000 WAL pages of calls)
    IDLE = 2.0  # seconds
    LOG_LIMIT = 4000  # frames (pages, ≈ 16 MB) in the log after a checkpoint: then RESTART
    RESTART_WAIT_MS = 100

    def __init__(self, path: str, busy_ms: int) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.pending = 0
        self._wake = threading.Event()
        self._stopping = False
        self.pid = _process.pid
        self._thread = threading.Thread(target=self._run, name="llmspend-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self.pending += 1
        if self.pending >= self.EVERY:
            self._wake.set()

    def _run(self) -> None:
        import sqlite3

        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_ms / 1000, isolation_level=None)
            while not self._stopping:
                self._wake.wait(self.IDLE)
                self._wake.clear()
                if self.pending:
                    self.pending = 0
                    try:
                        self._checkpoint(conn)
                    except sqlite3.Error as e:  # e.g. the disk is full: try again later
                        log.debug("llmspend: background WAL checkpoint failed: %s", e)
        except sqlite3.Error as e:
            log.debug("llmspend: background WAL checkpoints cannot run: %s", e)
        finally:
            self._stopping = True
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    conn.close()

    def _checkpoint(self, conn: Any) -> None:
        """PASSIVE, and RESTART when the log has grown past :attr:`LOG_LIMIT` frames.

        SQLite starts writing the log from its beginning again only when a transaction
        begins with every frame copied back; under back-to-back writes a checkpoint that
        runs beside them never quite catches up, so the log would grow without end. A
        RESTART checkpoint holds writers back until it is done (here at most
        :attr:`RESTART_WAIT_MS` waiting for them, then it tries again next time), and the
        next transaction starts the log afresh. Calls seconds apart, as in a notebook,
        never need it; back-to-back calls meet it once every few hundred calls.
        """
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.LOG_LIMIT:
            conn.execute(f"PRAGMA busy_timeout = {int(self.RESTART_WAIT_MS)}")
            try:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_ms)}")

    @property
    def alive(self) -> bool:
        return not self._stopping and self.pid == _process.pid

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self.pid == _process.pid and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


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


class _TxScope:
    """The context manager of :meth:`Store.tx` (a class: it runs on every call)."""

    __slots__ = ("dbapi", "direct", "store", "tx", "write")

    def __init__(self, store: Store, write: bool) -> None:
        self.store = store
        self.write = write
        self.direct: _Direct | None = None
        self.dbapi: Any = None
        self.tx: Tx | None = None

    def __enter__(self) -> Tx:
        store = self.store
        dialect = store.engine.dialect
        direct = store._direct() if store._sqlite_path is not None else None
        serial = follows = None
        if direct is None:
            try:
                self.dbapi = store.engine.raw_connection()
            except (exc.OperationalError, dialect.loaded_dbapi.OperationalError) as e:
                raise StoreError(
                    f"cannot reach the store {safe_url(store.url)}: {_reason(e)}"
                ) from e
        else:
            self.direct, self.dbapi = direct, direct.conn
            direct.busy = True
            follows = direct.committed if direct.committed == direct.serial else None
            direct.serial = serial = direct.serial + 1
        try:
            if self.write and store.is_sqlite:
                self.dbapi.execute("BEGIN IMMEDIATE")
        except BaseException as e:
            self.__exit__(type(e), e, None)  # raises driver errors as SQLAlchemy's
            raise
        memo = None if direct is None else direct.memo
        self.tx = Tx(self.dbapi, dialect, memo, serial, follows)
        return self.tx

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
        if self.dbapi is not None:
            with contextlib.suppress(Exception):
                self.dbapi.close()  # back to the pool


class Store:
    """An open, migrated store: one engine and the helpers every module uses."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url
        self.dialect = engine.dialect.name
        self.is_sqlite = self.dialect == "sqlite"
        # The hot path's SQLite connections, one per thread, opened like the engine's.
        db = engine.url.database
        self._sqlite_path: str | None = None
        if self.is_sqlite and db and db != ":memory:" and not engine.url.query.get("uri"):
            self._sqlite_path = db
            self._busy_ms = _busy_timeout_ms()  # as the engine's connections got it
        self._local = threading.local()
        self._directs: weakref.WeakSet[_Direct] = weakref.WeakSet()
        self._directs_lock = threading.Lock()
        self._checkpointer: _Checkpointer | None = None

    def __repr__(self) -> str:
        return f"Store({safe_url(self.url)!r})"

    @contextlib.contextmanager
    def begin(self, *, write: bool = False) -> Iterator[Connection]:
        """A transaction. ``write=True`` takes SQLite's write lock at BEGIN."""
        try:
            conn = self.engine.connect()
        except exc.OperationalError as e:
            raise StoreError(f"cannot reach the store {safe_url(self.url)}: {_reason(e)}") from e
        with conn:
            if write and self.is_sqlite:
                conn = conn.execution_options(llmspend_immediate=True)
            with conn.begin():
                yield conn

    def tx(self, *, write: bool = False) -> _TxScope:
        """A transaction straight on a DBAPI connection: the per-call hot path.

        SQLite uses a connection of the thread's own (opened with the engine's settings,
        kept for the next call); ``write=True`` takes the write lock at ``BEGIN
        IMMEDIATE``, and without it statements run in autocommit (a lone SELECT needs no
        BEGIN/COMMIT). PostgreSQL checks a connection out of the engine's pool. Commits on
        success, rolls back on any exception; driver errors come out as SQLAlchemy's
        (``sqlalchemy.exc.OperationalError`` and friends), like the rest of the store.
        Used as ``with store.tx(write=True) as tx:``.
        """
        return _TxScope(self, write)

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
        import sqlite3

        try:
            conn = sqlite3.connect(
                self._sqlite_path,  # type: ignore[arg-type]
                timeout=self._busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            for pragma in _SQLITE_PRAGMAS:
                conn.execute(pragma.format(busy=self._busy_ms))
            if self._checkpoints():  # checkpoints in the background, not in our commits
                conn.execute("PRAGMA wal_autocheckpoint = 0")
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
                    ck = self._checkpointer = _Checkpointer(
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


def _reason(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return str(orig or e).strip().splitlines()[0] if str(orig or e).strip() else type(e).__name__


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _script_heads() -> tuple[set[str], set[str]]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_MIGRATIONS), version_locations=[str(_MIGRATIONS / "versions")])
    known = {rev.revision for rev in script.walk_revisions()}
    return set(script.get_heads()), known


def _current_revisions(conn: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(conn, opts={"version_table": _VERSION_TABLE})
    return set(ctx.get_current_heads())


def upgrade(store: Store) -> list[str]:
    """Apply pending migrations (idempotent; safe with many kernels). Returns new heads."""
    from alembic import command

    heads, known = _script_heads()
    with store.begin(write=True) as conn:
        if store.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        current = _current_revisions(conn)
        unknown = current - known
        if unknown:
            raise SchemaTooNewError(
                f"the store {safe_url(store.url)} has schema revision "
                f"{', '.join(sorted(unknown))}, which this llmspend does not know: it was "
                "migrated by a newer llmspend. Upgrade llmspend (pip install -U llmspend)."
            )
        if current != heads:
            command.upgrade(_alembic_config(conn), "heads")
    return sorted(heads)


def current_revisions(store: Store) -> list[str]:
    """The schema revisions recorded in the store (empty for a new database)."""
    try:
        with store.engine.connect() as conn:
            return sorted(_current_revisions(conn))
    except exc.DBAPIError as e:
        raise StoreError(f"cannot read the store {safe_url(store.url)}: {_reason(e)}") from None


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
                _ensure_schema(store)
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
    try:
        return _create_engine(url)
    except (ValueError, TypeError) as e:  # e.g. a NUL byte in a path, a port that is no number
        raise ConfigError(f"bad database URL {_redacted(url)!r}: {e}") from None


def _create_engine(url: str) -> Store:
    parsed = _normalize_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not parsed.query.get("uri"):
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(
                    f"cannot open the SQLite store {db!r}: directory {str(parent)!r} does not exist"
                )
        kwargs["connect_args"] = {"timeout": _busy_timeout_ms() / 1000}
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
        _sqlite_events(engine)
    return Store(engine, url)


def _ensure_schema(store: Store) -> None:
    heads, known = _script_heads()
    try:
        with store.engine.connect() as conn:
            current = _current_revisions(conn)
            conn.rollback()
    except exc.OperationalError as e:
        raise StoreError(f"cannot open the store {safe_url(store.url)}: {_reason(e)}") from None
    except exc.DBAPIError as e:
        raise StoreError(f"cannot read the store {safe_url(store.url)}: {_reason(e)}") from None
    except (ValueError, TypeError) as e:  # driver options that are not what they should be
        raise ConfigError(f"bad database URL {_redacted(store.url)!r}: {e}") from None
    if current - known:
        raise SchemaTooNewError(
            f"the store {safe_url(store.url)} has schema revision "
            f"{', '.join(sorted(current - known))}, which this llmspend does not know: it was "
            "migrated by a newer llmspend. Upgrade llmspend (pip install -U llmspend)."
        )
    if current != heads:
        try:
            upgrade(store)
        except exc.OperationalError as e:
            raise StoreError(
                f"cannot migrate the store {safe_url(store.url)}: {_reason(e)}"
            ) from None
