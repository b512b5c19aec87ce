"""Forking while another thread is in the database driver: the fork waits for it.

A child forked while another thread held one of SQLite's process-wide locks would hang on
its first call (the lock stays held in the child, by a thread that does not exist there).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from llmspend.store.forkguard import GUARD

LIMIT = 60.0  # generous: polls, never a race


def _poll(condition: Any) -> None:
    deadline = time.monotonic() + LIMIT
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_a_fork_waits_for_another_threads_transaction(installed: Any) -> None:
    store = installed.store
    inside, release, ended = threading.Event(), threading.Event(), threading.Event()

    def hold_a_transaction() -> None:
        with store.tx(write=True) as tx:
            tx.execute("SELECT 1")
            inside.set()
            release.wait(LIMIT)
        ended.set()

    def release_once_the_fork_waits() -> None:
        _poll(lambda: GUARD._forking)
        release.set()

    holder = threading.Thread(target=hold_a_transaction)
    holder.start()
    assert inside.wait(LIMIT)
    threading.Thread(target=release_once_the_fork_waits, daemon=True).start()
    read, write = os.pipe()
    pid = os.fork()  # waits, in the before-fork hook, for the holder's transaction to end
    if pid == 0:  # the child: report, never return into pytest
        try:
            said = b"ended first" if ended.is_set() else b"forked inside the transaction"
            with store.tx(write=True) as tx:  # the child's own connection; must not hang
                tx.execute("SELECT 1")
        except BaseException as exc:
            said = repr(exc).encode()[:300]
        os.write(write, said)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    holder.join(LIMIT)
    assert said == b"ended first"
    assert not GUARD._forking and GUARD._active == 0


def test_a_transaction_of_the_forking_thread_itself_is_not_waited_for(installed: Any) -> None:
    """Forking from inside one's own transaction must not wait for oneself."""
    store = installed.store
    with store.tx() as tx:
        tx.execute("SELECT 1")
        pid = os.fork()
        if pid == 0:
            os._exit(0 if GUARD._active == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert GUARD._active == 0
