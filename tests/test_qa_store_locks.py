"""A locked or read-only SQLite store never freezes a notebook: each test is one bug, fixed.

Another connection holds the store's write lock (``BEGIN EXCLUSIVE``) for as long as a
test needs; the busy timeout is ten minutes, so only the fix ends a wait early. A watchdog
lets go of the lock if the code under test has not returned after a minute (a broken build
then fails the test instead of hanging it). Ctrl-C is a real SIGINT, sent once the wait
for the lock has begun (a log message says so): nothing races a timer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from sqlalchemy import exc

import llmspend
from llmspend.sim import SimServer
from llmspend.store.engine import forget_store
from llmspend.store.fastsql import SQL, Tx
from llmspend.timeutil import shift_clock, utcnow
from tests.shells import loaded_shell
from tests.test_budgets import call
from tests.test_magics import cell_lines, ok

PATIENT_MS = "600000"  # the busy timeout: ten minutes, far past any test's limit
WATCHDOG = 60.0  # seconds before the watchdog lets go of a lock nobody gave up on


class Holder:
    """Another connection holding the store's write lock, with a watchdog."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")
        self.done = threading.Event()
        self.forced = False
        self._watch = threading.Thread(target=self._watchdog, daemon=True)
        self._watch.start()

    def _watchdog(self) -> None:
        if not self.done.wait(WATCHDOG):
            self.forced = True  # the code under test froze: let it go on, and fail
            self.conn.execute("ROLLBACK")

    def release(self) -> None:
        self.done.set()
        self._watch.join()
        if not self.forced:
            self.conn.execute("ROLLBACK")
        self.conn.close()


class WaitBegan(logging.Handler):
    """Set when llmspend logs that a transaction waits for another connection's lock."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "for another connection's lock" in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def ctrl_c_when_waiting() -> Iterator[threading.Thread]:
    """A real SIGINT to this process once a transaction waits for the lock."""
    logger = logging.getLogger("llmspend")
    handler, old = WaitBegan(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)

    def interrupt() -> None:
        if handler.seen.wait(WATCHDOG):
            os.kill(os.getpid(), signal.SIGINT)

    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    try:
        yield sender
    finally:
        sender.join()
        logger.removeHandler(handler)
        logger.setLevel(old)


@pytest.fixture
def store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """llmspend installed on a fresh SQLite store with a ten-minute busy timeout."""
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", PATIENT_MS)
    url = f"sqlite:///{tmp_path / 'locks.sqlite'}"
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    yield tracker
    llmspend.uninstall()
    forget_store(url)


@pytest.fixture
def ip(store: Any, fresh_sim: SimServer) -> Iterator[InteractiveShell]:
    with loaded_shell(fresh_sim.openai_base_url) as shell:
        yield shell


# -- 1. Ctrl-C during a magic's wait for the lock -----------------------------------------------


@pytest.mark.parametrize("line", ["%budget status", "%budget set org acme 9/day"])
def test_ctrl_c_during_a_magics_wait_for_the_lock_is_honoured(
    ip: InteractiveShell, store: Any, line: str
) -> None:
    ok(ip, "%budget set org acme 5/day")
    holder = Holder(store.store.path)
    try:
        with ctrl_c_when_waiting(), capture_output():
            result = ip.run_cell(line, store_history=False)
        assert isinstance(result.error_in_exec, KeyboardInterrupt), result.error_in_exec
        assert not holder.forced  # honoured during the wait, not after it
    finally:
        holder.release()
    assert {b.name: b.limit_usd for b in llmspend.list_budgets()} == {"acme": 5}
    ok(ip, "%budget set org acme 7/day")  # the store works as before once let go
    assert {b.name: b.limit_usd for b in llmspend.list_budgets()} == {"acme": 7}


# -- 2. the cell's line while another connection holds the lock ---------------------------------


def test_the_cell_line_never_waits_past_the_lock_wait(ip: InteractiveShell, store: Any) -> None:
    ok(ip, "%budget set org acme 5/day --soft")
    cell = "client.chat.completions.create(model='gpt-4o-mini', messages=[])"
    with capture_output() as cap:
        ok(ip, cell)
    (line,) = cell_lines(cap)
    assert " · acme: " in line  # the budget part, while the store is free
    holder = Holder(store.store.path)
    try:
        with capture_output() as cap, pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
            ok(ip, cell)  # served; its row journaled
        assert not holder.forced  # the line came while the lock was held
    finally:
        holder.release()
    (line,) = cell_lines(cap)
    assert line.startswith("llmspend · this cell: 1 call, $") and "acme" not in line, line


# -- 3. status on a read-only store --------------------------------------------------------------


def test_status_on_a_read_only_store_is_computed_without_writing(
    ip: InteractiveShell, store: Any
) -> None:
    llmspend.set_budget("org", "acme", "5", "day")
    call(org="acme", project="churn", user="ana")
    (today,) = llmspend.budget_status()
    assert today.spent_usd > 0 and today.calls == 1
    path = store.store.path
    ro = f"sqlite:///file:{path}?mode=ro&uri=true"

    def periods() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return int(db.execute("SELECT COUNT(*) FROM llmspend_budget_periods").fetchone()[0])

    shift_clock(dt.timedelta(days=1))  # tomorrow: its period row is missing
    try:
        llmspend.install(ro)
        (status,) = llmspend.budget_status()  # was: attempt to write a readonly database
        assert status.period_start == today.period_end
        assert (status.spent_usd, status.calls, status.limit_usd) == (0, 0, 5)
        with capture_output() as cap:
            table = ok(ip, "%budget status")
        assert "acme" in repr(table) and not cap.stderr
        assert periods() == 1  # nothing was written
        llmspend.install(f"sqlite:///{path}")
        (written,) = llmspend.budget_status()  # a writable store makes the row
        assert written.period_start == status.period_start and periods() == 2
    finally:
        shift_clock(dt.timedelta(0))
        forget_store(ro)


def test_status_on_a_read_only_store_leaves_out_expired_holds(store: Any) -> None:
    llmspend.set_budget("org", "acme", "5", "day")
    path = store.store.path
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        (pid,) = db.execute("SELECT id FROM llmspend_budget_periods").fetchone()
        db.execute("UPDATE llmspend_budget_periods SET reserved_nanos = 3000 WHERE id = ?", [pid])
        past = str(utcnow() - dt.timedelta(hours=1))
        db.execute(
            "INSERT INTO llmspend_reservations (token, period_ids, amount_nanos, created_at, "
            "lease_expires_at, owner) VALUES ('dead', ?, 3000, ?, ?, 'gone:1')",
            [str(pid), past, past],
        )
    ro = f"sqlite:///file:{path}?mode=ro&uri=true"
    llmspend.install(ro)
    try:
        (status,) = llmspend.budget_status()
        assert status.reserved_usd == 0  # the dead kernel's hold is not counted
    finally:
        llmspend.install(f"sqlite:///{path}")
        forget_store(ro)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM llmspend_reservations").fetchone() == (1,)
    (status,) = llmspend.budget_status()  # writable: given back for good
    assert status.reserved_usd == 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM llmspend_reservations").fetchone() == (0,)


# -- 4. driver errors through an SQLAlchemy connection come out as SQLAlchemy's -------------------


def test_set_budget_on_a_read_only_store_raises_sqlalchemys_error(store: Any) -> None:
    llmspend.set_budget("org", "acme", "5", "day")
    path = store.store.path
    ro = f"sqlite:///file:{path}?mode=ro&uri=true"
    llmspend.install(ro)
    try:
        with pytest.raises(exc.OperationalError, match="readonly") as caught:
            llmspend.set_budget("org", "acme", "7", "day")
        assert isinstance(caught.value.orig, sqlite3.OperationalError)
    finally:
        llmspend.install(f"sqlite:///{path}")
        forget_store(ro)


def test_tx_on_a_connection_raises_driver_errors_as_sqlalchemys(store: Any) -> None:
    insert = SQL("INSERT INTO llmspend_orgs (name, created_at) VALUES (:name, :now)")
    now = str(utcnow())
    with store.store.begin(write=True) as conn:
        tx = Tx.of(conn)
        tx.run(insert, {"name": "acme", "now": now})
        with pytest.raises(exc.IntegrityError):
            tx.run(insert, {"name": "acme", "now": now})
        with pytest.raises(exc.IntegrityError):
            tx.executemany(insert, [{"name": "acme", "now": now}])
        with pytest.raises(exc.OperationalError, match="no such table"):
            tx.execute("SELECT * FROM no_such_table")
        with pytest.raises(exc.OperationalError, match="no such table"):
            tx.run(SQL("SELECT * FROM no_such_table"))
