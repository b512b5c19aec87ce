"""A kernel in team mode reads and manages through the gateway's data API (issue 25):
``llmspend.sim`` and a gateway (SQLite store) as child processes; this process is the
kernel, with ``LLMSPEND_GATEWAY_URL``, a gateway key and no database URL. The public
functions answer as in solo mode (same frames, exact costs), scoped by role, and the kernel
opens no store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from IPython.utils.capture import capture_output

import llmspend
from llmspend.alerting.query import fetch_alerts
from llmspend.errors import (
    BudgetError,
    ConfigError,
    PermissionDenied,
    StoreError,
    ValidationError,
)
from llmspend.usage import fetch_records
from tests.shells import plain_shell
from tests.teamstack import Stack, module_stack, team_kernel

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

stack = module_stack("teamclient")


class Kernel:
    """This process as a team-mode kernel acting as one user."""

    def __init__(self, home: Path, stack: Stack, be: Callable[[str], None]) -> None:
        self.home, self.stack, self.be = home, stack, be


@pytest.fixture
def kernel(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernel]:
    """Team mode, no database URL, an empty LLMSPEND_HOME, and no store may be opened."""
    home = tmp_path / "home"
    for be in team_kernel(stack.gw.url, stack.keys, home, monkeypatch):
        be("ana")
        yield Kernel(home, stack, be)
    assert not home.exists() or not any(home.iterdir()), list(home.iterdir())


def _expected(stack: Stack, **filters: Any) -> pd.DataFrame:
    return fetch_records(stack.store, **filters)


def test_as_owner_records_are_the_gateways_rows_exactly(stack: Stack, kernel: Kernel) -> None:
    got = llmspend.records()
    want = _expected(stack, org="acme", project="churn")
    assert len(got) == 3 and set(got["user"]) == {"ana", "bob"}
    pd.testing.assert_frame_equal(got, want)  # same columns, dtypes and exact Decimal costs
    assert all(isinstance(c, Decimal) and c > 0 for c in got["cost_usd"])

    cols = ["user", "model", "cost_usd"]
    only_bob = llmspend.records(project="churn", user="bob", columns=cols)
    pd.testing.assert_frame_equal(only_bob, _expected(stack, org="acme", user="bob", columns=cols))
    with pytest.raises(PermissionDenied, match="owner of acme or admin"):
        llmspend.records(user="bob")  # across the org: not a project owner's
    arrow = llmspend.records(since="1d", model=["gpt-4o-mini"], as_="arrow")
    assert arrow.equals(fetch_records(stack.store, since="1d", org="acme", project="churn",
                                      model="gpt-4o-mini", as_="arrow"))  # fmt: skip
    backed = llmspend.records(as_="pandas-arrow")  # Arrow-backed columns, exact money
    assert backed["cost_usd"].sum() == sum(want["cost_usd"], Decimal(0))
    assert list(backed.columns) == list(want.columns)
    with pytest.raises(ValidationError, match="as_ must be one of"):
        llmspend.records(as_="excel")
    with pytest.raises(ValidationError, match="unknown records parameters: nope"):
        llmspend.records(nope="x")


def test_as_owner_a_budget_is_set_seen_changed_and_deleted(stack: Stack, kernel: Kernel) -> None:
    budget = llmspend.set_budget("project", "acme/churn", "100", "month", thresholds=(0.5, 1))
    assert (budget.scope, budget.name, budget.limit_usd) == ("project", "acme/churn", 100)
    assert budget.thresholds == (Decimal("0.5"), Decimal(1))
    assert any(b.name == "acme/churn" for b in llmspend.list_budgets("project"))
    changed = llmspend.update_budget("project", "acme/churn", limit="150", mode="soft")
    assert (changed.limit_usd, changed.mode) == (Decimal(150), "soft")

    (status,) = llmspend.budget_status("project", "acme/churn")
    spent = sum(_expected(stack, org="acme", project="churn")["cost_usd"], Decimal(0))
    assert status.spent_usd == spent and status.limit_usd == 150 and status.state == "ok"

    llmspend.set_budget("user", "acme/churn/tmp", 1, "day")
    llmspend.delete_budget("user", "acme/churn/tmp")
    assert "acme/churn/tmp" not in {b.name for b in llmspend.list_budgets()}
    with pytest.raises(BudgetError, match="limit"):
        llmspend.set_budget("project", "acme/churn", "-1")
    with pytest.raises(PermissionDenied, match="owner of acme or admin") as refused:
        llmspend.set_budget("org", "acme", 500)
    assert refused.value.missing_role == "owner of acme or admin"


def test_as_member_only_own_records_and_no_budget_changes(stack: Stack, kernel: Kernel) -> None:
    kernel.be("bob")
    got = llmspend.records()
    assert len(got) == 1 and set(got["user"]) == {"bob"}
    pd.testing.assert_frame_equal(got, _expected(stack, org="acme", user="bob"))
    with pytest.raises(PermissionDenied, match="owner of acme/churn or admin"):
        llmspend.records(project="churn", user="ana")
    with pytest.raises(PermissionDenied) as refused:
        llmspend.set_budget("user", "acme/churn/bob", 1000)
    assert refused.value.missing_role == "owner of acme/churn or admin"
    with pytest.raises(PermissionDenied):
        llmspend.delete_budget("project", "acme/churn")
    assert all(b.name != "acme/churn/ana" for b in llmspend.list_budgets())


def test_alerts_are_read_and_acknowledged_within_the_callers_scope(
    stack: Stack, kernel: Kernel
) -> None:
    llmspend.set_budget("user", "acme/churn/ana", "0.000001", mode="soft", thresholds=[1])
    stack.chat("ana")  # past the threshold: the gateway records the alert
    mine = llmspend.alerts(budget="acme/churn/ana")
    want = fetch_alerts(stack.store, budget="acme/churn/ana")
    assert len(mine) >= 1
    pd.testing.assert_frame_equal(mine, want)
    assert llmspend.alerts(budget="acme/churn/ana", acknowledged=True).empty

    kernel.be("bob")
    assert "acme/churn/ana" not in set(llmspend.alerts()["budget"])
    assert llmspend.acknowledge_alerts() == 0  # nothing of his to acknowledge
    hidden = int(mine["id"].iloc[0])  # not his to see: as if there were no such alert
    with pytest.raises(ValidationError, match=f"no alert with id {hidden}$"):
        llmspend.acknowledge_alerts(hidden)

    kernel.be("ana")
    assert llmspend.acknowledge_alerts() == len(mine)
    assert llmspend.alerts(budget="acme/churn/ana", acknowledged=False).empty
    llmspend.delete_budget("user", "acme/churn/ana")


def test_budget_magic_in_a_real_shell_shows_what_applies(stack: Stack, kernel: Kernel) -> None:
    from llmspend.notebook.magics import LLMSpendMagics

    shell = plain_shell()
    shell.register_magics(LLMSpendMagics)  # %budget without install(): no tracker, no store
    llmspend.set_budget("user", "acme/churn/bob", "2", "day")
    kernel.be("bob")

    def run(line: str) -> str:
        with capture_output() as cap:
            shell.run_cell(f"%budget {line}", store_history=False)
        shown = "".join(o.data.get("text/plain", "") for o in cap.outputs)
        return cap.stdout + cap.stderr + shown

    listed = run("list")
    assert "acme/churn/bob" in listed and "acme/churn/ana" not in listed, listed
    status = run("status")
    assert "acme/churn/bob" in status and "$2" in status, status
    refused = run("set user acme/churn/bob 1000/day")
    assert "UsageError" in refused and "owner of acme/churn or admin" in refused, refused


def test_a_bad_key_or_a_gateway_down_is_a_clear_error(
    kernel: Kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPEND_GATEWAY_KEY", "lsk_not_a_key")
    with pytest.raises(ConfigError, match="LLMSPEND_GATEWAY_KEY"):
        llmspend.list_budgets()
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", "http://127.0.0.1:9")
    with pytest.raises(StoreError, match="cannot be reached"):
        llmspend.records()
