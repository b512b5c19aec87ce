"""Fork safety: no thread of this process is inside the database driver when it forks.

SQLite (and libpq) take process-wide locks inside their C code — SQLite's unix VFS holds
a global mutex whenever a file is opened, locked or closed. A process that forks while
another of its threads holds one leaves it held in the child forever, and the child's
first database call then hangs (llmspend keeps background threads that use the store:
the WAL checkpointer, lease renewal, standing holds given back when idle, calls settled
when a stream is collected; ``multiprocessing``'s ``fork`` start method forks while they
run).

So every store transaction of llmspend enters this guard, and a fork (``os.fork``, and
everything built on it) waits before it for the transactions in flight on other threads
to end — at most :data:`WAIT_SECONDS`, then it forks anyway — and lets none begin until it
is done. A transaction costs two uncontended lock round trips here.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["GUARD", "WAIT_SECONDS", "ForkGuard", "guarded"]

#: The longest a fork waits for other threads' transactions to end.
WAIT_SECONDS = 5.0


class ForkGuard:
    """Counts the transactions in flight; a fork waits for the other threads' ones."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Transactions take the lock itself, not the condition over it: the same lock, with
        # no Python-level ``Condition.__enter__``/``__exit__`` on every transaction.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = 0
        self._forking = False
        self._local = threading.local()

    def enter(self) -> None:
        """A transaction begins on this thread (waits while the process forks)."""
        local = self._local
        with self._lock:
            while self._forking:
                self._cond.wait()
            self._active += 1
        local.depth = getattr(local, "depth", 0) + 1

    def exit(self) -> None:
        """The transaction :meth:`enter` began has ended."""
        local = self._local
        local.depth = getattr(local, "depth", 1) - 1
        with self._lock:
            self._active -= 1
            if self._forking:
                self._cond.notify_all()

    def before_fork(self) -> None:
        cond = self._cond
        cond.acquire()
        self._forking = True
        mine = getattr(self._local, "depth", 0)  # the forking thread's own: not waited for
        deadline = time.monotonic() + WAIT_SECONDS
        while self._active > mine:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cond.wait(left)
        # Forks holding the lock: no transaction begins or ends until it is done.

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()

    def after_fork_in_child(self) -> None:
        depth = getattr(self._local, "depth", 0)
        self._reset()  # the other threads are gone with their transactions
        self._active = self._local.depth = depth


#: The guard of this process's store transactions.
GUARD = ForkGuard()


@contextmanager
def guarded() -> Iterator[None]:
    """Use the database driver inside this block (a fork waits for it to end)."""
    GUARD.enter()
    try:
        yield
    finally:
        GUARD.exit()


os.register_at_fork(
    before=GUARD.before_fork,
    after_in_parent=GUARD.after_fork_in_parent,
    after_in_child=GUARD.after_fork_in_child,
)
