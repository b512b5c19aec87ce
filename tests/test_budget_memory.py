"""PostgreSQL: the guard remembers who has which budgets (migration 0016).

After the first call of an identity, the next ones send the reservation alone, which goes
ahead only while the budgets' version is the one read with the lookup. Every change to
the budgets — through llmspend, by plain SQL from another client, in a transaction still
open — must be seen by the next call exactly as without the memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend.call import Usage
from llmspend.errors import BudgetExceeded
from llmspend.pipeline import begin_call
from llmspend.tracker import Tracker, set_tracker
from tests.migrating import migrate

pytestmark = pytest.mark.postgres

TINY = Decimal("0.000001")  # below any call's worst case


@pytest.fixture
def pg_tracker(pg_server) -> Iterator[Tracker]:  # type: ignore[no-untyped-def]
    from llmspend.store.engine import forget_store

    url = pg_server.create_database()
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    set_tracker(tracker, installed=True)
    yield tracker
    set_tracker(None)
    forget_store(url)


def _other_client(tracker: Tracker):  # type: ignore[no-untyped-def]
    """A plain psycopg connection to the same database: an administrator's, or another
    replica's."""
    import psycopg

    dsn = tracker.store.url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn)


def call() -> None:
    """One call through the real pipeline (no provider): reserve, then settle."""
    c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1000,
                   max_output_tokens=100)  # fmt: skip
    assert c is not None
    c.finish(Usage(input_tokens=1000, output_tokens=100))


def _remembered(tracker: Tracker) -> int:
    """How many identities the guard remembers the budgets of."""
    return len(tracker.guard._remembered)


def _version(tracker: Tracker) -> int:
    with _other_client(tracker) as conn:
        row = conn.execute("SELECT version FROM llmspend_budget_config WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


def test_a_budget_made_after_the_first_call_refuses_the_next(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month")
    call()
    call()
    assert _remembered(pg_tracker) == 1  # the second call used what the first looked up
    llmspend.set_budget("user", "acme/churn/ana", TINY, "day", mode="hard")
    with pytest.raises(BudgetExceeded, match="acme/churn/ana"):
        call()


def test_a_budget_turned_hard_by_plain_sql_elsewhere_is_seen(pg_tracker: Tracker) -> None:
    llmspend.set_budget("project", "acme/churn", TINY, "day", mode="soft")
    call()
    call()  # soft: over its limit, and let through
    assert _remembered(pg_tracker) == 1
    with _other_client(pg_tracker) as conn:
        conn.execute("UPDATE llmspend_budgets SET mode = 'hard' WHERE name = 'acme/churn'")
    with pytest.raises(BudgetExceeded, match="acme/churn"):
        call()


def test_a_change_counts_when_it_commits(pg_tracker: Tracker) -> None:
    llmspend.set_budget("project", "acme/churn", TINY, "day", mode="soft")
    call()
    before = _version(pg_tracker)
    conn = _other_client(pg_tracker)
    try:
        conn.execute("UPDATE llmspend_budgets SET mode = 'hard' WHERE name = 'acme/churn'")
        call()  # not committed yet: the budget is still soft for everyone else
        assert _version(pg_tracker) == before
        conn.commit()
    finally:
        conn.close()
    assert _version(pg_tracker) == before + 1
    with pytest.raises(BudgetExceeded):
        call()


def test_a_budget_deleted_elsewhere_no_longer_refuses(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month")
    llmspend.set_budget("user", "acme/churn/ana", "0.01", "day", mode="hard")
    call()
    assert _remembered(pg_tracker) == 1
    with _other_client(pg_tracker) as conn:
        conn.execute("UPDATE llmspend_budgets SET limit_nanos = 1 WHERE name = 'acme/churn/ana'")
        conn.execute("UPDATE llmspend_budget_periods SET limit_nanos = 1 WHERE budget_id = "
                     "(SELECT id FROM llmspend_budgets WHERE name = 'acme/churn/ana')")  # fmt: skip
    with pytest.raises(BudgetExceeded):
        call()
    llmspend.delete_budget("user", "acme/churn/ana")
    call()  # only the org's budget applies now
    status = {(s.scope, s.budget): s for s in llmspend.budget_status()}
    assert list(status) == [("org", "acme")] and status["org", "acme"].spent_usd > 0


def test_every_call_is_charged_once_through_the_memory(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month", mode="hard")
    llmspend.set_budget("project", "acme/churn", "100", "week")
    for _ in range(5):
        call()
    status = {s.budget: s for s in llmspend.budget_status()}
    spent = llmspend.records().cost_usd.sum()
    assert len(llmspend.records()) == 5 and spent > 0
    assert status["acme"].spent_usd == status["acme/churn"].spent_usd == spent
    assert status["acme"].reserved_usd == status["acme/churn"].reserved_usd == 0
    with _other_client(pg_tracker) as conn:
        assert conn.execute("SELECT count(*) FROM llmspend_reservations").fetchone() == (0,)


def test_a_store_before_migration_0016_still_checks_budgets(pg_tracker: Tracker) -> None:
    from alembic import command

    from llmspend.store.migrate import alembic_config

    with pg_tracker.store.begin(write=True) as conn:
        command.downgrade(alembic_config(conn), "0015")
    llmspend.set_budget("user", "acme/churn/ana", TINY, "day", mode="hard")
    for _ in range(2):
        with pytest.raises(BudgetExceeded):
            call()
    assert _remembered(pg_tracker) == 0


def unpriced_call() -> None:
    """A call of a model no price is known for (its worst case cannot be priced)."""
    c = begin_call("openai", "chat.completions", "no-such-model-r1", input_tokens=10,
                   max_output_tokens=10)  # fmt: skip
    assert c is not None
    c.finish(Usage(input_tokens=10, output_tokens=10))


@pytest.mark.filterwarnings("ignore::llmspend.UnknownModelWarning")
def test_an_unpriced_call_sees_a_budget_made_after_the_first_call(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month", unpriced="allow")
    call()
    unpriced_call()  # the org's budget lets unpriced calls through
    assert _remembered(pg_tracker) == 1
    llmspend.set_budget("user", "acme/churn/ana", "100", "day")  # hard: refuses them
    with pytest.raises(BudgetExceeded, match="unpriced"):
        unpriced_call()


@pytest.mark.filterwarnings("ignore::llmspend.UnknownModelWarning")
def test_an_unpriced_call_sees_its_policy_changed_elsewhere(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month", unpriced="allow")
    call()
    assert _remembered(pg_tracker) == 1
    with _other_client(pg_tracker) as conn:
        conn.execute("UPDATE llmspend_budgets SET unpriced_policy = 'refuse'")
    with pytest.raises(BudgetExceeded, match="unpriced"):
        unpriced_call()


def test_remembered_budgets_on_a_store_taken_back_before_0016(pg_tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100", "month")
    call()
    assert _remembered(pg_tracker) == 1
    migrate(pg_tracker.store, "0015", down=True)
    call()  # checked as before 0016, not failed closed as if the store were down
    llmspend.set_budget("user", "acme/churn/ana", TINY, "day")
    with pytest.raises(BudgetExceeded, match="acme/churn/ana"):
        call()
    migrate(pg_tracker.store, "0016")
    with pytest.raises(BudgetExceeded, match="acme/churn/ana"):
        call()


def test_a_version_made_again_is_not_mistaken_for_the_remembered_one(
    pg_tracker: Tracker,
) -> None:
    llmspend.set_budget("org", "acme", "100", "month")
    call()
    assert _remembered(pg_tracker) == 1
    remembered = _version(pg_tracker)
    migrate(pg_tracker.store, "0015", down=True)  # the version row goes, and comes back anew
    migrate(pg_tracker.store, "0016")
    llmspend.set_budget("user", "acme/churn/ana", TINY, "day")
    while _version(pg_tracker) < remembered:  # counted up again to the remembered number
        llmspend.set_budget("user", "acme/churn/ana", TINY, "day")
    assert _version(pg_tracker) == remembered
    with pytest.raises(BudgetExceeded, match="acme/churn/ana"):
        call()


def _period_ids(tracker: Tracker) -> list[int]:
    """The period ids the guard remembers for acme/churn/ana."""
    hit = tracker.guard._remembered[("acme", "churn", "ana")]
    return [t.period_id for t in hit.found.targets or []]


def test_a_period_row_deleted_elsewhere_is_made_again_and_remembered(
    pg_tracker: Tracker,
) -> None:
    llmspend.set_budget("org", "acme", "100", "month")
    call()
    (old,) = _period_ids(pg_tracker)
    with _other_client(pg_tracker) as conn:  # no budget changed: the version stays
        conn.execute("DELETE FROM llmspend_budget_periods WHERE id = %s", (old,))
    call()  # the remembered period is gone: refused, then made again
    call()
    (new,) = _period_ids(pg_tracker)
    assert new != old
    (status,) = llmspend.budget_status()
    assert status.spent_usd == llmspend.records().cost_usd.sum() and status.reserved_usd == 0


def test_the_version_row_is_locked_only_as_a_change_commits(pg_tracker: Tracker) -> None:
    """An open transaction that changed a budget holds no lock on the version row (the
    trigger is deferred to its commit): no call or other change waits for it there, and
    the version row is the last lock any transaction takes."""
    import psycopg

    llmspend.set_budget("org", "acme", "100", "month")
    llmspend.set_budget("user", "acme/*", "100", "day")  # a default: calls make budgets
    call()
    admin, probe = _other_client(pg_tracker), _other_client(pg_tracker)
    try:
        admin.execute("UPDATE llmspend_budgets SET mode = 'soft' WHERE name = 'acme'")
        probe.execute("SELECT 1 FROM llmspend_budget_config FOR UPDATE NOWAIT")
        probe.rollback()
        with llmspend.attribute(user="bea"):  # makes acme/bea's budget: a change, committed
            call()
        probe.execute("SELECT 1 FROM llmspend_budget_config FOR UPDATE NOWAIT")
        probe.rollback()
        admin.commit()
    except psycopg.errors.LockNotAvailable:  # pragma: no cover - the failure
        pytest.fail("the version row was locked before the change committed")
    finally:
        admin.close()
        probe.close()
    with llmspend.attribute(user="cy"):
        call()
    assert {s.budget for s in llmspend.budget_status()} >= {"acme/bea", "acme/cy"}


def test_a_change_made_with_replica_triggers_off_is_seen(pg_tracker: Tracker) -> None:
    """A session in ``session_replication_role = replica`` (logical replication's apply,
    bulk fixes that skip foreign-key checks) still raises the version."""
    llmspend.set_budget("project", "acme/churn", TINY, "day", mode="soft")
    call()
    assert _remembered(pg_tracker) == 1
    with _other_client(pg_tracker) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE llmspend_budgets SET mode = 'hard' WHERE name = 'acme/churn'")
    with pytest.raises(BudgetExceeded, match="acme/churn"):
        call()


def test_a_change_between_the_version_and_the_lookup_is_looked_up_again(
    pg_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version is read before the budgets: a change committed right after the lookup
    leaves it remembered with the older version, so the next call looks them up again."""
    llmspend.set_budget("project", "acme/churn", TINY, "day", mode="soft")
    guard = pg_tracker.guard
    read = guard._read

    def racing(*args: Any) -> Any:
        monkeypatch.setattr(guard, "_read", read)
        found = read(*args)
        with _other_client(pg_tracker) as conn:
            conn.execute("UPDATE llmspend_budgets SET mode = 'hard' WHERE name = 'acme/churn'")
        return found

    monkeypatch.setattr(guard, "_read", racing)
    call()  # looked up while soft: let through
    assert _remembered(pg_tracker) == 1
    with pytest.raises(BudgetExceeded, match="acme/churn"):
        call()


def test_past_the_bound_the_oldest_identity_is_forgotten(
    pg_tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspend.budgets import guard

    monkeypatch.setattr(guard, "REMEMBERED_IDENTITIES", 2)
    llmspend.set_budget("org", "acme", "100", "month")
    for user in ("u1", "u2", "u3"):
        with llmspend.attribute(user=user):
            call()
    assert [k[2] for k in pg_tracker.guard._remembered] == ["u2", "u3"]
    llmspend.set_budget("user", "acme/churn/u1", TINY, "day", mode="hard")
    with llmspend.attribute(user="u1"), pytest.raises(BudgetExceeded, match="acme/churn/u1"):
        call()
