"""The per-call path on DBAPI transactions: what it remembers, when it forgets, and how it
fails (Store.tx, the budget lookup memo, background WAL checkpoints, the alert memo)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy.exc import OperationalError

import llmspend
from llmspend.call import Usage
from llmspend.errors import BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.store.engine import forget_store, open_store
from llmspend.store.fastsql import SQL

ONE = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out


def spend(inp: int = 1000, out: int = 100) -> None:
    c = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=inp, max_output_tokens=out
    )
    assert c is not None
    c.finish(Usage(input_tokens=inp, output_tokens=out))


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmspend", *args],
        env={**os.environ, "LLMSPEND_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_budget_set_by_another_process_applies_to_the_very_next_call(installed) -> None:  # type: ignore[no-untyped-def]
    url = installed.settings.database_url
    spend()  # no budget: the lookup is remembered on this thread's connection
    spend()
    done = _cli(url, "budget", "set", "project", "acme/churn", str(ONE * 3), "--period", "day")
    assert done.returncode == 0, done.stderr
    spend()  # another connection committed: the lookup is made again and sees the budget
    with pytest.raises(BudgetExceeded) as info:
        spend()
    assert info.value.budget == "acme/churn"
    done = _cli(url, "budget", "delete", "project", "acme/churn")
    assert done.returncode == 0, done.stderr
    spend()  # and a deleted one stops applying at once
    assert len(llmspend.records(status="ok")) == 4


def test_remembered_budgets_meet_changes_by_another_process_at_the_next_call(installed) -> None:  # type: ignore[no-untyped-def]
    """With budgets remembered, the reservation itself checks whether another connection
    committed, and reads the budgets again under the write lock if so."""
    url = installed.settings.database_url
    llmspend.set_budget("project", "acme/churn", ONE * 100, "day")
    spend()
    spend()  # remembered: reserved in one transaction, nothing read before it
    done = _cli(url, "budget", "set", "user", "acme/churn/ana", str(ONE * 3), "--period", "day")
    assert done.returncode == 0, done.stderr
    spend()  # the new user budget (2 of 3 spent already) applies at once, beside the other
    with pytest.raises(BudgetExceeded) as info:
        spend()
    assert info.value.budget == "acme/churn/ana"
    done = _cli(url, "budget", "set", "project", "acme/churn", str(ONE * 3), "--period", "day")
    assert done.returncode == 0, done.stderr
    done = _cli(url, "budget", "delete", "user", "acme/churn/ana")
    assert done.returncode == 0, done.stderr
    with pytest.raises(BudgetExceeded) as info:  # the project's limit was lowered: 3 spent
        spend()
    assert info.value.budget == "acme/churn"
    statuses = {s.budget: s for s in llmspend.budget_status()}
    assert statuses["acme/churn"].spent_usd == ONE * 3 and statuses["acme/churn"].reserved_usd == 0
    assert len(llmspend.records(status="ok")) == 3


def test_a_budget_changed_in_this_process_applies_at_once(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE * 10, "day")
    spend()
    llmspend.update_budget("project", "acme/churn", limit=ONE * 2)
    spend()
    with pytest.raises(BudgetExceeded):
        spend()
    llmspend.update_budget("project", "acme/churn", mode="soft")
    spend()  # soft now: allowed, and recorded
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.spent_usd == ONE * 3 and s.reserved_usd == 0


def test_each_thread_uses_its_own_connection_and_they_agree(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", ONE * 40, "day")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                spend()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pytest.raises(BudgetExceeded):
        spend()  # exactly 40 fitted
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.spent_usd == ONE * 40 and s.reserved_usd == 0 and s.calls == 40


def test_a_nested_transaction_on_the_same_thread_gets_another_connection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'nested.sqlite'}"
    store = open_store(url)
    try:
        count = SQL("SELECT COUNT(*) AS n FROM llmspend_orgs")
        with store.tx(write=True) as outer:
            outer.run(SQL("INSERT INTO llmspend_orgs (name, created_at) VALUES ('o', 'x')"))
            with store.tx() as inner:  # not the outer's connection: the row is not visible
                assert inner.dbapi is not outer.dbapi
                assert inner.run(count).one().n == 0
            assert outer.run(count).one().n == 1
        with store.tx() as after:
            assert after.run(count).one().n == 1
    finally:
        forget_store(url)


def test_a_failed_transaction_rolls_back_and_driver_errors_come_out_as_sqlalchemy_errors(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'errors.sqlite'}"
    store = open_store(url)
    try:
        insert = SQL("INSERT INTO llmspend_orgs (name, created_at) VALUES (:n, 'x')")
        with pytest.raises(RuntimeError), store.tx(write=True) as tx:
            tx.run(insert, {"n": "kept?"})
            raise RuntimeError("boom")
        with pytest.raises(OperationalError, match="no such table"), store.tx(write=True) as tx:
            tx.run(insert, {"n": "kept?"})
            tx.run(SQL("SELECT * FROM no_such_table"))
        with store.tx() as tx:
            assert tx.run(SQL("SELECT COUNT(*) AS n FROM llmspend_orgs")).one().n == 0
            tx.run(SQL("SELECT 1 AS one")).one()  # the thread's connection still works
    finally:
        forget_store(url)


def test_a_locked_store_times_out_into_the_spool_and_nothing_is_lost(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "50")
    path = tmp_path / "locked.sqlite"
    url = f"sqlite:///{path}"
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        spend()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        with pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
            spend()  # no budget: the call goes ahead and its row is spooled
        blocker.execute("ROLLBACK")
        blocker.close()
        spend()  # the store is back: the spooled row is written too
        assert len(llmspend.records()) == 3
    finally:
        llmspend.uninstall()
        forget_store(url)


def test_wal_checkpoints_run_in_the_background_and_keep_the_log_small(
    tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from llmspend.store.sqlite import Checkpointer

    monkeypatch.setattr(Checkpointer, "LOG_LIMIT", 500)  # pages; 4,000 by default
    path = tmp_path / "wal.sqlite"
    url = f"sqlite:///{path}"
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        wal = path.with_name(path.name + "-wal")
        for _ in range(10):
            for _ in range(64):  # back to back: the thread is woken after 64 transactions
                spend()
            # A pause such as a notebook's between cells: the checkpoint (and, past 500
            # pages, the restart of the log, which waits for writers at most 100 ms)
            # happens in it whatever the machine's load.
            checkpointer = open_store(url)._checkpointer
            assert checkpointer is not None
            for _ in range(200):
                if checkpointer.pending == 0:
                    break
                time.sleep(0.05)
            time.sleep(0.3)
        # 640 calls write several thousand pages to the log; copied back every 64
        # transactions and restarted past 500 pages, the file stays far below that.
        assert wal.stat().st_size <= 8_000_000
        assert checkpointer is not None and checkpointer._thread.is_alive()
    finally:
        llmspend.uninstall()
        forget_store(url)
    assert not checkpointer._thread.is_alive()  # disposing the store stops its thread
    assert len(sqlite3.connect(path).execute("SELECT id FROM llmspend_usage").fetchall()) >= 600


def test_a_budget_deleted_and_set_again_alerts_again(installed) -> None:  # type: ignore[no-untyped-def]
    got: list = []
    llmspend.on_alert(got.append)
    try:
        llmspend.set_budget("project", "acme/churn", ONE * 8, "day", thresholds=(0.5,))
        for _ in range(5):
            spend()  # the 4th reaches 50 %: one alert; the 5th finds the row and stays quiet
        llmspend.delete_budget("project", "acme/churn")
        # Set again (SQLite gives it the old id): the 5 calls so far count, 25 % of the new
        # limit; the 10th call reaches 50 % and alerts, since this budget never did.
        llmspend.set_budget("project", "acme/churn", ONE * 20, "day", thresholds=(0.5,))
        for _ in range(5):
            spend()
        assert [(e.budget, e.threshold) for e in got] == [("acme/churn", Decimal("0.5"))] * 2
    finally:
        from llmspend.alerting.listeners import remove_alert_callback

        remove_alert_callback(got.append)


def test_live_rows_get_unique_ids_in_time_order(installed) -> None:  # type: ignore[no-untyped-def]
    """Record ids start with the time, so live rows append to the unique index's last page
    (a random id would land on a random page of a large store)."""
    for _ in range(8):
        spend()
    path = installed.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        uids = [u for (u,) in conn.execute("SELECT record_uid FROM llmspend_usage ORDER BY id")]
    assert len(uids) == 8 == len(set(uids)) and uids == sorted(uids)
    assert all(len(u) == 32 and set(u) <= set("0123456789abcdef") for u in uids)


def test_a_call_held_on_a_deleted_budget_does_not_release_what_its_successor_holds(
    installed,
) -> None:  # type: ignore[no-untyped-def]
    """SQLite may give a new period the id of a deleted one: a hold made before the delete
    must not take its amount off the new period when it settles."""
    llmspend.set_budget("project", "acme/churn", ONE * 100, "day")
    old = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert old is not None and old.reservation is not None
    llmspend.delete_budget("project", "acme/churn")
    llmspend.set_budget("project", "acme/churn", ONE * 100, "day")
    new = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert new is not None and new.reservation is not None
    (before,) = llmspend.budget_status("project", "acme/churn")
    assert before.reserved_usd == ONE
    old.finish(Usage(input_tokens=1000, output_tokens=100))
    (after,) = llmspend.budget_status("project", "acme/churn")
    assert after.reserved_usd == ONE  # still the new call's hold
    new.finish(Usage(input_tokens=1000, output_tokens=100))
    (done,) = llmspend.budget_status("project", "acme/churn")
    assert done.reserved_usd == 0


def test_a_forked_child_records_on_a_connection_of_its_own(installed) -> None:  # type: ignore[no-untyped-def]
    """The process id is read once, and again in a child after fork: the child must not
    take its parent's SQLite connection (or standing holds) for its own."""
    from llmspend import _process

    spend()  # the parent's thread connection is open
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            said = b"ok" if _process.pid == os.getpid() else b"stale process id"
            spend()
        except BaseException as exc:  # reported to the parent
            said = repr(exc).encode()[:300]
        os.write(write, said)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read()
    os.waitpid(pid, 0)
    assert said == b"ok"
    assert _process.pid == os.getpid()
    spend()  # the parent's next call: its record id must not repeat the child's
    path = installed.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        uids = [u for (u,) in conn.execute("SELECT record_uid FROM llmspend_usage")]
    assert len(uids) == 3 and len({u[16:] for u in uids}) == 3  # random halves differ
