"""Standing holds (SQLite): a thread's last hold kept for its next call, and given back.

Read from outside (a plain sqlite3 connection, as another kernel would see the store), so
that nothing in this process gives the holds back before they are looked at.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

import llmspend
from llmspend.call import Usage
from llmspend.errors import BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.store.engine import forget_store

ONE = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out: estimate and cost alike
NANOS = 10**9


def spend() -> None:
    c = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert c is not None
    c.finish(Usage(input_tokens=1000, output_tokens=100))


def outside(path: str | Path) -> tuple[Decimal, Decimal, list[str]]:
    """(spent, reserved) of the one budget's current period, and the hold rows' tokens."""
    with sqlite3.connect(path) as conn:
        (spent, reserved), *_ = conn.execute(
            "SELECT spent_nanos, reserved_nanos FROM llmspend_budget_periods"
        ).fetchall()
        tokens = [t for (t,) in conn.execute("SELECT token FROM llmspend_reservations")]
    return Decimal(spent) / NANOS, Decimal(reserved) / NANOS, tokens


def store_path(tracker: Any) -> str:
    return str(tracker.settings.database_url.removeprefix("sqlite:///"))


def two_calls(tracker: Any, limit: Decimal = ONE * 100) -> str:
    """A daily project budget of ``limit`` and two calls made under it (the first reads
    the budgets; the second finds them remembered and keeps its hold standing)."""
    llmspend.set_budget("project", "acme/churn", limit, "day")
    spend()
    spend()
    return store_path(tracker)


def wait_for(check: Any, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_back_to_back_calls_reuse_one_hold_and_give_it_back_when_idle(installed) -> None:  # type: ignore[no-untyped-def]
    path = two_calls(installed)
    spent, reserved, tokens = outside(path)
    assert (spent, reserved, len(tokens)) == (ONE * 2, ONE, 1)  # one call's worst case stands
    for _ in range(3):
        spend()
    assert outside(path) == (ONE * 5, ONE, tokens)  # the same hold served all three
    # No call for a while: the hold is given back (by a thread of this process).
    assert wait_for(lambda: outside(path)[2] == [])
    assert outside(path) == (ONE * 5, 0, [])
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert (s.spent_usd, s.reserved_usd, s.calls) == (ONE * 5, 0, 5)


def test_a_status_read_in_the_kernel_gives_its_standing_hold_back(installed) -> None:  # type: ignore[no-untyped-def]
    path = two_calls(installed)
    _, reserved, before = outside(path)
    assert reserved == ONE
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert (s.spent_usd, s.reserved_usd) == (ONE * 2, 0)
    assert outside(path) == (ONE * 2, 0, [])
    spend()  # the next call reserves afresh (and keeps that hold for the one after)
    spent, reserved, after = outside(path)
    assert (spent, reserved) == (ONE * 3, ONE) and after != before


def test_a_hold_stands_only_while_the_budget_has_room_for_another_call(installed) -> None:  # type: ignore[no-untyped-def]
    path = two_calls(installed, limit=ONE * 3)
    assert outside(path)[:2] == (ONE * 2, ONE)  # 2 spent + 1 held fits the limit of 3
    spend()  # the third call uses it; a fourth would not fit, so nothing is kept
    assert outside(path) == (ONE * 3, 0, [])
    with pytest.raises(BudgetExceeded) as info:
        spend()
    assert (info.value.spent, info.value.reserved) == (ONE * 3, 0)


@pytest.mark.parametrize("how", ["uninstall", "install on another store"])
def test_uninstall_or_a_new_store_gives_the_standing_hold_back(installed, tmp_path, how) -> None:  # type: ignore[no-untyped-def]
    path = two_calls(installed)
    assert outside(path)[1] == ONE
    if how == "uninstall":
        llmspend.uninstall()
    else:
        other = f"sqlite:///{tmp_path / 'other.sqlite'}"
        llmspend.install(other, org="acme", project="churn", user="ana")
        forget_store(other)
    assert outside(path) == (ONE * 2, 0, [])


def test_a_budget_lowered_by_another_process_is_met_by_the_next_call(installed) -> None:  # type: ignore[no-untyped-def]
    """A commit by another connection makes the hold unusable: it is given back in the
    transaction of the next call's reservation, which meets the new limit."""
    path = two_calls(installed)
    assert len(outside(path)[2]) == 1
    with sqlite3.connect(path) as conn:  # another kernel lowers the limit to what is spent
        conn.execute("UPDATE llmspend_budget_periods SET limit_nanos = spent_nanos + 1")
    with pytest.raises(BudgetExceeded) as info:
        spend()
    assert info.value.budget == "acme/churn" and info.value.reserved == 0
    assert outside(path) == (ONE * 2, 0, [])


def test_a_settlement_meets_what_another_kernel_committed_while_the_call_was_out(installed) -> None:  # type: ignore[no-untyped-def]
    """Settlements after the first keep the periods' rows in memory instead of reading
    them back; a commit by another connection while a call is out must not be missed."""
    path = two_calls(installed, limit=ONE * 10)
    spend()  # settled from what the last settlement left: 3 spent, 1 held
    assert outside(path)[:2] == (ONE * 3, ONE)
    c = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert c is not None  # sent on the standing hold
    with sqlite3.connect(path) as conn:  # another kernel settles 6 calls meanwhile
        conn.execute("UPDATE llmspend_budget_periods SET spent_nanos = spent_nanos + ?",
                     (int(ONE * 6 * NANOS),))  # fmt: skip
    c.finish(Usage(input_tokens=1000, output_tokens=100))
    # 10 spent: no room for another call, so the hold is given back, not kept.
    assert outside(path) == (ONE * 10, 0, [])


def test_a_settlement_meets_what_this_thread_wrote_for_another_user(installed) -> None:  # type: ignore[no-untyped-def]
    """Another user's calls on the same thread write through the same connection (no
    data_version change): the next settlement of the first user's hold still counts them."""
    path = two_calls(installed, limit=ONE * 10)
    spend()  # ana: 3 spent, her hold of 1 standing
    with llmspend.attribute(user="bob"):
        for _ in range(5):  # bob's calls on the same project budget
            spend()
    spent, reserved, tokens = outside(path)
    assert (spent, reserved, len(tokens)) == (ONE * 8, ONE * 2, 2)  # both holds stand
    spend()  # ana: 9 spent + bob's hold of 1 leaves no room for her next call
    spent, reserved, tokens = outside(path)
    assert (spent, reserved, len(tokens)) == (ONE * 9, ONE, 1)


KERNEL = r"""
import sys, llmspend
from llmspend.call import Usage
from llmspend.pipeline import begin_call
llmspend.install(sys.argv[1], org="acme", project="churn", user="ana")
for _ in range(int(sys.argv[2])):
    c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1000,
                   max_output_tokens=100)
    c.finish(Usage(input_tokens=1000, output_tokens=100))
print("done", flush=True)
sys.stdin.readline()  # stays alive (and idle) until told to exit
"""


def other_kernel(path: Path, calls: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", KERNEL, f"sqlite:///{path}", str(calls)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "done"
    return proc


@pytest.mark.usefixtures("patient_locks")
def test_a_call_refused_only_for_another_kernels_hold_waits_for_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "two.sqlite"
    llmspend.install(f"sqlite:///{path}", org="acme", project="churn", user="ana")
    proc = None
    try:
        llmspend.set_budget("project", "acme/churn", ONE * 3, "total")
        proc = other_kernel(path, 2)
        # The other kernel's hold stands: 2 spent + 1 held leaves no room for this call,
        # until that kernel, idle, gives it back; the call waits for that, then fits.
        assert outside(path)[:2] == (ONE * 2, ONE)
        spend()
        assert outside(path) == (ONE * 3, 0, [])
        assert len(llmspend.records(status="ok")) == 3
    finally:
        if proc is not None:
            proc.communicate("\n", timeout=60)
        llmspend.uninstall()
        forget_store(f"sqlite:///{path}")


@pytest.mark.usefixtures("patient_locks")
def test_a_kernel_that_exits_gives_its_standing_hold_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "exit.sqlite"
    llmspend.install(f"sqlite:///{path}", org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("project", "acme/churn", ONE * 100, "total")
        llmspend.uninstall()
        proc = other_kernel(path, 3)
        proc.communicate("\n", timeout=60)  # exits at once, well before it is idle
        assert proc.returncode == 0
        assert outside(path) == (ONE * 3, 0, [])
    finally:
        llmspend.uninstall()
        forget_store(f"sqlite:///{path}")


def test_asyncio_tasks_of_one_thread_settle_exactly(installed, fresh_sim) -> None:  # type: ignore[no-untyped-def]
    """Tasks interleave on the thread's one connection: one of them at a time may use the
    standing hold; the others reserve their own. Nothing is counted twice or left held."""
    path = store_path(installed)
    llmspend.set_budget("project", "acme/churn", "10", "day")
    client = openai.AsyncOpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    msgs = [{"role": "user", "content": "hello there"}]

    async def main() -> None:
        for _ in range(3):
            await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=msgs, max_tokens=40
                    )
                    for _ in range(8)
                )
            )
        await client.close()

    asyncio.run(main())
    rec = llmspend.records()
    assert len(rec) == 24 and (rec.status == "ok").all()
    spent, reserved, tokens = outside(path)
    assert spent == sum(rec.cost_usd) and len(tokens) <= 1  # at most the one standing
    assert reserved == (max(rec.estimate_usd) if tokens else 0)
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert (s.spent_usd, s.reserved_usd, s.calls) == (sum(rec.cost_usd), 0, 24)
    assert outside(path)[1:] == (0, [])
