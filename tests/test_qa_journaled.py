"""The listeners of a call whose row was journaled because the store was locked (found by
exploratory testing): the cell-cost line counts it once."""

from __future__ import annotations

from typing import Any

import openai
import pytest

import llmspend
from llmspend.notebook.cellcost import CellCost

MSG = [{"role": "user", "content": "hello there"}]


def ask(sim: Any) -> None:
    client = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20)


def test_a_journaled_call_gets_its_cell_cost_line(locked_sqlite: Any, fresh_sim: Any) -> None:
    """The cell-cost line counts a call whose row was journaled because the store was
    locked: the call happened and cost what its row says."""
    tracker, other = locked_sqlite
    cell = CellCost()
    cell.attach(tracker)
    cell.pre_run_cell()
    ask(fresh_sim)  # recorded
    other.execute("BEGIN IMMEDIATE")
    with pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
        ask(fresh_sim)  # journaled
    assert len(tracker.spool.pending()) == 1
    summary = cell.current
    assert summary.calls == 2
    costs = [r["cost_nanos"] for r in tracker.recent]
    assert summary.cost_nanos == sum(costs) > 0
    other.execute("COMMIT")
    assert tracker.replay_spool() == 1
    assert cell.current.calls == 2  # a replayed row is not counted again
    cell.detach(tracker)
