"""Standing holds: a thread keeps its last call's hold for its next call (SQLite).

A call under budgets needs its worst case reserved before the request leaves: on SQLite
that is a write transaction of its own, the largest part of what budgets add to a call.
When a thread makes calls back to back, the settlement of one call (in the transaction
that writes its row) may keep that call's hold, still reserved on every budget, for the
thread's next call; that call then sends nothing before its request leaves.

A hold stands only while it is exactly what a new reservation would make:

* it is kept only if every hard budget still has room for it after the call's cost
  (``spent + reserved <= limit``, with the hold counted in ``reserved``), and only when
  no other connection had committed since the thread last read its budgets;
* the next call uses it only if its own worst case fits in the amount held, no other
  connection has committed since (``PRAGMA data_version`` on the thread's connection, the
  same check that guards the remembered budgets), the period has not ended and the hold
  is in the first half of the lease it was made with (the heartbeat, which renews it as
  any live hold, only ever lengthens it). Anything else gives the hold back, in the same
  transaction as the call's new reservation where there is one.

Held between calls, it is what another kernel sees as ``reserved``: one call's estimate
while this one is busy. It is given back after :data:`IDLE_SECONDS` without a call (by a
daemon thread that runs only while holds stand), at ``uninstall()``, at exit, before an
in-process ``budget_status()`` and before a refused call is tried again. A kernel killed
between calls leaves it to the lease, like a call in flight. A call refused only because
of other kernels' holds waits for them (see ``BudgetGuard``), so a standing hold never
turns into a refusal that would not have happened without it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from .. import _process

__all__ = ["IDLE_SECONDS", "StandingHolds"]

log = logging.getLogger("llmspend")

#: Seconds without a call after which a thread's standing hold is given back.
IDLE_SECONDS = 1.0

_Slot = tuple[int, int, tuple[str, str, str]]  # (pid, thread, (org, project, user))

_registries: weakref.WeakSet[StandingHolds] = weakref.WeakSet()
_exiting = False


class StandingHolds:
    """The holds this process's threads keep for their next call, one per thread and
    (org, project, user); ``give_back(holds)`` releases holds in one transaction."""

    def __init__(self, give_back: Callable[[list[Any]], None]) -> None:
        self._give_back = give_back
        self._holds: dict[_Slot, tuple[Any, float]] = {}  # slot -> (hold, when kept)
        self._lock = threading.Lock()
        self._thread_pid = 0  # the process whose idle-release thread runs, 0 if none
        _registries.add(self)

    @staticmethod
    def _slot(key: tuple[str, str, str]) -> _Slot:
        return (_process.pid, threading.get_ident(), key)

    def take(self, key: tuple[str, str, str]) -> Any:
        """This thread's hold for ``key``, no longer standing (``None`` if there is none).
        Whoever takes a hold uses it or gives it back: no one else can take it now."""
        if not self._holds:
            return None
        with self._lock:
            entry = self._holds.pop(self._slot(key), None)
        return None if entry is None else entry[0]

    def vacant(self, key: tuple[str, str, str]) -> bool:
        """Whether this thread may keep a hold for ``key`` (none stands for it yet, and
        the process is not exiting)."""
        return not _exiting and self._slot(key) not in self._holds

    def keep(self, key: tuple[str, str, str], held: Any) -> None:
        slot = self._slot(key)
        with self._lock:
            self._holds[slot] = (held, time.monotonic())
            if self._thread_pid != slot[0]:  # none runs in this process (it stops when idle)
                self._thread_pid = slot[0]
                threading.Thread(
                    target=self._release_idle, name="llmspend-standing", daemon=True
                ).start()

    def take_all(self, kept_before: float | None = None) -> list[Any]:
        """Take this process's standing holds (only those kept before ``kept_before``):
        the caller gives them back."""
        pid = _process.pid
        with self._lock:
            slots = [
                slot
                for slot, (_, kept_at) in self._holds.items()
                if slot[0] == pid and (kept_before is None or kept_at < kept_before)
            ]
            return [self._holds.pop(slot)[0] for slot in slots]

    def release_all(self) -> None:
        """Give back every hold this process keeps (one transaction)."""
        holds = self.take_all()
        if holds:
            self._release(holds)

    def _release(self, holds: list[Any]) -> None:
        try:
            self._give_back(holds)
        except Exception:  # the store is down: the leases give them back
            log.warning("llmspend: could not give back %d standing hold(s)", len(holds))

    def _release_idle(self) -> None:
        pid = _process.pid
        while True:
            time.sleep(IDLE_SECONDS / 4)
            holds = self.take_all(kept_before=time.monotonic() - IDLE_SECONDS)
            if holds:
                self._release(holds)
            with self._lock:
                if not any(slot[0] == pid for slot in self._holds):
                    self._thread_pid = 0
                    return


@atexit.register
def _release_at_exit() -> None:
    global _exiting
    _exiting = True  # calls settled from here on (streams collected at exit) keep nothing
    for registry in list(_registries):
        registry.release_all()
