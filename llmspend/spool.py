"""A local journal for calls the store could not take, replayed exactly once.

When a call has happened but its row cannot be committed (the store is down, or SQLite
stayed locked past the call's lock wait), the row is written to
``$LLMSPEND_HOME/spool/<store>/<record_uid>.json`` (atomically: a temporary file, then a
rename) instead of being lost; its directories are created 0700 and its files 0600,
whatever the umask (:func:`~llmspend.config.private_dir`). If that write fails (the disk
is full: ``ENOSPC``, or any ``OSError``), the temporary file is removed and the row goes to
a second location on another filesystem when there is one (``/dev/shm`` or the system's
temporary directory, in a directory of this user's, 0700), and failing that it is kept in
memory, with one loud warning per session, until a replay can write it.

The spool is replayed the next time this process records a call successfully, when a
tracker opens the store, and by a background thread (:class:`Replayer`) that retries with
exponential back-off while anything is left: each row is inserted with ``ON CONFLICT (ts,
record_uid) DO NOTHING`` and only a row actually inserted updates budget counters and
rollups, so a row replayed twice (two kernels, or a crash between insert and unlink) is
still counted once. The file is removed after its transaction commits. A file that is not
such a row (damaged, edited, or of another program), or one the store refuses for its
values, is moved to ``rejected/`` beside it with one logged error: it never blocks the
rows after it, never fails ``install()``, and nothing of it reaches the store.

Spooled rows hold exactly what the store would: token counts, costs, model names,
attribution — never API keys, prompts or completions.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DataError, IntegrityError

from . import _process
from .attribution import validate_name
from .config import FILE_MODE, private_dir, resolve_home
from .errors import LLMSpendWarning
from .store.hierarchy import ensure_entities
from .usage import _INSERT_COLUMNS, insert_once

if TYPE_CHECKING:
    from .tracker import Tracker

__all__ = ["Replayer", "Spool"]

log = logging.getLogger("llmspend")

#: Where a row goes when the data directory cannot take it: the first of these on another
#: filesystem than the data directory (the last one whatever it is on).
FALLBACK_BASES = ("/dev/shm", tempfile.gettempdir())

#: Where a journaled row that cannot be replayed is moved (beside the journal's files).
REJECTED = "rejected"

_BIGINT = 2**63
_COUNTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
           "reasoning_tokens")  # fmt: skip
_AMOUNTS = ("cost_nanos", "estimate_nanos")
_FLAGS = ("streamed", "usage_estimated")
_NAMES = (("org", "org_name"), ("project", "project_name"), ("user", "user_name"))
_REQUIRED_TEXT = ("provider", "api", "model", "price_status", "status")
#: A row as the store keeps it; what a row was journaled without (by an older llmspend)
#: is ``None``.
_NULLABLE = (
    frozenset(_INSERT_COLUMNS) - {"ts", *_COUNTS, *_FLAGS, *_REQUIRED_TEXT} - {n for _, n in _NAMES}
)
_NULLABLE_TEXT = _NULLABLE - {"latency_ms", *_AMOUNTS}
#: What a row that is no call, or that the store refuses for its values, raises (never a
#: store that is down or locked: a ``StoreError`` or ``OperationalError`` leaves it for later).
_ROW_ERRORS = (ValueError, TypeError, KeyError, OverflowError, IntegrityError, DataError)


def _journaled_row(data: Any) -> dict[str, Any]:
    """The row a journal file holds, checked as :meth:`Spool.write` writes one; raises
    ``ValueError`` naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"not a row but a {type(data).__name__}")
    missing = [c for c in _INSERT_COLUMNS if c not in data and c not in _NULLABLE]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    row = {c: data.get(c) for c in _INSERT_COLUMNS}
    if not isinstance(row["ts"], str):
        raise ValueError("ts is not an ISO time")
    ts = dt.datetime.fromisoformat(row["ts"])
    if ts.tzinfo is not None:
        ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
    row["ts"] = ts
    for c in (*_COUNTS, *_AMOUNTS):
        v = row[c]
        if v is None and c in _AMOUNTS:
            continue
        if type(v) is not int or not (0 if c in _COUNTS else -_BIGINT) <= v < _BIGINT:
            raise ValueError(f"{c} is not a count the store keeps: {v!r}")
    for c in _FLAGS:
        if type(row[c]) is not bool:
            raise ValueError(f"{c} is not true or false: {row[c]!r}")
    latency = row["latency_ms"]
    if latency is not None and (
        type(latency) not in (int, float) or not 0 <= latency < float(_BIGINT)
    ):
        raise ValueError(f"latency_ms is not a duration: {latency!r}")
    for c in _INSERT_COLUMNS:
        text = c in _REQUIRED_TEXT or c in _NULLABLE_TEXT
        if text and not isinstance(row[c], str) and (row[c] is not None or c in _REQUIRED_TEXT):
            raise ValueError(f"{c} is not text: {row[c]!r}")
    for kind, c in _NAMES:
        validate_name(kind, row[c])
    return row


def _parsed(raw: bytes) -> Any:
    """A journal file's JSON; ``ValueError`` if it is none (bytes that are not UTF-8 too)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:  # "[[[[…": no row nests
        raise ValueError("JSON nested too deeply to be a row") from None


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        return str(getuid())
    import getpass

    return hashlib.sha256(getpass.getuser().encode()).hexdigest()[:12]


def _device(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return p.stat().st_dev
        except OSError:
            continue
    return None


def _ours(path: Path) -> bool:
    """Whether ``path`` is a directory of this user's that no one else may open."""
    try:
        st = path.lstat()
    except OSError:
        return False
    getuid = getattr(os, "getuid", None)
    if not os.path.isdir(path) or os.path.islink(path):
        return False
    return getuid is None or (st.st_uid == getuid() and st.st_mode & 0o077 == 0)


class Spool:
    """The journal of one store, in this user's data directory (see the module docstring)."""

    def __init__(self, database_url: str) -> None:
        self.key = hashlib.sha256(database_url.encode()).hexdigest()[:16]
        self.dir = resolve_home() / "spool" / self.key
        #: The second location (``None``: choose one when first needed).
        self.fallback: Path | None = None
        self._memory: dict[str, dict[str, Any]] = {}  # rows no file could take
        self._memory_warned = False
        self._lock = threading.Lock()
        self._pid = _process.pid

    # -- writing ---------------------------------------------------------------------------
    def write(self, row: dict[str, Any]) -> Path | None:
        """Journal ``row``: in the data directory, else the second location, else memory
        (then ``None``). Never raises ``OSError``."""
        data = dict(row)
        data["ts"] = row["ts"].isoformat()
        text = json.dumps(data, sort_keys=True).encode()
        name = f"{row['record_uid']}.json"
        errors: list[OSError] = []
        for where in (self.dir, self._second()):
            if where is None:
                continue
            try:
                return self._write_file(where, name, text)
            except OSError as e:
                errors.append(e)
                log.warning("llmspend: cannot journal a call in %s: %s", where, e)
        self._keep_in_memory(row, errors)
        return None

    @staticmethod
    def _write_file(where: Path, name: str, text: bytes) -> Path:
        """Write ``text`` to ``where/name`` atomically (0600); no temporary file is left."""
        private_dir(where)
        path = where / name
        tmp = path.with_suffix(".tmp")
        done = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                if hasattr(os, "fchmod"):  # 0600 whatever the umask (and if tmp was left over)
                    os.fchmod(fd, FILE_MODE)
                view = memoryview(text)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return path

    def _second(self) -> Path | None:
        """The second location: this user's private directory on another filesystem than
        the data directory if there is one (``None`` if none can be made)."""
        if self.fallback is not None:
            return self.fallback
        home = _device(self.dir)
        bases = [Path(b) for b in FALLBACK_BASES if os.path.isdir(b)]
        bases.sort(key=lambda b: _device(b) == home)  # another filesystem first
        for base in bases:
            mine = base / f"llmspend-{_user_tag()}"
            try:
                private_dir(mine)
            except OSError:
                continue
            if _ours(mine):  # not a directory someone else made for us
                self.fallback = mine / "spool" / self.key
                return self.fallback
        return None

    def _keep_in_memory(self, row: dict[str, Any], errors: list[OSError]) -> None:
        with self._lock:
            self._memory[row["record_uid"]] = dict(row)
            first = not self._memory_warned
            self._memory_warned = True
        reason = "; ".join(str(e) for e in errors) or "no writable location"
        log.error("llmspend: a call could not be journaled on disk (%s); kept in memory", reason)
        if first:
            warnings.warn(
                f"llmspend: calls cannot be journaled on disk ({reason}); they are kept in "
                "memory until the store or the disk can take them: they are lost if this "
                "process ends first",
                LLMSpendWarning,
                stacklevel=5,
            )

    # -- reading and replaying -------------------------------------------------------------
    def _dirs(self) -> list[Path]:
        dirs = [self.dir]
        if self.fallback is not None:
            dirs.append(self.fallback)
        else:  # rows a previous session left in a second location (of this user's)
            tag = f"llmspend-{_user_tag()}"
            mine = [Path(b) / tag for b in FALLBACK_BASES]
            dirs += [m / "spool" / self.key for m in mine if _ours(m)]
        return dirs

    def pending(self) -> list[Path]:
        """The journal's files, oldest call first (rows kept in memory: :meth:`in_memory`)."""
        found: list[Path] = []
        for d in self._dirs():
            try:
                found += d.glob("*.json")
            except OSError:
                continue
        return sorted(set(found), key=lambda p: p.name)

    def in_memory(self) -> int:
        """How many rows are kept in memory (no file could take them)."""
        if self._pid != _process.pid:  # a forked child: its parent replays them
            self._memory.clear()
            self._pid = _process.pid
        return len(self._memory)

    def backlog(self) -> int:
        """Rows waiting to be written to the store."""
        return len(self.pending()) + self.in_memory()

    def replay(self, tracker: Tracker, wait: float | None = None) -> int:
        """Insert every journaled row not yet stored (files, then rows kept in memory);
        returns how many were inserted. A write waits ``wait`` seconds for a lock. A row
        that cannot be replayed is set aside (:meth:`rejected`); a store that cannot take
        rows raises, and what is left waits for the next replay."""
        inserted = 0
        with self._lock:
            for path in self.pending():
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue  # another kernel replayed it
                except OSError as e:
                    log.error("llmspend: unreadable spool file %s left in place: %s", path, e)
                    continue
                try:
                    data = _journaled_row(_parsed(raw))
                    inserted += self._insert(tracker, data, wait)
                except _ROW_ERRORS as e:
                    self._reject(path, e)
                    continue
                path.unlink(missing_ok=True)
            self.in_memory()
            for uid, data in list(self._memory.items()):
                try:
                    inserted += self._insert(tracker, data, wait)
                except _ROW_ERRORS as e:
                    self._reject_row(data, e)
                del self._memory[uid]
            if not self._memory:
                self._memory_warned = False
        if inserted:
            log.warning("llmspend: replayed %d spooled call(s) into the store", inserted)
        return inserted

    def rejected(self) -> list[Path]:
        """Journal files set aside because they could not be replayed (kept for a look)."""
        found: list[Path] = []
        for d in self._dirs():
            try:
                found += (d / REJECTED).glob("*.json")
            except OSError:
                continue
        return sorted(found, key=lambda p: p.name)

    def _reject(self, path: Path, error: BaseException) -> None:
        """Move ``path`` aside (to ``rejected/``), saying why; it is never replayed."""
        where = path.parent / REJECTED
        try:
            private_dir(where)
            os.replace(path, where / path.name)
        except FileNotFoundError:
            return  # another kernel set it aside, or replayed it
        except OSError as e:
            log.error("llmspend: cannot set aside the spool file %s: %s", path, e)
            return
        log.error(
            "llmspend: the spool file %s is not a call this llmspend can replay (%s): moved "
            "to %s, nothing of it was written to the store",
            path.name, _why(error), where,
        )  # fmt: skip

    def _reject_row(self, row: dict[str, Any], error: BaseException) -> None:
        data = dict(row)
        data["ts"] = row["ts"].isoformat()
        name = f"{row['record_uid']}.json"
        with contextlib.suppress(OSError, TypeError, ValueError):
            self._write_file(self.dir / REJECTED, name, json.dumps(data, sort_keys=True).encode())
        log.error(
            "llmspend: a journaled call the store refuses (%s) was set aside in %s",
            _why(error), self.dir / REJECTED,
        )  # fmt: skip

    @staticmethod
    def _insert(tracker: Tracker, data: dict[str, Any], wait: float | None) -> int:
        with tracker.store.begin(write=True, wait=wait) as conn:
            ensure_entities(conn, [(data["org_name"], data["project_name"], data["user_name"])])
            if not insert_once(conn, data):
                return 0
            for hook in tracker.ingest_hooks:
                hook(conn, [data])
        return 1

    def flush_memory(self) -> int:
        """Write the rows kept in memory to files, if a location can take them now;
        returns how many are still in memory."""
        with self._lock:
            rows = list(self._memory.values())
        for row in rows:
            name = f"{row['record_uid']}.json"
            data = dict(row)
            data["ts"] = row["ts"].isoformat()
            text = json.dumps(data, sort_keys=True).encode()
            for where in (self.dir, self._second()):
                if where is None:
                    continue
                try:
                    self._write_file(where, name, text)
                except OSError:
                    continue
                with self._lock:
                    self._memory.pop(row["record_uid"], None)
                break
        return self.in_memory()


def _why(error: BaseException) -> str:
    orig = getattr(error, "orig", None)  # a driver's error, without SQLAlchemy's SQL text
    return f"{type(error).__name__}: {orig if orig is not None else error}"[:300]


_replayers: weakref.WeakSet[Replayer] = weakref.WeakSet()


class Replayer:
    """A background thread that calls ``attempt()`` — replay, returning whether anything
    is left — with exponential back-off (:attr:`FIRST` doubling to :attr:`CAP` seconds)
    while something is left; :meth:`wake` starts it or retries at once. It never runs on
    a call's path, ends when nothing is left, at :meth:`stop` and at exit; a forked child
    starts its own when woken."""

    FIRST = 1.0
    CAP = 60.0

    def __init__(self, attempt: Callable[[], bool]) -> None:
        self._attempt = attempt
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._asked = 0  # wake()s so far: one during an attempt is not missed
        self.attempts = 0  # (tests wait on it)
        _replayers.add(self)

    @property
    def running(self) -> bool:
        t = self._thread
        return t is not None and self._pid == _process.pid and t.is_alive()

    def wake(self, now: bool = True) -> None:
        """Retry now (``now=False``: when the back-off says), starting the thread if none
        runs in this process."""
        with self._lock:
            if self._stopping:
                return
            self._asked += 1
            if not self.running:
                self._pid = _process.pid
                self._wake = threading.Event()  # a fresh one (a forked child's may be stale)
                try:
                    self._thread = threading.Thread(
                        target=self._run, args=(self._wake,), name="llmspend-replay", daemon=True
                    )
                    self._thread.start()
                except RuntimeError:  # no new threads (the interpreter is shutting down)
                    self._thread = None
                    return
            if now:
                self._wake.set()

    def _run(self, wake: threading.Event) -> None:
        delay = self.FIRST
        pid = _process.pid
        while not self._stopping and pid == _process.pid:
            woken = wake.wait(delay)
            wake.clear()
            if self._stopping:
                return
            self.attempts += 1
            asked = self._asked
            try:
                left = self._attempt()
            except Exception:
                log.debug("llmspend: background replay failed", exc_info=True)
                left = True
            if not left:
                with self._lock:
                    if asked == self._asked:  # nothing new meanwhile: done
                        self._thread = None
                        return
            delay = self.FIRST if woken else min(delay * 2, self.CAP)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (after the attempt it is in, if any)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            self._thread = None
            self._wake.set()
        ours = thread is not None and self._pid == _process.pid
        if ours and thread is not threading.current_thread():
            thread.join(timeout)  # type: ignore[union-attr]

    def restart(self) -> None:
        """Allow :meth:`wake` again after :meth:`stop`."""
        with self._lock:
            self._stopping = False


@atexit.register
def _stop_at_exit() -> None:
    for replayer in list(_replayers):
        replayer.stop(timeout=2.0)
