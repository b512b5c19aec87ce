"""What a demanding notebook user found in solo mode: each test is one bug, fixed.

The shell is the session's one ``InteractiveShell``; calls go through the real openai SDK
to the simulator on 127.0.0.1. A store held locked by another connection for the whole
test stands for "another process holds the lock": no timing is raced.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import llmspend
from llmspend.notebook.cellcost import cell_cost
from llmspend.notebook.render import fmt_usd
from llmspend.sim import SimServer
from tests.shells import loaded_shell
from tests.test_magics import cell_lines, ok, snapshot, usage_error


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives up on a lock held elsewhere after 0.2 s (before the store opens)."""
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "200")


@pytest.fixture
def ip(
    short_busy_timeout: None, installed: Any, fresh_sim: SimServer
) -> Iterator[InteractiveShell]:
    """The session's shell with llmspend loaded and an openai ``client``."""
    with loaded_shell(fresh_sim.openai_base_url) as shell:
        yield shell


@pytest.fixture
def locked(installed: Any) -> Iterator[sqlite3.Connection]:
    """Another connection holds the store's write lock until the test ends."""
    conn = sqlite3.connect(installed.store.path, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    yield conn
    conn.execute("ROLLBACK")
    conn.close()


# -- money too small for six decimals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("2E-8"), "$0.00000002"),
        (Decimal("0.000000123"), "$0.00000012"),
        (Decimal("-4E-9"), "$-0.000000004"),
        (Decimal("0.0000072"), "$0.000007"),
        (Decimal("0.000018"), "$0.000018"),
        (Decimal("12.5"), "$12.50"),
        (Decimal(0), "$0.00"),
    ],
)
def test_fmt_usd_never_shows_a_tiny_amount_as_a_bare_point(value: Decimal, shown: str) -> None:
    assert fmt_usd(value) == shown


def test_an_embedding_cells_line_shows_its_cost(ip: InteractiveShell) -> None:
    with capture_output() as cap:
        ok(ip, "client.embeddings.create(model='text-embedding-3-small', input='hi')")
    (line,) = cell_lines(cap)
    cost = llmspend.records()["cost_usd"].iloc[0]
    assert 0 < cost < Decimal("0.0000005")  # below what six decimals can show
    assert "$0." not in line.replace("$0.0", "")  # no bare "$0." for a non-zero cost
    assert f"${cost:f}" in line, line
    table = repr(ok(ip, "%spend last 1"))
    assert f"${cost:f}" in table, table


# -- %spend quiet: bad input changes nothing -----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "%spend quiet --min 1e999999999",
        "%spend quiet --min 1e12",
        "%spend quiet on --min -1",
        "%spend quiet on --min 1e999999999",
    ],
)
def test_spend_quiet_bad_min_is_a_usage_error_and_changes_nothing(
    ip: InteractiveShell, line: str
) -> None:
    before = (cell_cost.enabled, cell_cost.min_usd)
    message = usage_error(ip, line)
    assert "--min" in message
    assert (cell_cost.enabled, cell_cost.min_usd) == before


# -- a locked or read-only store: one line, not a driver's traceback -----------------------------


@pytest.mark.parametrize(
    "line",
    [
        "%budget status",
        "%budget set project acme/churn 100/month",
        "%budget update project acme/churn 50",
        "%budget delete project acme/churn",
        "%spend report --since 7d",
    ],
)
def test_a_locked_store_makes_magics_say_so_in_one_line(
    ip: InteractiveShell, locked: sqlite3.Connection, line: str
) -> None:
    locked.execute("ROLLBACK")
    ok(ip, "%budget set project acme/churn 100/month")
    ok(ip, "client.chat.completions.create(model='gpt-4o-mini', messages=[])")  # a new row
    before = snapshot()
    locked.execute("BEGIN EXCLUSIVE")
    message = usage_error(ip, line)
    assert "store" in message and "locked" in message, message
    assert "nothing was changed" in message
    locked.execute("ROLLBACK")
    assert snapshot() == before
    locked.execute("BEGIN EXCLUSIVE")


def test_a_read_only_store_makes_magics_say_so_in_one_line(
    ip: InteractiveShell, installed: Any, tmp_path: Any
) -> None:
    from llmspend.store.engine import forget_store

    ok(ip, "%budget set org acme 5/day")
    path = installed.store.path
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    llmspend.install(url)
    try:
        message = usage_error(ip, "%budget set org acme 7/day")
        assert "store" in message and "readonly" in message, message
    finally:
        llmspend.install(f"sqlite:///{path}")
        forget_store(url)
    assert {b.name: b.limit_usd for b in llmspend.list_budgets()} == {"acme": 5}


# -- %spend last: unpriced calls are not summed as $0 silently ----------------------------------


def test_spend_last_total_says_when_costs_are_unknown(ip: InteractiveShell) -> None:
    with capture_output():
        ok(ip, "client.chat.completions.create(model='gpt-4o-mini', messages=[])")
        ok(ip, "client.chat.completions.create(model='my-own-finetune', messages=[])")
    text = repr(ok(ip, "%spend last 2"))
    assert "unpriced" in text.splitlines()[-2]  # the row
    assert text.splitlines()[-1].endswith("+ 1 unpriced (cost unknown)"), text


# -- --help, as on the command line -------------------------------------------------------------


@pytest.mark.parametrize("line", ["%budget --help", "%budget set -h", "%spend --help"])
def test_help_option_prints_the_grammar_and_changes_nothing(
    ip: InteractiveShell, line: str
) -> None:
    before = snapshot()
    with capture_output() as cap:
        ok(ip, line)
    assert "Examples:" in cap.stdout and line.split()[0] + " " in cap.stdout, cap.stdout
    assert snapshot() == before


@pytest.mark.parametrize(
    "line", ["%budget set org acme 5/day --alert ''", "%budget update org acme --alert ' '"]
)
def test_an_empty_alert_list_is_a_usage_error_not_no_alerts(
    ip: InteractiveShell, line: str
) -> None:
    ok(ip, "%budget set org acme 5/day")
    before = snapshot()
    assert "none" in usage_error(ip, line)
    assert snapshot() == before


@pytest.mark.parametrize("text", ["1e999999999", "-1", "abc", "nan"])
def test_a_bad_cell_cost_min_in_the_environment_is_named_and_ignored(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    from llmspend.errors import LLMSpendWarning
    from llmspend.notebook.cellcost import CellCost
    from llmspend.notebook.commands import spend_quiet

    monkeypatch.setenv("LLMSPEND_CELL_COST_MIN", text)
    with pytest.warns(LLMSpendWarning, match="LLMSPEND_CELL_COST_MIN"):
        fresh = CellCost()
    assert fresh.min_usd == 0
    monkeypatch.setenv("LLMSPEND_CELL_COST_MIN", "$0.01")
    assert CellCost().min_usd == Decimal("0.01")
    before = cell_cost.min_usd
    assert "$0.01" in spend_quiet(min_usd=Decimal("0.01")).text
    cell_cost.min_usd = before
