"""The hash-chained audit log: verify, export, --against, tampering by plain SQL, and
concurrent appends from two processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import llmspend
from llmspend.budgets.manage import audit_log, delete_budget, set_budget, update_budget
from llmspend.cli import main
from llmspend.store.audit import entry_hash, export_entries, verify
from llmspend.tracker import Tracker, get_tracker

URL = "https://hooks.example.com/services/T0/B0/SECRET-hook-token?key=SECRET-q"


def _changes() -> None:
    """Five changes; ``actor=`` is what the gateway passes (the authenticated user)."""
    store = get_tracker().store
    llmspend.set_budget("org", "acme", "100")
    set_budget(store, "project", "acme/churn", "10", webhook_url=URL, actor="ana@gateway")
    update_budget(store, "project", "acme/churn", limit="20", actor="admin@gateway")
    llmspend.set_budget("user", "acme/bob", "1")
    delete_budget(store, "user", "acme/bob", actor="ana@gateway")


def _sql(tracker: Tracker, stmt: str, **params: Any) -> None:
    with tracker.store.engine.begin() as conn:
        conn.execute(text(stmt), params)


def _cli(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str]:
    code = main(["audit", *argv, "--database-url", url])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_untouched_log_verifies_and_names_the_actor(tracker: Tracker, capsys) -> None:
    _changes()
    code, out = _cli(capsys, tracker.store.url, "verify")
    assert (code, out.strip()) == (0, "ok: 5 entries")
    log = audit_log(tracker.store)
    assert list(log.actor) == ["tester", "ana@gateway", "admin@gateway", "tester", "ana@gateway"]
    # the webhook's secret is in no audit entry, nor in what a listing gives back
    assert "SECRET" not in repr([*log.old, *log.new]) and log.iloc[1].new["webhook_url"].endswith(
        "/***"
    )
    (b,) = [b for b in llmspend.list_budgets() if b.name == "acme/churn"]
    assert b.webhook_url == "https://hooks.example.com/***"


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("UPDATE llmspend_audit SET actor = 'bob' WHERE seq = 3", "entry #3 (id"),
        ("DELETE FROM llmspend_audit WHERE seq = 2", "entry #2 was removed"),
        ("swap", "entry #2 "),
    ],
    ids=["update", "delete", "reorder"],
)
def test_tampering_with_plain_sql_is_named(tracker: Tracker, capsys, tamper, named) -> None:
    _changes()
    if tamper == "swap":  # reorder: entries 2 and 4 trade sequence numbers
        _sql(tracker, "UPDATE llmspend_audit SET seq = -4 WHERE seq = 4")
        _sql(tracker, "UPDATE llmspend_audit SET seq = 4 WHERE seq = 2")
        _sql(tracker, "UPDATE llmspend_audit SET seq = 2 WHERE seq = -4")
    else:
        _sql(tracker, tamper)
    code, out = _cli(capsys, tracker.store.url, "verify")
    assert code == 1 and named in out, out
    if tamper == "swap":
        assert "reordered" in out
    if tamper.startswith("UPDATE"):
        assert "changed" in out


def test_export_round_trips_and_catches_a_rewritten_chain(
    tracker: Tracker, capsys, tmp_path: Path
) -> None:
    _changes()
    saved = tmp_path / "audit.jsonl"
    code, out = _cli(capsys, tracker.store.url, "export", "--out", str(saved))
    assert code == 0 and "exported 5 entries" in out
    lines = [json.loads(x) for x in saved.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]
    assert all(entry_hash(e, e["prev_hash"]) == e["hash"] for e in lines)  # round trip
    assert "SECRET" not in saved.read_text()
    assert _cli(capsys, tracker.store.url, "verify", "--against", str(saved))[0] == 0
    llmspend.set_budget("org", "acme", "200")  # appending after the export is fine
    code, out = _cli(capsys, tracker.store.url, "verify", "--against", str(saved))
    assert (code, out.strip()) == (0, "ok: 6 entries")

    # Someone with write access forges entry 3's actor and recomputes the chain after it.
    _sql(tracker, "UPDATE llmspend_audit SET actor = 'bob' WHERE seq = 3")
    with tracker.store.begin(write=True) as conn:
        rows = list(export_entries(conn))
        prev = ""
        for r in rows:
            digest = entry_hash(r, prev)
            conn.execute(
                text("UPDATE llmspend_audit SET prev_hash = :p, hash = :h WHERE id = :i"),
                {"p": prev, "h": digest, "i": r["id"]},
            )
            prev = digest
    assert _cli(capsys, tracker.store.url, "verify")[0] == 0  # the chain alone cannot tell
    code, out = _cli(capsys, tracker.store.url, "verify", "--against", str(saved))
    assert code == 1 and "entry #3" in out and "differs from the export" in out


def test_a_removed_newest_entry_is_caught_by_the_export(tracker: Tracker, capsys, tmp_path) -> None:
    _changes()
    saved = tmp_path / "audit.jsonl"
    assert _cli(capsys, tracker.store.url, "export", "--out", str(saved))[0] == 0
    _sql(tracker, "DELETE FROM llmspend_audit WHERE seq = 5")
    code, out = _cli(capsys, tracker.store.url, "verify", "--against", str(saved))
    assert code == 1 and "entry #5 of the export is missing" in out


WRITER = r"""
import sys
from llmspend.budgets.manage import set_budget
from llmspend.store.engine import open_store
store = open_store(sys.argv[1])
tag = sys.argv[2]
for i in range(int(sys.argv[3])):
    set_budget(store, "project", f"acme/{tag}{i}", "5", actor=f"writer-{tag}")
"""


def test_concurrent_appends_from_two_processes_keep_one_chain(tracker: Tracker) -> None:
    llmspend.set_budget("org", "acme", "100")  # the schema exists before the writers start
    n = 15
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, tracker.store.url, tag, str(n)])
        for tag in ("a", "b")
    ]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    with tracker.store.begin() as conn:
        result = verify(conn)
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM llmspend_audit ORDER BY seq"))]
    assert result.ok, result
    assert result.entries == 1 + 2 * n and seqs == list(range(1, 2 + 2 * n))
    actors = set(audit_log(tracker.store).actor)
    assert actors == {"tester", "writer-a", "writer-b"}


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('{"seq": "x", "hash": "a", "prev_hash": ""}', "line 1 is not an audit entry (no id, ts"),
        ('{"seq": 1, "hash": "a", "prev_hash": ""}', "(no id, ts, actor"),
        ('{"seq": null, "hash": "a", "prev_hash": ""}', "line 1 is not an audit entry"),
        ("[1, 2]", "line 1 is not an audit entry"),
        ("retype", "seq must be a whole number"),
    ],
)
def test_a_malformed_export_is_named_in_one_line(
    tracker: Tracker, capsys, tmp_path: Path, line: str, named: str
) -> None:
    _changes()
    saved = tmp_path / "audit.jsonl"
    if line == "retype":  # a real export whose seq was turned into text
        assert _cli(capsys, tracker.store.url, "export", "--out", str(saved))[0] == 0
        first = json.loads(saved.read_text().splitlines()[0])
        line = json.dumps({**first, "seq": "1"})
    saved.write_text(line + "\n")
    code, out = _cli(capsys, tracker.store.url, "verify", "--against", str(saved))
    assert code == 1 and named in out and "Traceback" not in out, out
    assert out.strip().startswith("llmspend: error:") and len(out.strip().splitlines()) == 1


def test_an_unwritable_export_path_is_a_one_line_error(tracker: Tracker, capsys, tmp_path) -> None:
    _changes()
    code, out = _cli(capsys, tracker.store.url, "export", "--out", str(tmp_path / "no" / "x"))
    assert code == 1 and out.startswith("llmspend: error: cannot write") and "No such" in out


def test_an_entry_without_a_sequence_number_is_named_by_its_id(tracker: Tracker, capsys) -> None:
    _changes()
    _sql(tracker, "UPDATE llmspend_audit SET seq = NULL WHERE seq = 4")
    code, out = _cli(capsys, tracker.store.url, "verify")
    assert code == 1 and "has no sequence number" in out and "#None" not in out, out
