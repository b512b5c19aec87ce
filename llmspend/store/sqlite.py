"""SQLite specifics: how a store's connections are set up, and WAL checkpoints off the
calls' path.

Every connection to a SQLite store — the engine's (:func:`install_events`) and the hot
path's own per thread (:func:`connect`) — gets the same :data:`PRAGMAS`: a busy timeout
(``LLMSPEND_SQLITE_BUSY_TIMEOUT``, :func:`busy_timeout_ms`), WAL, ``synchronous=NORMAL``
and foreign keys; the hot path's wait only :data:`LOCK_SLICE` at a time, retrying in
Python until :func:`lock_wait` runs out (so Ctrl-C is honoured at once, see
:mod:`.transactions`). They run with the driver's autocommit and ``BEGIN`` is sent explicitly,
so that a write transaction takes the lock up front (``BEGIN IMMEDIATE``) and never fails
half-way with "database is locked". :class:`Checkpointer` copies the write-ahead log back
into the database file on a background thread.

A store file llmspend creates is created 0600 whatever the umask (:func:`create_file`), so
its ``-wal`` and ``-shm`` files, which SQLite creates with the database file's mode, are
0600 too; a file that already exists keeps its mode.

``sqlite3`` is imported where a connection is opened: a kernel on PostgreSQL never loads
it, and some Pythons are built without it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from sqlalchemy import Connection, Engine, event

from .. import _process
from ..config import env_number, private_file
from .forkguard import guarded

__all__ = [
    "LOCK_SLICE",
    "LOCK_WAIT_SECONDS",
    "PRAGMAS",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Checkpointer",
    "busy_timeout_ms",
    "connect",
    "create_file",
    "file_path",
    "install_events",
    "is_busy",
    "lock_wait",
    "set_pragmas",
]

SQLITE_BUSY_TIMEOUT_MS = 30_000
LOCK_WAIT_SECONDS = 0.25
#: One wait inside SQLite (seconds); a longer wait is retried in Python between slices.
LOCK_SLICE = 0.025

PRAGMAS = (
    "PRAGMA busy_timeout = {busy}",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)

log = logging.getLogger("llmspend")


def busy_timeout_ms() -> int:
    """How long SQLite waits for a lock (``LLMSPEND_SQLITE_BUSY_TIMEOUT``, ms; default 30 s)."""
    return int(
        env_number(
            "LLMSPEND_SQLITE_BUSY_TIMEOUT", SQLITE_BUSY_TIMEOUT_MS, unit="milliseconds", whole=True
        )
    )


def lock_wait() -> float:
    """How long a call waits for a store another process holds locked before the outage
    policy applies (``LLMSPEND_LOCK_WAIT``, seconds, at most 60; default 0.25 s): hard
    budgets then fail closed and rows are journaled. Never longer than the busy timeout;
    background work and the CLI wait the busy timeout."""
    wait = env_number("LLMSPEND_LOCK_WAIT", LOCK_WAIT_SECONDS, unit="seconds", high=60)
    return min(wait, busy_timeout_ms() / 1000)


def is_busy(e: BaseException) -> bool:
    """Whether a sqlite3 error says another connection holds the lock (SQLITE_BUSY or
    SQLITE_LOCKED)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return "locked" in str(e) or "busy" in str(e)


def file_path(url: Any) -> str | None:
    """The database file of a parsed SQLite URL; ``None`` for an in-memory database or
    one named in URI form (``?uri=true``)."""
    db = url.database
    if db and db != ":memory:" and not url.query.get("uri"):
        return str(db)
    return None


def create_file(path: str) -> None:
    """Create the store file ``path`` empty and 0600 if it does not exist (SQLite takes an
    empty file for an empty database); errors are left for SQLite's own open to report."""
    with contextlib.suppress(OSError):
        private_file(path)


def set_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    """Apply :data:`PRAGMAS` to a sqlite3 connection."""
    cur = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cur.execute(pragma.format(busy=int(busy_ms)))
    finally:
        cur.close()


def install_events(engine: Engine) -> None:
    """Set up the engine's SQLite connections: :data:`PRAGMAS` on connect, and ``BEGIN``
    sent by SQLAlchemy (``BEGIN IMMEDIATE`` with the ``llmspend_immediate`` option)."""
    busy = busy_timeout_ms()
    path = file_path(engine.url)

    @event.listens_for(engine, "do_connect")
    def _on_do_connect(*_args: Any) -> None:
        if path is not None:
            create_file(path)  # private before SQLite creates it with the umask's mode

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        set_pragmas(dbapi_connection, busy)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("llmspend_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def connect(path: str, busy_ms: int) -> Any:
    """A sqlite3 connection to ``path`` set up as the engine's are, usable from any
    thread (one thread at a time). Raises ``sqlite3.Error``."""
    import sqlite3

    create_file(path)
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False
    )
    set_pragmas(conn, busy_ms)
    return conn


class Checkpointer:
    """SQLite's WAL checkpoints, run by a background thread off the calls' path.

    A checkpoint copies the write-ahead log back into the database file and fsyncs it:
    milliseconds, which SQLite's automatic checkpoint would charge to whichever call's
    commit crossed 1,000 pages (the p99 of a call). The hot path's connections turn the
    automatic checkpoint off (:meth:`take_over`) and tell this thread how many
    transactions they committed (:meth:`committed`); it checkpoints (PASSIVE: it never
    blocks a writer) every :attr:`EVERY` of them, and whatever is pending after a few
    idle seconds. Other connections of the store keep SQLite's default, and the last
    connection to close checkpoints too. A checkpointer belongs to the process that
    started it (:attr:`alive` is false in a forked child).
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

    @staticmethod
    def take_over(conn: Any) -> None:
        """Turn off the automatic checkpoint of ``conn``: a checkpointer does them."""
        conn.execute("PRAGMA wal_autocheckpoint = 0")

    def committed(self) -> None:
        self.pending += 1
        # Already set: the thread has not woken yet, and it reads ``pending`` only after
        # clearing the event, so it sees this commit too; setting again takes a lock.
        if self.pending >= self.EVERY and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        import sqlite3

        conn = None
        try:
            with guarded():  # (every use of the driver: no fork meanwhile, see forkguard)
                conn = sqlite3.connect(self.path, timeout=self.busy_ms / 1000, isolation_level=None)
            while not self._stopping:
                self._wake.wait(self.IDLE)
                self._wake.clear()
                if self.pending:
                    self.pending = 0
                    try:
                        with guarded():
                            self._checkpoint(conn)
                    except sqlite3.Error as e:  # e.g. the disk is full: try again later
                        log.debug("llmspend: background WAL checkpoint failed: %s", e)
        except sqlite3.Error as e:
            log.debug("llmspend: background WAL checkpoints cannot run: %s", e)
        finally:
            self._stopping = True
            if conn is not None:
                with contextlib.suppress(Exception), guarded():
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
