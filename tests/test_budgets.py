"""Budgets: definitions, validation, audit, hierarchy, status and enforcement."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

import llmspend
from llmspend.budgets.ledger import candidate_budgets, ensure_period
from llmspend.budgets.manage import audit_log
from llmspend.call import Usage
from llmspend.errors import BudgetError, BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.timeutil import utcnow


def call(model: str = "gpt-4o-mini", *, inp: int = 1000, out: int = 100, cap: int = 100, **attr):  # type: ignore[no-untyped-def]
    """One call through the real pipeline (no provider): reserve, then settle."""
    with llmspend.attribute(**attr):
        c = begin_call("openai", "chat.completions", model, input_tokens=inp, max_output_tokens=cap)
    assert c is not None
    return c.finish(Usage(input_tokens=inp, output_tokens=out))


def cost_of(inp: int, out: int, model: str = "gpt-4o-mini") -> Decimal:
    return llmspend.price(model, provider="openai", input_tokens=inp, output_tokens=out).total_usd  # type: ignore[return-value]


# -- definitions and bad input ----------------------------------------------------------


def test_set_list_update_delete_with_audit(tracker) -> None:  # type: ignore[no-untyped-def]
    b = llmspend.set_budget(
        "project", "acme/churn", "100", "month", mode="hard", thresholds=(0.5, 0.8, 1.0)
    )
    assert (b.scope, b.name, b.limit_usd, b.period, b.mode) == (
        "project",
        "acme/churn",
        Decimal(100),
        "month",
        "hard",
    )
    assert b.thresholds == (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))
    llmspend.set_budget("org", "acme", Decimal("500"))
    assert [x.name for x in llmspend.list_budgets()] == ["acme", "acme/churn"]
    b2 = llmspend.update_budget("project", "acme/churn", limit="150", mode="soft")
    assert (b2.limit_usd, b2.mode, b2.period) == (Decimal(150), "soft", "month")
    llmspend.delete_budget("project", "acme/churn")
    assert [x.name for x in llmspend.list_budgets()] == ["acme"]
    log = audit_log(tracker.store)
    assert list(log.action) == ["create", "create", "update", "delete"]
    upd = log.iloc[2]
    assert upd.budget == "project acme/churn" and upd.actor == "tester"
    assert upd.old["limit_usd"] == "100" and upd.new["limit_usd"] == "150"
    assert upd.old["mode"] == "hard" and upd.new["mode"] == "soft"
    assert log.iloc[3].new is None


BAD = [
    (("project", "acme/churn", "-5"), {}, "greater than 0"),
    (("project", "acme/churn", 0), {}, "greater than 0"),
    (("project", "acme/churn", "NaN"), {}, "finite"),
    (("project", "acme/churn", float("inf")), {}, "finite"),
    (("project", "acme/churn", "lots"), {}, "amount of USD"),
    (("project", "acme/churn", None), {}, "amount of USD"),
    (("project", "acme/churn", [5]), {}, "amount of USD"),
    (("team", "acme", "5"), {}, "unknown budget scope"),
    (("project", "acme", "5"), {}, "org/project"),
    (("org", "acme/x", "5"), {}, "named like 'acme'"),
    (("user", "a/b/c/d", "5"), {}, "org/user"),
    (("project", "acme/", "5"), {}, "bad budget name"),
    (("org", "", "5"), {}, "non-empty"),
    (("org", "acme", "5"), {"timezone": "Mars/Base"}, "unknown time zone"),
    (("org", "acme", "5"), {"thresholds": (0.5, 1.5)}, r"\(0, 1\]"),
    (("org", "acme", "5"), {"thresholds": (0,)}, r"\(0, 1\]"),
    (("org", "acme", "5"), {"thresholds": (0.8, 0.5)}, "increasing"),
    (("org", "acme", "5"), {"thresholds": "0.5"}, "sequence"),
    (("org", "acme", "5"), {"mode": "strict"}, "unknown mode"),
    (("org", "acme", "5", "fortnight"), {}, "unknown period"),
    (("org", "acme", "5"), {"week_start": 9}, "week_start"),
]


@pytest.mark.parametrize(
    "args, kwargs, message", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)]
)
def test_bad_input_is_a_clear_error_and_changes_nothing(tracker, args, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BudgetError, match=message):
        llmspend.set_budget(*args, **kwargs)
    assert llmspend.list_budgets() == []
    assert audit_log(tracker.store).empty


def test_user_budget_creates_its_org(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("user", "neworg/zoe", "5", "day")
    with tracker.store.begin() as conn:
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM llmspend_orgs WHERE name='neworg'").scalar()
            == 1
        )
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM llmspend_users WHERE name='zoe'").scalar()
            == 1
        )


def test_unknown_budget_errors(tracker) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BudgetError, match="no project acme/none budget"):
        llmspend.delete_budget("project", "acme/none")
    with pytest.raises(BudgetError):
        llmspend.update_budget("org", "nobody", limit=5)
    with pytest.raises(BudgetError, match="cannot update"):
        llmspend.set_budget("org", "acme", 5)
        llmspend.update_budget("org", "acme", colour="red")


# -- status agrees with records ---------------------------------------------------------


def test_existing_spend_counts_when_a_budget_is_set(tracker) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    llmspend.ingest(
        [
            {
                "ts": now - dt.timedelta(minutes=5),
                "provider": "openai",
                "model": "m",
                "cost_usd": "1.25",
                "org": "acme",
                "project": "churn",
                "user": "ana",
            },
            {
                "ts": now - dt.timedelta(minutes=4),
                "provider": "openai",
                "model": "m",
                "cost_usd": "0.75",
                "org": "acme",
                "project": "other",
                "user": "bob",
            },
        ]
    )
    llmspend.set_budget("org", "acme", "10")
    llmspend.set_budget("project", "acme/churn", "10")
    by_name = {s.budget: s for s in llmspend.budget_status()}
    assert by_name["acme"].spent_usd == Decimal("2")
    assert by_name["acme/churn"].spent_usd == Decimal("1.25")
    assert by_name["acme"].remaining_usd == Decimal(8)
    assert by_name["acme"].percent_used == 20.0
    assert by_name["acme"].state == "ok"


def test_status_fields_and_projection(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", "0.0004", "day", thresholds=(0.5, 0.8, 1.0))
    call(inp=1000, out=100)  # gpt-4o-mini: $0.00015 + $0.00006
    (s,) = llmspend.budget_status("project", "acme/churn")
    spent = cost_of(1000, 100)
    assert s.spent_usd == spent == Decimal("0.00021")
    assert s.reserved_usd == 0
    assert s.remaining_usd == Decimal("0.0004") - spent
    assert s.percent_used == pytest.approx(52.5)
    assert s.state == "ok"
    assert s.calls == 1
    assert s.period_end - s.period_start == dt.timedelta(days=1)
    assert s.projected_usd is not None and s.projected_usd >= s.spent_usd
    records = llmspend.records()
    assert sum(records.cost_usd) == s.spent_usd


# -- enforcement ------------------------------------------------------------------------


def test_hard_budget_refuses_before_sending_with_a_readable_message(installed) -> None:  # type: ignore[no-untyped-def]
    one_call = cost_of(1000, 100)
    llmspend.set_budget("project", "acme/churn", one_call * 2, "month")
    call()
    call()
    with pytest.raises(BudgetExceeded) as info:
        call()
    e = info.value
    assert e.budget == "acme/churn" and e.scope == "project"
    assert e.limit == one_call * 2 and e.spent == one_call * 2 and e.reserved == 0
    assert e.estimate == one_call
    assert e.resets_at is not None and e.resets_at.day == 1
    msg = str(e)
    assert "acme/churn" in msg and "limit" in msg and "spent" in msg and "reserved" in msg
    assert "estimate" in msg and "resets at" in msg and "Nothing was sent" in msg
    rows = llmspend.records()
    assert list(rows.status) == ["ok", "ok", "refused"]
    assert rows.iloc[2].cost_usd == 0 and rows.iloc[2].error_type == "BudgetExceeded"
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.spent_usd == one_call * 2 and s.state == "exceeded"


def test_refusal_holds_nothing_on_other_budgets(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("org", "acme", "100")
    llmspend.set_budget("user", "acme/ana", cost_of(1000, 100) / 2, "day")
    with pytest.raises(BudgetExceeded):
        call()
    org = llmspend.budget_status("org", "acme")[0]
    assert org.reserved_usd == 0 and org.spent_usd == 0


def test_soft_budget_allows_and_keeps_counting(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("user", "acme/ana", cost_of(1000, 100) / 2, "day", mode="soft")
    call()
    call()
    (s,) = llmspend.budget_status("user", "acme/ana")
    assert s.spent_usd == cost_of(1000, 100) * 2
    assert s.state == "exceeded" and s.percent_used == 400.0


def test_worst_case_uses_the_output_cap(installed) -> None:  # type: ignore[no-untyped-def]
    # Room for 1000 input + 100 output, but the request allows 10,000 output tokens.
    llmspend.set_budget("project", "acme/churn", cost_of(1000, 100), "day")
    with pytest.raises(BudgetExceeded) as info:
        call(cap=10_000)
    assert info.value.estimate == cost_of(1000, 10_000)


def test_unpriced_model_refused_by_hard_budget_unless_allowed(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", "10", "day")
    with pytest.warns(Warning), pytest.raises(BudgetExceeded, match="unpriced"):
        call("no-such-model-xyz")
    llmspend.update_budget("project", "acme/churn", unpriced="allow")
    row = call("no-such-model-xyz")
    assert row is not None and row["price_status"] == "unknown" and row["cost_nanos"] is None


def test_error_releases_the_reservation(installed) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", "1", "day")
    c = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert c is not None
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.reserved_usd == cost_of(1000, 100)
    c.finish(None, status="error", error=TimeoutError("x"))
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.reserved_usd == 0 and s.spent_usd == 0


def test_expired_lease_is_reclaimed(installed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", "0.001")
    llmspend.set_budget("project", "acme/churn", "1", "day")
    c = begin_call(
        "openai", "chat.completions", "gpt-4o-mini", input_tokens=1000, max_output_tokens=100
    )
    assert c is not None
    import time

    time.sleep(0.01)
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.reserved_usd == 0  # the lease ran out: the budget is whole again
    c.finish(Usage(1000, 0, 0, 100, 0))  # the late settle still charges what was spent
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.reserved_usd == 0 and s.spent_usd == cost_of(1000, 100)


# -- hierarchy --------------------------------------------------------------------------


def test_inheritance_defaults_and_explicit_override(installed) -> None:  # type: ignore[no-untyped-def]
    c = cost_of(1000, 100)
    llmspend.set_budget("user", "acme/*", c * 3, "day")  # each user of acme: 3 calls a day
    llmspend.set_budget("user", "acme/bob", c * 1, "day")  # bob explicitly: 1 call
    llmspend.set_budget("project", "acme/*", "100", "month")  # each project
    for _ in range(3):
        call(user="ana")
    with pytest.raises(BudgetExceeded) as info:
        call(user="ana")
    assert info.value.budget == "acme/ana"  # materialized from the default
    call(user="bob")
    with pytest.raises(BudgetExceeded) as info:
        call(user="bob")
    assert info.value.budget == "acme/bob"
    status = {s.budget: s for s in llmspend.budget_status()}
    assert status["acme/ana"].inherited and not status["acme/bob"].inherited
    assert status["acme/churn"].inherited and status["acme/churn"].spent_usd == c * 4
    # aggregation matches the records
    rec = llmspend.records(status="ok")
    assert status["acme/ana"].spent_usd == sum(rec[rec.user == "ana"].cost_usd)
    assert status["acme/churn"].spent_usd == sum(rec[rec.project == "churn"].cost_usd)
    # changing the default reaches the children made from it, not the explicit one
    llmspend.update_budget("user", "acme/*", limit=c * 10)
    status = {s.budget: s for s in llmspend.budget_status()}
    assert status["acme/ana"].limit_usd == c * 10
    assert status["acme/bob"].limit_usd == c


def test_user_within_project_and_across_org(installed) -> None:  # type: ignore[no-untyped-def]
    c = cost_of(1000, 100)
    llmspend.set_budget("user", "acme/churn/ana", c, "day")
    llmspend.set_budget("user", "acme/ana", c * 5, "day")
    call(user="ana", project="churn")
    with pytest.raises(BudgetExceeded) as info:
        call(user="ana", project="churn")
    assert info.value.budget == "acme/churn/ana"
    call(user="ana", project="other")  # the project budget does not apply elsewhere
    status = {s.budget: s for s in llmspend.budget_status()}
    assert status["acme/ana"].spent_usd == c * 2


def test_month_roll_over_keeps_history(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("org", "acme", "10", "month")
    with tracker.store.begin(write=True) as conn:
        (b,) = candidate_budgets(conn, "acme", "any", "one")
        jan = ensure_period(conn, b, dt.datetime(2026, 1, 31, 23, 59))
        feb = ensure_period(conn, b, dt.datetime(2026, 2, 1, 0, 0))
        again = ensure_period(conn, b, dt.datetime(2026, 2, 14))
    assert jan.id != feb.id and feb.id == again.id
    hist = llmspend.budget_history("org", "acme")
    starts = [t.to_pydatetime().replace(tzinfo=None) for t in hist.period_start]
    assert dt.datetime(2026, 1, 1) in starts and dt.datetime(2026, 2, 1) in starts


def test_ingested_history_counts_in_existing_periods(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("project", "acme/churn", "10", "day")
    now = utcnow()
    llmspend.ingest(
        [
            {"ts": now, "provider": "openai", "model": "m", "cost_usd": "1.5", "project": "churn"},
            {"ts": now, "provider": "openai", "model": "m", "cost_usd": "2", "project": "other"},
            {
                "ts": now - dt.timedelta(days=3),
                "provider": "openai",
                "model": "m",
                "cost_usd": "4",
                "project": "churn",
            },
        ]
    )
    (s,) = llmspend.budget_status("project", "acme/churn")
    assert s.spent_usd == Decimal("1.5") and s.calls == 1


def test_a_forked_child_names_its_holds_as_its_own(tracker: llmspend.Tracker) -> None:
    """The owner of a hold is ``host:pid`` of the process that made it: a forked child's
    own, so that neither it nor its parent mistakes the other's holds for its own."""
    import os

    parent = tracker.guard.owner
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, tracker.guard.owner.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        owner = fh.read().decode()
    os.waitpid(child, 0)
    assert parent.endswith(f":{os.getpid()}")
    assert owner.endswith(f":{child}") and owner != parent
