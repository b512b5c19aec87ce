"""Store outages: calls under hard budgets fail closed; recorded calls are spooled and
replayed exactly once when the store is back."""

from __future__ import annotations

import shutil

import openai
import pytest

import llmspend
from llmspend.errors import StoreUnavailable
from tests.pgserver import PgServer, PgUnavailable

MSG = [{"role": "user", "content": "hello there"}]


def ask(sim) -> None:  # type: ignore[no-untyped-def]
    client = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG, max_tokens=20)


def test_locked_store_spools_and_replays_exactly_once(locked_sqlite, fresh_sim) -> None:  # type: ignore[no-untyped-def]
    tracker, other = locked_sqlite
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past our busy timeout
    with pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
        ask(fresh_sim)  # no budgets: the call goes through and its row is spooled
    ask(fresh_sim)
    assert fresh_sim.request_count == 2
    spooled = tracker.spool.pending()
    assert len(spooled) == 2
    saved = [p.read_bytes() for p in spooled]
    other.execute("COMMIT")
    ask(fresh_sim)  # the store is back: this call is written, and the spool replayed
    rec = llmspend.records()
    assert len(rec) == 3 and rec.cost_usd.notna().all()
    assert tracker.spool.pending() == []
    # a crash between insert and unlink, or a second kernel replaying: still exactly once
    for data, p in zip(saved, spooled, strict=True):
        p.write_bytes(data)
    assert tracker.replay_spool() == 0
    assert len(llmspend.records()) == 3


def test_hard_budget_fails_closed_while_the_store_is_locked(locked_sqlite, fresh_sim) -> None:  # type: ignore[no-untyped-def]
    _, other = locked_sqlite
    llmspend.set_budget("project", "acme/churn", "10", "month")
    ask(fresh_sim)  # checked and recorded while the store works
    other.execute("BEGIN IMMEDIATE")
    with (
        pytest.raises(StoreUnavailable, match="call was not sent"),
        pytest.warns(llmspend.LLMSpendWarning),
    ):
        ask(fresh_sim)
    assert fresh_sim.request_count == 1  # nothing was sent
    other.execute("COMMIT")
    ask(fresh_sim)
    rec = llmspend.records()
    assert list(rec.status) == ["ok", "refused", "ok"]  # the refusal was spooled, then replayed
    (status,) = llmspend.budget_status("project", "acme/churn")
    assert status.spent_usd == sum(rec.cost_usd) and status.reserved_usd == 0


def test_policy_open_lets_calls_through(locked_sqlite, fresh_sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tracker, other = locked_sqlite
    llmspend.set_budget("project", "acme/churn", "10", "month")
    monkeypatch.setenv("LLMSPEND_STORE_DOWN", "open")
    other.execute("BEGIN IMMEDIATE")
    with pytest.warns(llmspend.LLMSpendWarning):
        ask(fresh_sim)
    assert fresh_sim.request_count == 1
    other.execute("COMMIT")
    tracker.replay_spool()
    assert len(llmspend.records()) == 1


def test_bad_policy_is_a_clear_error(locked_sqlite, fresh_sim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, other = locked_sqlite
    llmspend.set_budget("project", "acme/churn", "10", "month")
    monkeypatch.setenv("LLMSPEND_STORE_DOWN", "sometimes")
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(llmspend.ConfigError, match="LLMSPEND_STORE_DOWN"):
        ask(fresh_sim)
    other.execute("COMMIT")


@pytest.mark.postgres
def test_postgres_outage_spools_then_replays(fresh_sim, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server in CI: {exc}")
        pytest.skip(str(exc))
    try:
        url = server.create_database()
        tracker = llmspend.install(url, org="acme", project="churn", user="bob")
        llmspend.set_budget("user", "acme/ana", "5", "day")  # hard, but not bob's
        ask(fresh_sim)
        server.pause()  # the team's database goes away
        with pytest.warns(llmspend.LLMSpendWarning):
            ask(fresh_sim)  # bob has no hard budget: the call goes out and is spooled
        with llmspend.attribute(user="ana"), pytest.raises(StoreUnavailable):
            ask(fresh_sim)  # ana's hard budget cannot be checked: fail closed
        assert fresh_sim.request_count == 2
        assert len(tracker.spool.pending()) == 2  # bob's call and ana's refusal
        server.resume()
        tracker.store.engine.dispose()  # drop connections the outage broke
        ask(fresh_sim)
        rec = llmspend.records()
        assert sorted(rec.status) == ["ok", "ok", "ok", "refused"]
        assert tracker.spool.pending() == []
    finally:
        llmspend.uninstall()
        server.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def _a_journaled_row(url: str) -> dict:  # type: ignore[type-arg]
    """A call's row, as the tracker journals it (the call recorded, then forgotten)."""
    from llmspend.call import Usage
    from llmspend.pipeline import begin_call

    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        call = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=10)
        assert call is not None
        row = call.finish(Usage(input_tokens=10, output_tokens=5))
        assert row is not None
    finally:
        llmspend.uninstall()
    return dict(row)


JUNK = {
    "empty object": "{}",
    "a list": "[]",
    "not json": "{'ts': ",
    "no model": {"model": ...},
    "a null model": {"model": None},
    "a time that is not one": {"ts": "yesterday"},
    "tokens as text": {"input_tokens": "ten"},
    "tokens past BIGINT": {"input_tokens": 2**70},
    "a flag as a number": {"streamed": 2},
    "a name with a slash": {"org_name": "a/b"},
}


@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
def test_a_spool_file_that_is_no_call_is_set_aside_and_blocks_nothing(tmp_path, junk) -> None:  # type: ignore[no-untyped-def]
    """A journal file that is not a row as llmspend writes one (damaged, edited, another
    program's) is moved to rejected/ with one error logged: the tracker still opens (it
    raised KeyError/TypeError/ValueError), the calls journaled after it are replayed (a
    row the store refused blocked them forever), and nothing of it reaches the store (SQLite
    kept 'ten' in an integer column, and every records() failed after)."""
    import json

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    row = _a_journaled_row(url)
    spool = llmspend.Tracker(url).spool
    spool.write({**row, "record_uid": "f" * 32})  # a good call, journaled after the junk
    if isinstance(junk, str):
        text = junk
    else:
        bad = {**row, "ts": row["ts"].isoformat(), "record_uid": "0" * 32, **junk}
        text = json.dumps({k: v for k, v in bad.items() if v is not ...})
    (spool.dir / f"{'0' * 32}.json").write_text(text)
    tracker = llmspend.Tracker(url)  # replays what it finds
    assert tracker.spool.pending() == []
    assert [p.name for p in tracker.spool.rejected()] == [f"{'0' * 32}.json"]
    assert tracker.spool.rejected()[0].read_text() == text  # kept as it was, for a look
    rec = tracker.records()
    assert list(rec.org) == ["acme", "acme"] and list(rec.input_tokens) == [10, 10]
    assert tracker.replay_spool() == 0 and tracker.spool.backlog() == 0
    from llmspend.cli.dbcheck import health_report

    report = health_report(url)  # `llmspend db check` says it is there
    assert (report["spool_pending"], report["spool_rejected"]) == (0, 1)


def test_a_store_that_cannot_take_the_replay_sets_nothing_aside(locked_sqlite) -> None:  # type: ignore[no-untyped-def]
    """A replay meeting a locked store (a ``StoreError`` or ``OperationalError``) leaves
    every journaled call pending: only a row that is no call is set aside."""
    tracker, other = locked_sqlite
    row = _a_journaled_row(str(tracker.store.url))
    tracker = llmspend.install(str(tracker.store.url), org="acme", project="churn", user="ana")
    tracker.spool.write({**row, "record_uid": "f" * 32})
    other.execute("BEGIN IMMEDIATE")
    try:
        assert tracker.replay_spool() == 0
        assert len(tracker.spool.pending()) == 1 and tracker.spool.rejected() == []
    finally:
        other.execute("COMMIT")
    assert tracker.replay_spool() == 1 and tracker.spool.pending() == []
    assert len(llmspend.records()) == 2


@pytest.mark.parametrize("content", [b"\xff\xfe{", b"[" * 200_000], ids=["not utf-8", "deep"])
def test_a_spool_file_of_damaged_bytes_is_set_aside(tmp_path, content) -> None:  # type: ignore[no-untyped-def]
    """Bytes that are not UTF-8 (a damaged disk block) or JSON nested past the recursion
    limit are no call either: set aside as they were (opening the store raised
    UnicodeDecodeError or RecursionError, every time)."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spool = llmspend.Tracker(url).spool
    spool.dir.mkdir(parents=True, exist_ok=True)
    (spool.dir / f"{'0' * 32}.json").write_bytes(content)
    tracker = llmspend.Tracker(url)
    assert tracker.spool.pending() == []
    (kept,) = tracker.spool.rejected()
    assert kept.read_bytes() == content
