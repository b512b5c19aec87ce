"""A damaged SQLite store file: detected, said clearly, recovered; a notebook keeps counting.

The stores here are real files damaged on disk: a leaf page of the usage table (found
with SQLite's ``dbstat``, else the middle of the file) overwritten, or the header / the
schema page overwritten.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy.exc
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import llmspend
from llmspend.cli import main
from llmspend.errors import StoreCorrupted
from llmspend.spool import Spool
from llmspend.store.engine import forget_store, open_store
from llmspend.tracker import Tracker, set_tracker

ROWS = 3000


def make_store(path: Path, rows: int = ROWS) -> str:
    """A store file with ``rows`` usage rows, closed and checkpointed."""
    url = f"sqlite:///{path}"
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    base = dt.datetime(2026, 11, 1)
    tracker.ingest(
        {
            "ts": base + dt.timedelta(seconds=i),
            "provider": "openai",
            "model": "gpt-4o-mini",
            "cost_usd": Decimal("0.001"),
            "org": "acme",
            "project": "churn",
            "user": "ana",
        }
        for i in range(rows)
    )
    forget_store(url)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return url


def damage_usage_pages(path: Path) -> None:
    """Overwrite the cell pointers of a leaf page in the middle of the usage table."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    try:
        leaves = [
            r[0]
            for r in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'llmspend_usage' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    except sqlite3.OperationalError:  # a SQLite built without dbstat: the middle of the file
        leaves = [path.stat().st_size // page_size // 2]
    conn.close()
    victim = leaves[len(leaves) // 2]
    with open(path, "r+b") as fh:
        fh.seek((victim - 1) * page_size + 8)
        fh.write(b"\xff" * 200)


def damage_page_one(path: Path, where: str) -> None:
    """Overwrite the file's header, or the schema (sqlite_master) on the first page."""
    with open(path, "r+b") as fh:
        if where == "header":
            fh.write(b"\x00" * 100)
        else:
            fh.seek(100)
            fh.write(b"\xee" * 400)


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def damaged(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "store.sqlite"
    url = make_store(path)
    damage_usage_pages(path)
    yield url, path
    forget_store(url)


def test_damaged_usage_pages_raise_one_clear_error_naming_the_file(damaged: Any) -> None:
    url, path = damaged
    tracker = Tracker(url)  # opens: the store is quarantined, not an exception at import
    set_tracker(tracker)
    assert tracker.store.corruption
    with pytest.raises(StoreCorrupted) as info:
        llmspend.records()
    msg = str(info.value)
    assert str(path) in msg and "llmspend db recover" in msg
    assert not isinstance(info.value, sqlalchemy.exc.DatabaseError)
    with pytest.raises(StoreCorrupted), tracker.store.tx(write=True):  # nothing more is written
        pass


def test_damage_found_by_a_read_after_open_is_translated_and_quarantines(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    url = make_store(path)
    tracker = Tracker(url)
    set_tracker(tracker)
    assert tracker.store.corruption is None
    assert len(llmspend.records()) == ROWS
    tracker.store.dispose()  # no page of the file cached by a connection
    damage_usage_pages(path)
    with pytest.raises(StoreCorrupted, match="llmspend db recover"):
        llmspend.records()
    assert tracker.store.corruption  # quick_check agreed: quarantined
    with pytest.raises(StoreCorrupted, match=str(path)), tracker.store.begin() as conn:
        conn.exec_driver_sql("SELECT 1")


def test_a_large_file_is_checked_off_the_open_path(
    damaged: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, path = damaged
    monkeypatch.setenv("LLMSPEND_QUICK_CHECK_MAX_MB", "0")  # every file is "large"
    store = open_store(url)
    assert store.checking is not None  # its header and schema read; the rest in a child
    store.checking.join(120)
    assert store.corruption
    with pytest.raises(StoreCorrupted, match=str(path)), store.begin():
        pass


def test_a_clean_check_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    from llmspend.store import health

    path = tmp_path / "store.sqlite"
    url = make_store(path, rows=10)
    calls: list[str] = []
    real = health.check_file

    def counting(p: str, **kw: Any) -> list[str]:
        calls.append(p)
        return real(p, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(health, "check_file", counting)
    try:
        assert health.check_on_open(str(path)) == (None, False)
        assert health.check_on_open(str(path)) == (None, False)
        assert len(calls) == 1  # unchanged: not read again
        damage_usage_pages(path)
        assert health.check_on_open(str(path))[0]
        assert len(calls) == 2
    finally:
        mp.undo()
        forget_store(url)


@pytest.mark.parametrize("where", ["header", "schema"])
def test_a_damaged_header_or_schema_is_a_clear_error(tmp_path: Path, where: str) -> None:
    path = tmp_path / "store.sqlite"
    url = make_store(path, rows=50)
    damage_page_one(path, where)
    store = open_store(url)
    try:
        assert store.corruption
        with (
            pytest.raises(StoreCorrupted, match="llmspend db recover") as info,
            store.begin() as conn,
        ):
            conn.exec_driver_sql("SELECT count(*) FROM llmspend_usage")
        assert str(path) in str(info.value)
    finally:
        forget_store(url)


def test_db_check_reports_a_damaged_store_and_exits_1(
    damaged: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = damaged
    code, out, _ = cli("db", "check", "--database-url", url, capsys=capsys)
    assert code == 1
    assert "UNHEALTHY" in out and str(path) in out
    assert "llmspend db recover" in out
    assert "spool:" in out and "data dir:" in out and "schema:" in out


def test_db_check_and_doctor_on_a_sound_store_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_store(tmp_path / "store.sqlite", rows=10)
    code, out, _ = cli("db", "check", "--database-url", url, capsys=capsys)
    assert code == 0, out
    assert "healthy" in out and "quick_check:  ok" in out and "llmspend_usage: 10" in out
    code, out, _ = cli("doctor", "--database-url", url, "--full", capsys=capsys)
    assert code == 0 and "integrity_check:  ok" in out and "setting:" in out
    forget_store(url)


def test_db_recover_keeps_the_readable_rows_and_the_old_file(
    damaged: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url, path = damaged
    code, out, _ = cli("db", "recover", "--database-url", url, capsys=capsys)
    assert code == 0, out
    old = list(path.parent.glob("store.sqlite.corrupt-*"))
    assert [p.name for p in old if not p.name.endswith(("-wal", "-shm"))], old
    assert "kept     llmspend_usage" in out and "lost     llmspend_usage" in out
    code, check, _ = cli("db", "check", "--database-url", url, capsys=capsys)
    assert code == 0, check
    set_tracker(Tracker(url))
    kept = llmspend.records()
    assert ROWS - 200 < len(kept) < ROWS  # one leaf page's rows are gone, the rest kept
    assert sum(kept["cost_usd"]) == Decimal("0.001") * len(kept)
    forget_store(url)


def test_load_ext_on_a_damaged_store_warns_and_still_counts_calls(
    damaged: Any,
    monkeypatch: pytest.MonkeyPatch,
    fresh_sim: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The taps are installed; a call goes out (with the outage policy open: under the
    default one a kernel that never reached its store refuses calls that a hard budget
    might cover, saying why) and is journaled; recover replays it into the new file, and
    the kernel's store finds that file by itself."""
    url, _path = damaged
    monkeypatch.setenv("LLMSPEND_DATABASE_URL", url)
    shell = InteractiveShell.instance()
    with capture_output() as cap:
        result = shell.run_cell("%load_ext llmspend", store_history=False)
    try:
        assert result.error_in_exec is None and result.error_before_exec is None
        assert "corrupted" in cap.stderr and "llmspend db recover" in cap.stderr
        client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)

        def chat() -> Any:
            return client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", llmspend.LLMSpendWarning)  # "calls are journaled"
            with pytest.raises(llmspend.StoreError, match="corrupted"):  # auto: not sent, said
                chat()
            monkeypatch.setenv("LLMSPEND_STORE_DOWN", "open")
            reply = chat()
        assert reply.choices
        journaled = Spool(url).pending()
        assert journaled  # hooked, and journaled
        code, out, _ = cli("db", "recover", "--database-url", url, capsys=capsys)
        assert code == 0 and f"replayed {len(journaled)} spooled call(s)" in out, out
        assert Spool(url).pending() == []
        rows = llmspend.records()  # the kernel's store finds the recovered file by itself
        served = rows[rows.request_id.notna()]  # the ingested rows have none
        assert list(served.status) == ["ok"] and list(served.model) == ["gpt-4o-mini"]
    finally:
        shell.run_cell("%unload_ext llmspend", store_history=False)
