"""Leases that cannot lapse under a live call, and lease times from the database's clock.

Two processes on one store, through the real openai SDK and llmspend.sim: a call longer
than its lease keeps its hold (renewed by the heartbeat), a killed kernel's hold is still
reclaimed after its lease, and on PostgreSQL a host whose clock is ahead cannot reclaim a
live hold. Waits poll for what they wait for, with generous limits.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy.exc import OperationalError

import llmspend
from llmspend import timeutil
from llmspend.budgets import heartbeat
from llmspend.budgets.heartbeat import HEARTBEAT
from llmspend.budgets.holds import reclaim_expired
from llmspend.call import Usage
from llmspend.pipeline import begin_call
from llmspend.store.engine import forget_store
from llmspend.store.fastsql import py_time

LEASE = 2.0
LIMIT = Decimal("0.0015")  # room for one worst case (max_tokens=1000, reserved at the
# priority tier a request without service_tier may be served at: ≈ $0.00101), not two
MAX_TOKENS = 1000

CALLER = r"""
import sys, llmspend, openai
url, base, prompt = sys.argv[1:4]
llmspend.install(url, org="acme", project="churn", user="ana")
client = openai.OpenAI(api_key="x", base_url=base, max_retries=0, timeout=60)
client.chat.completions.create(model="gpt-4o-mini", max_tokens=1000,
                               messages=[{"role": "user", "content": prompt}])
print("ok", flush=True)
"""


def wait_for(check: Callable[[], Any], seconds: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while not (got := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what or check}"
        time.sleep(0.05)
    return got


def caller(url: str, base: str, prompt: str, lease: float = LEASE) -> subprocess.Popen[str]:
    """Process 1: one call through the openai SDK, under a lease of ``lease`` seconds."""
    env = dict(os.environ, LLMSPEND_LEASE_SECONDS=str(lease))
    return subprocess.Popen(
        [sys.executable, "-c", CALLER, url, base, prompt],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def holds(tracker: Any) -> list[tuple[str, dt.datetime, dt.datetime]]:
    """(token, created_at, lease_expires_at) of every hold, read in a transaction."""
    with tracker.store.begin() as conn:
        rows = conn.exec_driver_sql(
            "SELECT token, created_at, lease_expires_at FROM llmspend_reservations"
        ).all()
    return [(t, py_time(c), py_time(e)) for t, c, e in rows]  # type: ignore[misc]


def renewed(tracker: Any, lease: float = LEASE) -> tuple[str, dt.datetime, dt.datetime] | None:
    """The one hold, once its lease has been moved past what it was given at first."""
    found = holds(tracker)
    if len(found) == 1 and found[0][2] - found[0][1] > dt.timedelta(seconds=lease + 0.3):
        return found[0]
    return None


def one_call(base: str, prompt: str = "hello") -> None:
    client = openai.OpenAI(api_key="x", base_url=base, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": prompt}]
    )


def test_a_call_longer_than_its_lease_keeps_its_hold(store_url: str, fresh_sim: Any) -> None:
    """A 5 s call under a 2 s lease: its hold is renewed, so the other process, trying
    after the first lease would have run out, is refused; the budget ends within its limit."""
    tracker = llmspend.install(store_url, org="acme", project="churn", user="ana")
    proc = None
    try:
        llmspend.set_budget("project", "acme/churn", LIMIT, "total")
        proc = caller(store_url, fresh_sim.openai_base_url, "a long answer #sim:delay=5")
        wait_for(lambda: fresh_sim.request_count or proc.poll() is not None, what="in flight")
        assert proc.poll() is None, proc.communicate()
        # The hold has outlived the lease it was made with, renewed meanwhile.
        _, created, _ = wait_for(lambda: renewed(tracker), what="a renewal")
        wait_for(lambda: timeutil.utcnow() > created + dt.timedelta(seconds=LEASE + 0.3))
        with pytest.raises(llmspend.BudgetExceeded):
            one_call(fresh_sim.openai_base_url)  # not reclaimed: no room for a second call
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.split() == ["ok"], err
        assert fresh_sim.request_count == 1  # the refused call sent nothing
        (status,) = llmspend.budget_status("project", "acme/churn")
        assert 0 < status.spent_usd <= status.limit_usd == LIMIT
        assert status.reserved_usd == 0
        rec = llmspend.records()
        assert sorted(rec.status) == ["ok", "refused"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        llmspend.uninstall()


def test_a_killed_kernels_renewed_hold_is_reclaimed_after_its_lease(
    store_url: str, fresh_sim: Any
) -> None:
    """SIGKILL a process whose hold the heartbeat has been renewing: nobody renews it any
    more, it is reclaimed once its lease runs out, and the other process can spend."""
    tracker = llmspend.install(store_url, org="acme", project="churn", user="ana")
    proc = None
    try:
        llmspend.set_budget("project", "acme/churn", LIMIT, "total")
        proc = caller(store_url, fresh_sim.openai_base_url, "wait #sim:hang")
        wait_for(lambda: fresh_sim.request_count or proc.poll() is not None, what="in flight")
        wait_for(lambda: renewed(tracker), what="a renewal")
        (held,) = llmspend.budget_status("project", "acme/churn")
        assert held.reserved_usd > 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        wait_for(
            lambda: llmspend.budget_status("project", "acme/churn")[0].reserved_usd == 0,
            what="the reclaim",
        )
        assert holds(tracker) == []
        one_call(fresh_sim.openai_base_url)  # the budget is whole again
        (status,) = llmspend.budget_status("project", "acme/churn")
        assert 0 < status.spent_usd <= status.limit_usd and status.reserved_usd == 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        llmspend.uninstall()


def shift_host_clock(monkeypatch: pytest.MonkeyPatch, delta: dt.timedelta) -> None:
    """Move this process's clock, as llmspend reads it everywhere (a host whose clock is
    ahead): ``timeutil.utcnow`` and every llmspend module's copy of it."""
    real = timeutil.utcnow

    def ahead() -> dt.datetime:
        return real() + delta

    for name, module in list(sys.modules.items()):
        if name.startswith("llmspend") and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", ahead)


@pytest.mark.postgres
def test_a_host_whose_clock_is_ahead_cannot_reclaim_a_live_hold(
    pg_server: Any, fresh_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: the leases are on the database's clock. This process's clock is an hour
    ahead (far more than the lease); the other process's hold is still live to it."""
    url = pg_server.create_database()
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    proc = None
    try:
        llmspend.set_budget("project", "acme/churn", LIMIT, "total")
        proc = caller(url, fresh_sim.openai_base_url, "a long answer #sim:delay=5", lease=30)
        wait_for(lambda: fresh_sim.request_count or proc.poll() is not None, what="in flight")
        assert proc.poll() is None, proc.communicate()
        ((token, _, expires),) = holds(tracker)
        shift_host_clock(monkeypatch, dt.timedelta(hours=1))
        assert llmspend.timeutil.utcnow() > expires + dt.timedelta(minutes=30)
        with tracker.store.tx(write=True) as tx:
            assert reclaim_expired(tx, llmspend.timeutil.utcnow()) == 0
        with pytest.raises(llmspend.BudgetExceeded):
            one_call(fresh_sim.openai_base_url)
        assert [h[0] for h in holds(tracker)] in ([token], [])  # [] once the call is done
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.split() == ["ok"], err
        (status,) = llmspend.budget_status("project", "acme/churn")
        assert 0 < status.spent_usd <= status.limit_usd and status.reserved_usd == 0
        assert fresh_sim.request_count == 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        llmspend.uninstall()
        forget_store(url)


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llmspend-heartbeat" and t.is_alive()]


def test_the_heartbeat_survives_a_store_error_and_stops_at_uninstall(
    installed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", "1.5")  # a beat every 0.5 s
    tries: list[list[str]] = []
    real = heartbeat.renew

    def flaky(store: Any, tokens: list[str], seconds: float) -> int:
        tries.append(tokens)
        if len(tries) == 1:
            raise OperationalError("UPDATE", {}, Exception("the store is down"))
        return real(store, tokens, seconds)

    monkeypatch.setattr(heartbeat, "renew", flaky)
    llmspend.set_budget("project", "acme/churn", "1", "day")
    call = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert call is not None and call.reservation is not None
    token = call.reservation.token
    assert HEARTBEAT.tracked() == {token}
    (thread,) = heartbeat_threads()
    ((_, _, first),) = holds(installed)
    failures = HEARTBEAT.failures
    # The first beat fails; a later one renews.
    wait_for(lambda: len(tries) >= 2 and holds(installed)[0][2] > first, what="a renewal")
    assert tries[0] == [token] and HEARTBEAT.failures == failures + 1
    assert heartbeat_threads() == [thread]
    call.finish(Usage(1000, 0, 0, 100, 0))
    assert HEARTBEAT.tracked() == set() and holds(installed) == []
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.reserved_usd == 0 and status.spent_usd > 0
    llmspend.uninstall()
    assert heartbeat_threads() == []


def test_a_lease_under_a_second_is_not_renewed(
    installed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", "0.5")
    llmspend.set_budget("project", "acme/churn", "1", "day")
    call = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=10, max_output_tokens=10
    )
    assert call is not None and call.reservation is not None
    assert HEARTBEAT.tracked() == set()
    call.finish(Usage(10, 0, 0, 10, 0))


def test_a_forked_child_renews_its_own_holds_only(installed: Any) -> None:
    """After fork, the child renews what it holds itself, never its parent's holds (if
    the parent dies, they must expire); the parent's heartbeat is unchanged."""
    llmspend.set_budget("project", "acme/churn", "1", "day")
    parent_call = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=10, max_output_tokens=10
    )
    assert parent_call is not None and parent_call.reservation is not None
    mine = parent_call.reservation.token
    assert HEARTBEAT.tracked() == {mine} and heartbeat_threads()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            report: dict[str, Any] = {"inherited": sorted(HEARTBEAT.tracked())}
            report["threads"] = len(heartbeat_threads())
            c = begin_call(
                "openai", "chat.completions", "gpt-4o-mini", input_tokens=10, max_output_tokens=10
            )
            assert c is not None and c.reservation is not None
            report["own"] = c.reservation.token
            report["tracked"] = sorted(HEARTBEAT.tracked())
            report["started"] = len(heartbeat_threads())
            c.finish(Usage(10, 0, 0, 10, 0))
            report["after"] = sorted(HEARTBEAT.tracked())
            os.write(write, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        report = json.loads(fh.read().decode())
    os.waitpid(child, 0)
    assert report["inherited"] == [] and report["threads"] == 0
    assert report["tracked"] == [report["own"]] and report["started"] == 1
    assert report["after"] == []
    assert HEARTBEAT.tracked() == {mine} and heartbeat_threads()
    parent_call.finish(Usage(10, 0, 0, 10, 0))
    assert HEARTBEAT.tracked() == set()


@pytest.mark.postgres
def test_the_heartbeat_locks_holds_in_token_order_as_a_budget_change_does(
    pg_server: Any,
) -> None:
    """A budget change locks every hold in token order (``holds.open_holds``); the
    heartbeat renewing several holds must take them in the same order, or the two can
    deadlock. The renewal waits on the lowest token while holding none of the others."""
    from sqlalchemy import create_engine, text

    from llmspend.store.engine import open_store

    url = pg_server.create_database()
    store = open_store(url)
    now = dt.datetime(2026, 1, 1)
    with store.begin(write=True) as conn:
        for token in ("b" * 32, "a" * 32):  # "b" stored first: a scan meets it first
            conn.execute(
                text(
                    "INSERT INTO llmspend_reservations (token, period_ids, amount_nanos, "
                    "created_at, lease_expires_at) VALUES (:t, '1', 1, :now, :now)"
                ),
                {"t": token, "now": now},
            )
    change = create_engine(url).connect()  # stands in for a change holding "a" first
    change.execute(
        text("SELECT token FROM llmspend_reservations WHERE token = :t FOR UPDATE"), {"t": "a" * 32}
    )
    done: list[int] = []
    beat = threading.Thread(
        target=lambda: done.append(heartbeat.renew(store, ["b" * 32, "a" * 32], 60))
    )
    beat.start()
    try:
        wait_for(
            lambda: change.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
            ).scalar(),
            what="the renewal waiting for a hold's lock",
        )
        # the change goes on to lock "b": free, since the renewal waits on "a" holding nothing
        got = change.execute(
            text("SELECT token FROM llmspend_reservations WHERE token = :t FOR UPDATE NOWAIT"),
            {"t": "b" * 32},
        ).scalar()
        assert got == "b" * 32
    finally:
        change.rollback()
        change.close()
        beat.join(timeout=60)
    assert done == [2]
    forget_store(url)
