"""The per-call write path's fast statements: the reservation and settlement on both stores
(one statement each on PostgreSQL) and fastsql's kept row classes."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest

import llmspend
from llmspend.call import Usage
from llmspend.errors import BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.store.fastsql import SQL, Tx
from llmspend.tracker import set_tracker


@pytest.fixture
def installed(tracker):  # type: ignore[no-untyped-def]
    set_tracker(tracker, installed=True)
    yield tracker
    set_tracker(tracker, installed=False)


def _call(inp: int = 1000, cap: int = 100) -> object:
    c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=inp,
                   max_output_tokens=cap)  # fmt: skip
    assert c is not None
    return c


def _periods(tracker) -> list[tuple[str, int, int, int]]:  # type: ignore[no-untyped-def]
    with tracker.store.begin() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT b.name, p.spent_nanos, p.reserved_nanos, p.calls FROM "
                "llmspend_budget_periods p JOIN llmspend_budgets b ON b.id = p.budget_id "
                "ORDER BY b.name"
            )
        ]


def _holds(tracker) -> int:  # type: ignore[no-untyped-def]
    with tracker.store.begin() as conn:
        return int(conn.exec_driver_sql("SELECT COUNT(*) FROM llmspend_reservations").scalar())


def test_reserve_and_settle_on_soft_and_hard_budgets(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("org", "acme", "100", mode="soft")
    llmspend.set_budget("project", "acme/churn", "100")
    llmspend.set_budget("user", "acme/ana", "100", "day", mode="soft")
    c = _call()
    held = c.reservation.amount  # type: ignore[attr-defined]
    assert held > 0 and _holds(installed) == 1
    assert [r[2] for r in _periods(installed)] == [held, held, held]
    row = c.finish(Usage(input_tokens=1000, output_tokens=50))  # type: ignore[attr-defined]
    cost = row["cost_nanos"]
    assert 0 < cost < held
    assert _periods(installed) == [("acme", cost, 0, 1), ("acme/ana", cost, 0, 1),
                                   ("acme/churn", cost, 0, 1)]  # fmt: skip
    assert _holds(installed) == 0
    c = _call()  # the periods exist: PostgreSQL reserves in the lookup's round trips
    assert [r[2] for r in _periods(installed)] == [held, held, held]
    row = c.finish(Usage(input_tokens=1000, output_tokens=50))  # type: ignore[attr-defined]
    installed.guard.release_standing()  # SQLite may keep the hold for the thread's next call
    assert [r[1:] for r in _periods(installed)] == [(cost + row["cost_nanos"], 0, 2)] * 3
    assert _holds(installed) == 0


def test_a_refusal_changes_nothing_on_any_budget(installed) -> None:  # type: ignore[no-untyped-def]
    """A hard budget without room: nothing reserved on the soft ones either, no hold."""
    llmspend.set_budget("org", "acme", "100", mode="soft")
    llmspend.set_budget("project", "acme/churn", "0.000001")
    llmspend.set_budget("user", "acme/ana", "100", "day", mode="soft")
    for _ in range(2):  # the periods made by the first; the second reserves at lookup
        with pytest.raises(BudgetExceeded) as e:
            _call()
        assert e.value.budget == "acme/churn"
    assert [r[1:] for r in _periods(installed)] == [(0, 0, 0)] * 3
    assert _holds(installed) == 0


def test_settling_a_reclaimed_hold_gives_back_nothing_twice(installed) -> None:  # type: ignore[no-untyped-def]
    """A hold whose lease ran out and was given back: settlement adds the cost only."""
    llmspend.set_budget("project", "acme/churn", "100")
    c = _call()
    from llmspend.budgets.holds import give_back

    with installed.store.tx(write=True) as tx:
        give_back(tx, [c.reservation])  # type: ignore[attr-defined]
    assert _periods(installed)[0][1:] == (0, 0, 0)
    row = c.finish(Usage(input_tokens=1000, output_tokens=50))  # type: ignore[attr-defined]
    assert _periods(installed)[0][1:] == (row["cost_nanos"], 0, 1)


def test_a_statement_keeps_its_row_class_per_width() -> None:
    """fastsql's invariant: the row class is made once per statement and dialect, and made
    again when a row of another width comes (a table changed under ``SELECT *``)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (a INTEGER)")
    conn.execute("INSERT INTO t VALUES (1)")
    tx = Tx(conn, SimpleNamespace(name="sqlite"))
    every = SQL("SELECT * FROM t")
    assert tx.run(every).one()._fields == ("a",)
    conn.execute("ALTER TABLE t ADD COLUMN b INTEGER DEFAULT 2")
    row = tx.run(every).one()
    assert row._fields == ("a", "b") and (row.a, row.b) == (1, 2)
    assert tx.run(SQL("SELECT a AS x FROM t")).all()[0].x == 1
