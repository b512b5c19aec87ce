"""Child processes: hooked with the parent's store, context and budgets, with no code in them.

Real children (multiprocessing spawn, forkserver and fork; ProcessPoolExecutor; joblib's
loky backend) make real openai SDK calls against the simulator on 127.0.0.1. Each child
makes a call that fits the parent's hard budget and one that would break it: the first is
in the parent's ``records()`` with the parent's defaults and ``attribute()`` context, the
second raises ``BudgetExceeded`` in the child and never reaches the simulator.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend import children, installer
from llmspend.attribution import Attribution
from llmspend.dialects import hosts
from llmspend.sim import SimServer
from llmspend.tracker import installed_tracker
from tests.child_calls import HUGE, SMALL, huge_call, send_http_calls, send_two_calls, two_calls

JOIN = 180  # seconds: generous, never raced against
BUDGET = Decimal("0.01")  # fits a call of SMALL max_tokens, not one of HUGE
TAGS = {"job": "sweep", "fold": 3}

ORIGINAL_START = multiprocessing.process.BaseProcess.__dict__["start"]
ORIGINAL_BOOTSTRAP = multiprocessing.process.BaseProcess.__dict__["_bootstrap"]


def in_process(method: str, sizes: tuple[int, ...] = (SMALL, HUGE)) -> Callable[[str], list[str]]:
    """Run :func:`two_calls` in a ``multiprocessing.Process`` of the start ``method``."""

    def run(base_url: str) -> list[str]:
        ctx: Any = multiprocessing.get_context(method)
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=send_two_calls, args=(base_url, send, sizes))
        child.start()
        send.close()
        try:
            assert receive.poll(JOIN), f"the {method} child sent nothing"
            outcomes: list[str] = receive.recv()
        finally:
            child.join(JOIN)
            receive.close()
        assert child.exitcode == 0
        return outcomes

    return run


def in_pool(base_url: str) -> list[str]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(two_calls, base_url).result(timeout=JOIN)


def in_loky(base_url: str) -> list[str]:
    joblib = pytest.importorskip("joblib")
    from joblib.externals.loky import get_reusable_executor

    try:
        outcomes: list[list[str]] = joblib.Parallel(n_jobs=2, backend="loky", timeout=JOIN)(
            [joblib.delayed(two_calls)(base_url)]
        )
    finally:  # a reused executor's workers would keep this test's store and context
        get_reusable_executor().shutdown(wait=True, kill_workers=True)
    return outcomes[0]


RUNNERS = {
    "spawn": in_process("spawn"),
    "forkserver": in_process("forkserver"),
    "fork": in_process("fork"),
    "ProcessPoolExecutor": in_pool,
    "loky": in_loky,
}


@pytest.mark.parametrize("how", list(RUNNERS))
def test_child_records_with_the_parents_context_and_budgets(
    how: str, installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.set_budget("user", "acme/bob", BUDGET, "day")
    with llmspend.attribute(user="bob", tags=TAGS):
        outcomes = RUNNERS[how](fresh_sim.openai_base_url)

    assert outcomes == ["ok", "BudgetExceeded"]
    assert fresh_sim.request_count == 1  # the refused call sent nothing
    rows = llmspend.records().sort_values("ts")
    assert list(rows.status) == ["ok", "refused"]
    assert list(rows.error_type.fillna("")) == ["", "BudgetExceeded"]
    for _, row in rows.iterrows():
        assert (row.org, row.project, row.user) == ("acme", "churn", "bob")
        assert row.tags == TAGS
    assert rows.iloc[0].cost_usd > 0
    (status,) = llmspend.budget_status("user", "acme/bob")
    assert status.spent_usd == rows.iloc[0].cost_usd
    assert status.reserved_usd == 0  # nothing left held by a child that is gone


@pytest.mark.parametrize("pool", ["ProcessPoolExecutor", "multiprocessing.Pool"])
def test_a_refusal_in_a_pool_worker_reaches_the_parent_as_budget_exceeded(
    pool: str, installed: Any, fresh_sim: SimServer
) -> None:
    """Left to propagate, the worker's ``BudgetExceeded`` is pickled back to the parent whole
    (it broke the pool, or hung ``multiprocessing.Pool`` for good, when it could not be)."""
    llmspend.set_budget("user", "acme/bob", BUDGET, "day")
    spawn: Any = multiprocessing.get_context("spawn")
    with llmspend.attribute(user="bob"), pytest.raises(llmspend.BudgetExceeded) as refused:
        if pool == "ProcessPoolExecutor":
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as executor:
                executor.submit(huge_call, fresh_sim.openai_base_url).result(timeout=JOIN)
        else:
            with spawn.Pool(1) as workers:
                workers.apply_async(huge_call, (fresh_sim.openai_base_url,)).get(timeout=JOIN)
    exc = refused.value
    assert (exc.budget, exc.scope, exc.period, exc.limit) == ("acme/bob", "user", "day", BUDGET)
    assert "would be exceeded" in str(exc) and fresh_sim.request_count == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_declared_endpoints_and_the_gateway_reach_children(
    method: str, installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What declare_endpoint() declares is hooked in a child too (litellm's own HTTP code
    # there is recorded), and a gateway set by install(gateway_url=...) is the gateway's to
    # record there too (not recorded twice, by the child as well). The gateway is set as
    # installer.install(gateway_url=...) sets it.
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.setattr(hosts, "_gateway_set", [])
    gemini = fresh_sim.url + "/v1beta"
    llmspend.declare_endpoint(gemini, "gemini")
    hosts.set_gateway(fresh_sim.openai_base_url)

    ctx: Any = multiprocessing.get_context(method)
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=send_http_calls, args=(fresh_sim.openai_base_url, gemini, send))
    child.start()
    send.close()
    try:
        assert receive.poll(JOIN), f"the {method} child sent nothing"
        assert receive.recv() == ["ok", "ok"]
    finally:
        child.join(JOIN)
        receive.close()
    assert fresh_sim.request_count == 2
    rows = llmspend.records()
    assert list(zip(rows.provider, rows.api, rows.status, strict=True)) == [
        ("google", "generate_content", "ok")
    ]


def test_a_fork_child_leaves_the_parents_store_usable(installed: Any, fresh_sim: SimServer) -> None:
    llmspend.set_budget("user", "acme/ana", BUDGET, "day")
    assert two_calls(fresh_sim.openai_base_url) == ["ok", "BudgetExceeded"]  # before
    assert in_process("fork")(fresh_sim.openai_base_url) == ["ok", "BudgetExceeded"]
    assert two_calls(fresh_sim.openai_base_url) == ["ok", "BudgetExceeded"]  # and after
    rows = llmspend.records()
    assert list(rows.status).count("ok") == 3
    assert set(rows.user) == {"ana"}
    (status,) = llmspend.budget_status("user", "acme/ana")
    assert status.spent_usd == rows.cost_usd.dropna().sum()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_gives_back_what_it_held_for_its_next_call(
    method: str, installed: Any, fresh_sim: SimServer
) -> None:
    # A call that settles under a budget keeps its hold standing for the thread's next
    # call; a fork child leaves through os._exit (no exit handlers) and must give it back.
    llmspend.set_budget("user", "acme/ana", BUDGET, "day")
    assert in_process(method, (SMALL,) * 3)(fresh_sim.openai_base_url) == ["ok"] * 3
    (status,) = llmspend.budget_status("user", "acme/ana")
    assert status.spent_usd > 0
    assert status.reserved_usd == 0


def test_defaults_changed_after_install_reach_children(
    installed: Any, fresh_sim: SimServer
) -> None:
    llmspend.install(project="later")  # as %spend context does, after install()
    assert in_pool(fresh_sim.openai_base_url) == ["ok", "ok"]
    rows = llmspend.records()
    assert set(zip(rows.org, rows.project, rows.user, strict=True)) == {("acme", "later", "ana")}


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_opt_out_with_the_environment(
    method: str, installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_CHILDREN", "0")
    llmspend.set_budget("user", "acme/ana", BUDGET, "day")
    assert in_process(method)(fresh_sim.openai_base_url) == ["ok", "ok"]  # no budget there
    assert fresh_sim.request_count == 2
    assert llmspend.records().empty
    assert installed_tracker() is installed  # the parent is still hooked


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_opt_out_with_install(method: str, tmp_path: Any, fresh_sim: SimServer) -> None:
    llmspend.install(f"sqlite:///{tmp_path / 'store.sqlite'}", children=False)
    try:
        llmspend.install()  # again, without saying: the choice stays
        assert in_process(method)(fresh_sim.openai_base_url) == ["ok", "ok"]
        assert llmspend.records().empty
        llmspend.install(children=True)
        assert in_process("fork")(fresh_sim.openai_base_url) == ["ok", "ok"]
        assert len(llmspend.records()) == 2
    finally:
        llmspend.uninstall()
        children.set_enabled(True)


def test_uninstall_restores_base_process_exactly(tmp_path: Any) -> None:
    base = multiprocessing.process.BaseProcess
    llmspend.install(f"sqlite:///{tmp_path / 'store.sqlite'}")
    llmspend.install()  # idempotent: wrapped once
    assert base.__dict__["start"] is not ORIGINAL_START
    assert base.__dict__["start"].__wrapped__ is ORIGINAL_START
    assert base.__dict__["_bootstrap"].__wrapped__ is ORIGINAL_BOOTSTRAP
    llmspend.uninstall()
    assert base.__dict__["start"] is ORIGINAL_START
    assert base.__dict__["_bootstrap"] is ORIGINAL_BOOTSTRAP
    assert not children.is_hooked()
    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=int)
    proc.start()
    proc.join(JOIN)
    assert children.ATTRIBUTE not in vars(proc)  # nothing carried once uninstalled


# -- the pieces, in this process --------------------------------------------------------------


def settings(url: str) -> children.ChildSettings:
    return children.ChildSettings(
        url, None, ("acme", "churn", "ana"), Attribution(user="bob", tags={"a": 1})
    )


def test_arrive_installs_with_the_parents_settings(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    try:
        carrier = installer.arrive(settings(url))
        tracker = installed_tracker()
        assert tracker is not None
        assert tracker.settings.database_url == url
        assert tracker.defaults == ("acme", "churn", "ana")
        assert carrier.settings == settings(url)
        assert children.is_hooked()  # its own children are hooked in turn
    finally:
        llmspend.uninstall()


def test_arrive_respects_the_childs_own_opt_out(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_CHILDREN", "off")
    carrier = installer.arrive(settings(f"sqlite:///{tmp_path / 'store.sqlite'}"))
    assert carrier.settings is None
    assert installed_tracker() is None


def test_arrive_never_raises(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    carrier = installer.arrive(settings("nonsense://"))
    assert carrier.settings is None
    assert installed_tracker() is None
    assert "this child process is not hooked" in caplog.text


def test_the_carrier_pickles_as_a_call_to_arrive(tmp_path: Any) -> None:
    carrier = children.Carrier(settings(f"sqlite:///{tmp_path / 's.sqlite'}"), installer.arrive)
    assert carrier.__reduce__() == (installer.arrive, (carrier.settings,))
    assert repr(children.Carrier(None, installer.arrive)) == "Carrier(opted out)"


def test_an_in_memory_store_is_not_shared_with_children() -> None:
    tracker = llmspend.install("sqlite://")
    try:
        assert children.child_settings(tracker) is None
    finally:
        llmspend.uninstall()


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_opted_out_values(value: str) -> None:
    assert children.opted_out({"LLMSPEND_CHILDREN": value})
    assert not children.opted_out({"LLMSPEND_CHILDREN": "1"})
    assert not children.opted_out({})
