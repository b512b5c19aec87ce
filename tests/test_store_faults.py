"""Store faults that must neither freeze a notebook nor lose a served call (issue 22).

A store held locked by another process (a real second process holding SQLite's write
lock until told to let go), Ctrl-C during the wait, and a disk that fills up (a tiny tmpfs
when running as root, else a write that fails with ENOSPC). Real openai SDK calls against
the simulator. Nothing here depends on timing: waits are on events, pipes and polled
conditions with generous limits; the locker lets go by itself only after two minutes, so
"the call returned while the lock was held" is checked by the locker still running.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmspend
from llmspend import spool as spool_module
from llmspend.errors import StoreUnavailable
from llmspend.store.engine import forget_store

MSG = [{"role": "user", "content": "hello there"}]

LOCKER = """
import sqlite3, sys, threading, os
threading.Timer(120, lambda: os._exit(3)).start()  # never hang a test run
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
c.execute("COMMIT")
print("released", flush=True)
os._exit(0)
"""


class Locker:
    """Another process holding the store's write lock until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    @property
    def holding(self) -> bool:
        return self.proc.poll() is None

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "released"
        self.proc.wait(60)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def ask(sim: Any, **kw: Any) -> Any:
    client = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    return client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20, **kw)


def eventually(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``check`` until true (generous limit: a loaded machine is slow, not wrong)."""
    end = time.monotonic() + limit
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


class Messages(logging.Handler):
    """llmspend's log messages, and an event set when one containing ``signal`` arrives."""

    def __init__(self, signal: str = "") -> None:
        super().__init__(logging.DEBUG)
        self.signal = signal
        self.seen = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        self.messages.append(msg)
        if self.signal and self.signal in msg:
            self.seen.set()

    def count(self, text: str) -> int:
        return sum(text in m for m in self.messages)


@contextlib.contextmanager
def logged(signal: str = "") -> Iterator[Messages]:
    logger = logging.getLogger("llmspend")
    handler = Messages(signal)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    path = tmp_path / "faults.sqlite"
    url = f"sqlite:///{path}"
    forget_store(url)
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        yield tracker, path
    finally:
        llmspend.uninstall()
        forget_store(url)


def test_a_call_returns_while_another_process_holds_the_lock(store: Any, fresh_sim: Any) -> None:
    tracker, path = store
    ask(fresh_sim)
    locker = Locker(path)
    try:
        with logged() as log, pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
            ask(fresh_sim)  # no budgets: served, and journaled after a short wait
        assert locker.holding  # it returned while the lock was still held
        assert log.count("store is locked") == 1
        assert fresh_sim.request_count == 2 and len(llmspend.records()) == 1
        assert len(tracker.spool.pending()) == 1
    finally:
        locker.release()
    # Nothing else is called: the background replay writes the row.
    eventually(lambda: len(llmspend.records()) == 2, "the journaled row replayed")
    eventually(lambda: not tracker.spool.pending(), "the spool emptied")
    assert len(llmspend.records()) == 2


def test_a_hard_budget_call_is_refused_while_the_lock_is_held(store: Any, fresh_sim: Any) -> None:
    tracker, path = store
    llmspend.set_budget("project", "acme/churn", "10", "month")
    ask(fresh_sim)
    locker = Locker(path)
    try:
        with (
            logged() as log,
            pytest.raises(StoreUnavailable, match="call was not sent"),
            pytest.warns(llmspend.LLMSpendWarning),
        ):
            ask(fresh_sim)
        assert locker.holding
        assert fresh_sim.request_count == 1  # nothing was sent
        # one wait, for the reservation: the refusal went straight to the spool
        assert log.count("store is locked") == 1
        assert len(tracker.spool.pending()) == 1
    finally:
        locker.release()
    eventually(lambda: len(llmspend.records()) == 2, "the refusal replayed")
    rec = llmspend.records()
    assert sorted(rec.status) == ["ok", "refused"]
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.spent_usd == sum(rec.cost_usd) and status.reserved_usd == 0


def test_ctrl_c_during_the_wait_is_honoured_and_the_served_call_is_kept(
    tmp_path: Path, fresh_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_LOCK_WAIT", "60")  # only Ctrl-C can end this wait early
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "600000")
    path = tmp_path / "ctrl-c.sqlite"
    url = f"sqlite:///{path}"
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("project", "acme/churn", "10", "month")  # a hold to give back
        ask(fresh_sim)
        with logged("store is locked") as log:
            stream = ask(fresh_sim, stream=True)  # reserved now
            locker = Locker(path)
            try:

                def ctrl_c() -> None:
                    if log.seen.wait(120):  # the wait for the lock began
                        _thread.interrupt_main()

                helper = threading.Thread(target=ctrl_c)
                helper.start()
                with pytest.raises(KeyboardInterrupt):
                    for _ in stream:  # the last chunk records the call: it waits, Ctrl-C
                        pass
                helper.join()
                assert locker.holding  # honoured within the wait, not after it
                assert log.count("recording a call was interrupted (KeyboardInterrupt)") == 1
                assert fresh_sim.request_count == 2
                assert len(tracker.spool.pending()) == 1  # the served call is journaled
            finally:
                locker.release()
        tracker.replay_spool()
        rec = llmspend.records()
        assert list(rec.status) == ["ok", "ok"]
        (status,) = llmspend.budget_status("project", "acme/churn")
        assert status.reserved_usd == 0  # the interrupted call's hold was given back
        assert status.spent_usd == sum(rec.cost_usd, Decimal(0))  # and its cost counted once
    finally:
        llmspend.uninstall()
        forget_store(url)


# -- a full disk -------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_filesystem(where: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Any]]:
    """``where`` on a 2 MiB tmpfs (as root), yielding ``fill()`` that fills it and returns
    ``free()``; elsewhere the spool's writes under ``where`` fail with ENOSPC while full."""
    where.mkdir()
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(where)],
            capture_output=True,
        )
        mounted = done.returncode == 0
    if not mounted and os.environ.get("CI"):
        pytest.fail("CI runs as root: the tmpfs variant must run")
    full = {"on": False}

    def fill() -> Callable[[], None]:
        if mounted:
            filler = where / "filler"
            # unbuffered: a buffered file would keep what did not fit and raise ENOSPC
            # again when closed, depending on how the free space falls against the chunks
            with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 65536)
            return lambda: filler.unlink()
        full["on"] = True
        return lambda: full.update(on=False)

    if not mounted:  # a fault of the OS, injected where the spool writes
        real = os

        class FaultyOS:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            @staticmethod
            def write(fd: int, data: Any) -> int:
                target = real.readlink(f"/proc/self/fd/{fd}") if real.path.isdir("/proc") else ""
                if full["on"] and target.startswith(str(where)):
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real.write(fd, data)

        monkeypatch.setattr(spool_module, "os", FaultyOS())
    try:
        yield fill
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("second", [True, False], ids=["second-location", "memory"])
def test_a_full_disk_loses_no_served_call(
    tmp_path: Path, fresh_sim: Any, monkeypatch: pytest.MonkeyPatch, second: bool
) -> None:
    small = tmp_path / "small"
    with tiny_filesystem(small, monkeypatch) as fill:
        monkeypatch.setenv("LLMSPEND_HOME", str(small / "home"))
        path = small / "store.sqlite"
        url = f"sqlite:///{path}"
        tracker = llmspend.install(url, org="acme", project="churn", user="ana")
        try:
            # The second location: another filesystem, or (to reach memory) the full one.
            tracker.spool.fallback = (tmp_path / "second") if second else (small / "second")
            llmspend.set_budget("project", "acme/churn", "10", "month", mode="soft")
            ask(fresh_sim)
            free = fill()
            locker = Locker(path)  # the store cannot take rows either
            try:
                with pytest.warns(llmspend.LLMSpendWarning) as caught:
                    for _ in range(4):
                        ask(fresh_sim)  # every one served
                assert fresh_sim.request_count == 5
                in_memory = [w for w in caught if "kept in memory" in str(w.message)]
                assert len(in_memory) == (0 if second else 1)  # loud, once
                assert tracker.spool.in_memory() == (0 if second else 4)
                assert len(tracker.spool.pending()) == (4 if second else 0)
            finally:
                locker.release()
            free()
            tracker.replay_spool()
            rec = llmspend.records()
            assert len(rec) == 5  # each recorded exactly once
            with contextlib.closing(sqlite3.connect(path)) as db:
                (uids,) = db.execute("SELECT COUNT(DISTINCT record_uid) FROM llmspend_usage")
                assert uids == (5,)
            assert tracker.spool.backlog() == 0
            (status,) = llmspend.budget_status("project", "acme/churn")
            assert status.reserved_usd == 0
            assert status.spent_usd == sum(rec.cost_usd, Decimal(0))
            assert not list(small.rglob("*.tmp")) and not list(tmp_path.rglob("*.tmp"))
        finally:
            llmspend.uninstall()
            forget_store(url)


def test_background_replay_stops_at_uninstall_and_resumes_at_install(
    store: Any, fresh_sim: Any
) -> None:
    tracker, path = store
    locker = Locker(path)
    try:
        with pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
            ask(fresh_sim)
        assert tracker.replayer.running  # retrying with back-off, off the calls' path
        llmspend.uninstall()
        assert not tracker.replayer.running  # stopped, and joined
    finally:
        locker.release()
    assert len(tracker.spool.pending()) == 1  # the journal stays for the next session
    again = llmspend.install(f"sqlite:///{path}", org="acme", project="churn", user="ana")
    assert again is tracker
    eventually(lambda: len(llmspend.records()) == 1, "the journaled row replayed")
    eventually(lambda: not tracker.replayer.running, "the replayer ended with nothing left")
