"""The report and the dashboard in team mode (issue 25): this process is a kernel with the
gateway's URL and a gateway key and no database URL; ``run_report()`` (and the notebook's
kernel it starts) and ``llmspend.dashboard()`` read through the gateway, scoped by role,
and no store is opened here."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import llmspend
from llmspend.errors import ValidationError
from llmspend.usage import fetch_records
from tests.teamstack import Stack, module_stack, team_kernel

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


stack = module_stack("teamreport")


@pytest.fixture
def be(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Team mode as one user (``be("bob")``); no store may be opened in this process."""
    yield from team_kernel(stack.gw.url, stack.keys, tmp_path / "home", monkeypatch)


def _cost(stack: Stack, **filters: Any) -> Decimal:
    return sum(fetch_records(stack.store, **filters)["cost_usd"], Decimal(0))


def test_the_report_reads_through_the_gateway_scoped_by_role(
    stack: Stack, be: Any, tmp_path: Path
) -> None:
    from llmspend.report import run_report

    be("bob")
    with pytest.raises(ValidationError, match="unknown user 'ana'"):
        run_report(user="ana", output=tmp_path / "no.html")
    assert not (tmp_path / "no.html").exists()
    result = run_report(period="7d", output=tmp_path / "bob.html")
    assert result.totals["calls"] == 1
    assert result.totals["cost_usd"] == _cost(stack, org="acme", user="bob")
    assert result.database_url == stack.gw.url  # the gateway, never a database URL
    page = (tmp_path / "bob.html").read_text()
    assert stack.gw.url in page and "sqlite" not in page

    be("ana")  # owner of acme/churn: the project's calls
    result = run_report(period="7d", project="churn", output=tmp_path / "ana.html")
    assert result.totals["calls"] == 3
    assert result.totals["cost_usd"] == _cost(stack, org="acme", project="churn")


def test_the_dashboard_reads_through_the_gateway_scoped_by_role(stack: Stack, be: Any) -> None:
    pytest.importorskip("ipywidgets")
    be("bob")
    dash = llmspend.dashboard(live=False)
    try:
        assert dash.last_error is None, dash.last_error
        assert list(dash.user_menu.options) == ["(all)", "bob"]
        assert " in 1 calls, last 7 days, everything;" in repr(dash), repr(dash)
    finally:
        dash.close()

    be("ana")
    dash = llmspend.dashboard(live=False, project="churn")
    try:
        assert dash.last_error is None, dash.last_error
        assert set(dash.user_menu.options) >= {"ana", "bob"}
        assert " in 3 calls, last 7 days, project=churn;" in repr(dash), repr(dash)
    finally:
        dash.close()
