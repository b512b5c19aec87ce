"""Leases, and the heartbeat that keeps a live call's lease from running out.

A hold (:mod:`.holds`) has a lease (``LLMSPEND_LEASE_SECONDS``, default 600 s): when it
runs out, another process may reclaim the hold, as it must for a kernel that died
mid-call. A call that is still running must not lose its hold that way, however long it
takes, so every hold this process makes is *tracked* here until it is settled or given
back, and one daemon thread per process (started when the first hold is tracked, ended
when none is left) renews them every ``lease / 3`` seconds: one ``UPDATE`` per store per
beat, in a transaction of its own, off the calls' path. A store that fails a beat is
logged and tried again at the next beat (two beats may fail before a lease runs out).

What follows from it:

* a call of an hour (a deep-research request) keeps its hold for as long as its process
  lives; a dead process's holds are renewed by no one and expire after one lease;
* a process suspended longer than the lease (a laptop asleep) misses its beats: another
  process may reclaim its holds meanwhile. The call then settles on waking as one whose
  lease ran out does: its cost is charged, nothing it no longer holds is given back. The
  budget can then end above its limit by at most that call's cost;
* a hold is tracked through a weak reference: a call dropped without ever settling (its
  objects collected) stops being renewed, and its lease runs out;
* leases shorter than :data:`MIN_RENEWED_LEASE` are not renewed (a heartbeat would write
  more than three times a second; such leases are for tests of expiry);
* ``uninstall()`` and the process's exit stop the thread (a call still running then is left
  to its lease); a forked child starts with nothing tracked: its parent's holds are its
  parent's to renew.

On PostgreSQL the lease is the database's clock plus the lease (see :mod:`.holds`); on
SQLite, one machine's file, this process's clock.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import threading
import weakref
from typing import Any

from ..config import env_number
from ..store.fastsql import SQL, db_time_for
from ..timeutil import clock_shift, utcnow

__all__ = ["HEARTBEAT", "MIN_RENEWED_LEASE", "Heartbeat", "lease_param", "lease_seconds"]

log = logging.getLogger("llmspend")

_DEFAULT_LEASE = 600.0

#: Leases shorter than this (seconds) are not renewed.
MIN_RENEWED_LEASE = 1.0


def lease_seconds() -> float:
    """How long a hold lasts before another process may reclaim it, unless renewed
    (``LLMSPEND_LEASE_SECONDS``; default 600 s, at most a week)."""
    return env_number("LLMSPEND_LEASE_SECONDS", _DEFAULT_LEASE, unit="seconds", high=7 * 86400)


def lease_param(sqlite: bool, seconds: float) -> Any:
    """The ``:lease`` parameter of a statement that sets ``lease_expires_at``: on SQLite
    the time ``seconds`` from now (this process's clock); on PostgreSQL the seconds to add
    to the database's clock, moved as :func:`~llmspend.timeutil.shift_clock` moves
    llmspend's clock (time travel for tests; a host's own clock plays no part)."""
    if sqlite:
        return db_time_for(True, utcnow() + dt.timedelta(seconds=seconds))
    return seconds + clock_shift().total_seconds()


_RENEW_SQLITE = SQL(
    "UPDATE llmspend_reservations SET lease_expires_at = :lease "
    "WHERE token IN (SELECT value FROM json_each(:tokens))"
)
# PostgreSQL: the holds locked first, in token order, as a budget change locks them
# (``holds.open_holds``): the UPDATE alone locks them in whatever order it scans them,
# which could deadlock with a change locking the same holds.
_LOCK_PG = SQL(
    "SELECT token FROM llmspend_reservations WHERE token = ANY(:tokens) ORDER BY token FOR UPDATE"
)
_RENEW_PG = SQL(
    "UPDATE llmspend_reservations SET lease_expires_at = "
    "(statement_timestamp() AT TIME ZONE 'UTC') + CAST(:lease AS double precision) "
    "* interval '1 second' WHERE token = ANY(:tokens)"
)


def renew(store: Any, tokens: list[str], seconds: float) -> int:
    """Set the lease of the holds ``tokens`` on ``store`` to ``seconds`` from now (one
    transaction; on PostgreSQL locked in token order first). Returns how many holds were
    still there."""
    with store.tx(write=True, wait=store.busy_wait) as tx:  # off the calls' path
        if tx.sqlite:
            params = {"lease": lease_param(True, seconds), "tokens": json.dumps(tokens)}
            return int(tx.run(_RENEW_SQLITE, params).rowcount)
        tx.run(_LOCK_PG, {"tokens": tokens})
        params = {"lease": lease_param(False, seconds), "tokens": tokens}
        return int(tx.run(_RENEW_PG, params).rowcount)


class Heartbeat:
    """This process's live holds, per store, and the thread that renews them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # store -> {token: weak reference to the Held}
        self._live: dict[Any, dict[str, weakref.ref[Any]]] = {}
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._failing = False
        self.beats = 0  # beats done by this process (tests wait on it)
        self.failures = 0  # stores that failed a beat

    # -- the call path ------------------------------------------------------------------
    def track(self, store: Any, held: Any, lease: float) -> None:
        """Renew ``held`` (a hold just made on ``store`` with a lease of ``lease`` seconds)
        until :meth:`forget` (or until it is collected)."""
        if lease < MIN_RENEWED_LEASE:
            return
        with self._lock:
            live = self._live.get(store)
            if live is None:
                live = self._live[store] = {}
            live[held.token] = weakref.ref(held)
            if self._thread is None and not self._stopping:
                self._start()

    def forget(self, holds: list[Any]) -> None:
        """Stop renewing these holds (settled or given back)."""
        if not self._live:
            return
        with self._lock:
            for live in self._live.values():
                for h in holds:
                    live.pop(h.token, None)

    def tracked(self) -> set[str]:
        """The tokens of the holds renewed now (every store)."""
        with self._lock:
            return {t for live in self._live.values() for t, ref in live.items() if ref()}

    # -- the thread ---------------------------------------------------------------------
    def _start(self) -> None:
        thread = threading.Thread(target=self._run, name="llmspend-heartbeat", daemon=True)
        self._thread = thread
        try:
            thread.start()
        except RuntimeError:  # no new threads: the interpreter is shutting down
            self._thread = None

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                interval = lease_seconds() / 3
            except Exception:  # a bad setting: calls under budgets are refused meanwhile
                interval = _DEFAULT_LEASE / 3
            with self._lock:
                if self._stopping or self._thread is not me:
                    return
                wake = self._wake
            wake.wait(interval)
            with self._lock:
                if self._stopping or self._thread is not me:
                    return
            if not self.beat():
                with self._lock:
                    if self._thread is me and not any(self._live.values()):
                        self._thread = None  # nothing left: the next hold starts another
                        return

    def beat(self) -> bool:
        """Renew every live hold, one statement per store; False if none is left. A store
        that fails is logged and tried again at the next beat."""
        with self._lock:
            work = []
            for store, live in list(self._live.items()):
                tokens = [t for t, ref in live.items() if ref() is not None]
                for t in [t for t in live if t not in tokens]:
                    del live[t]  # collected without settling: left to its lease
                if tokens:
                    work.append((store, sorted(tokens)))  # one lock order on PostgreSQL
                else:
                    del self._live[store]
        if not work:
            return False
        try:
            seconds = lease_seconds()
        except Exception:
            seconds = _DEFAULT_LEASE
        failed = False
        for store, tokens in work:
            try:
                renew(store, tokens, seconds)
            except Exception as exc:
                failed = True
                self.failures += 1
                if not self._failing:
                    log.warning(
                        "llmspend: could not renew the leases of %d call(s) in flight (%s); "
                        "trying again in %.3g s",
                        len(tokens),
                        str(getattr(exc, "orig", None) or exc).splitlines()[0][:200],
                        seconds / 3,
                    )
        self._failing = failed
        self.beats += 1
        return True

    def stop(self, *, wait: bool = True) -> None:
        """End the thread (``uninstall()``, exit); a hold tracked later starts it again.
        ``wait``: until it has ended (at most 10 s: a beat may be waiting on the store)."""
        with self._lock:
            thread, self._thread = self._thread, None
            wake, self._wake = self._wake, threading.Event()
        wake.set()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _forked(self) -> None:
        self._reset()  # the parent's holds and thread are the parent's


#: The one heartbeat of this process.
HEARTBEAT = Heartbeat()

os.register_at_fork(after_in_child=HEARTBEAT._forked)


@atexit.register
def _stop_at_exit() -> None:
    HEARTBEAT._stopping = True  # no thread starts from here on
    HEARTBEAT.stop(wait=False)
