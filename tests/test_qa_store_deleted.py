"""A SQLite store file deleted (or replaced) while a kernel uses it, and the listeners of a
call whose row was journaled (found by exploratory testing)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest

import llmspend
from llmspend.notebook.cellcost import CellCost
from llmspend.store.engine import forget_store

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


@pytest.fixture
def on_file(tmp_path: Path) -> Any:
    """llmspend installed on a SQLite file store: (tracker, path)."""
    path = tmp_path / "llmspend.sqlite"
    url = f"sqlite:///{path}"
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    yield tracker, path
    llmspend.uninstall()
    forget_store(url)


def delete_store(path: Path) -> None:
    for f in path.parent.glob(path.name + "*"):
        f.unlink()


def stored(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def seen(tracker: Any, path: Path) -> None:
    """What the checkpointer's thread does every few seconds: look at the file."""
    conn = sqlite3.connect(path)
    try:
        tracker.store.watch(conn)
    finally:
        conn.close()


def test_a_deleted_store_file_is_made_again_and_keeps_what_came_after(
    on_file: Any, fresh_sim: Any
) -> None:
    """Calls and a budget made after the file was deleted land in a new file at the path
    (not in the unlinked one, lost at exit); what was there before stays deleted."""
    tracker, path = on_file
    ask(fresh_sim)
    seen(tracker, path)
    delete_store(path)
    ask(fresh_sim)
    ask(fresh_sim)  # both written into the unlinked file
    llmspend.set_budget("project", "acme/churn", 10, period="month")  # finds it deleted
    assert path.exists()
    tracker.replay_spool()  # the two calls, journaled when the store moved (if the
    assert tracker.spool.pending() == []  # background replay has not written them yet)
    rows = llmspend.records()
    assert len(rows) == 2 and list(rows.status) == ["ok", "ok"]
    (status,) = llmspend.budget_status()
    assert status.calls == 2 and status.spent_usd == sum(rows.cost_usd)
    ask(fresh_sim)
    llmspend.uninstall()
    forget_store(f"sqlite:///{path}")
    assert stored(path, "SELECT count(*) FROM llmspend_usage") == [(3,)]
    assert stored(path, "SELECT name FROM llmspend_budgets") == [("acme/churn",)]


def test_a_deletion_seen_in_the_background_moves_the_next_call(
    on_file: Any, fresh_sim: Any
) -> None:
    tracker, path = on_file
    ask(fresh_sim)
    seen(tracker, path)
    delete_store(path)
    ask(fresh_sim)  # into the unlinked file
    tracker.store.watch()  # the checkpointer's look: the file is gone
    assert tracker.store.gone == "deleted"
    ask(fresh_sim)  # the store moves to a new file first; the call before is replayed
    assert tracker.store.gone is None
    rows = llmspend.records()
    assert len(rows) == 2 and tracker.spool.pending() == []
    assert stored(path, "SELECT count(*) FROM llmspend_usage") == [(2,)]


def test_a_store_file_replaced_by_another_is_used_and_gets_what_came_after(
    on_file: Any, fresh_sim: Any, tmp_path: Path
) -> None:
    """A file moved into place (a backup restored with mv) is used from then on; the calls
    written into the old file since it was last seen are replayed into it once."""
    tracker, path = on_file
    ask(fresh_sim)
    backup = tmp_path / "backup.sqlite"
    src, dst = sqlite3.connect(path), sqlite3.connect(backup)
    src.backup(dst)
    src.close()
    dst.close()
    ask(fresh_sim)
    seen(tracker, path)
    delete_store(path)  # (its -wal and -shm too: they belong to the old file)
    backup.replace(path)  # another inode at the path, with the first call only
    ask(fresh_sim)  # into the old file
    tracker.store.watch()
    assert tracker.store.gone == "replaced"
    ask(fresh_sim)  # the store moves to the backup; the call before is replayed into it
    rows = llmspend.records()
    assert len(rows) == 3  # the first (in the backup), the last two; not the second
    assert stored(path, "SELECT count(DISTINCT record_uid) FROM llmspend_usage") == [(3,)]
