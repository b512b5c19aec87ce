"""Private by default: what llmspend creates is 0700/0600 whatever the umask, and no
message, log record, ``repr`` or report shows a database password."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import llmspend
from llmspend.cli import main
from llmspend.config import resolve_database_url
from llmspend.errors import ConfigError, StoreError
from llmspend.report import heading_html, resolve_window
from llmspend.store.engine import forget_store, open_store
from llmspend.store.urls import redacted, safe_url

SECRET = "secret"
URLS = [
    "postgresql://u@127.0.0.1:1/db?password=secret",  # nothing listens on port 1: refused
    "postgresql://u:secret@127.0.0.1:1/db",
    "postgresql://u:secret@127.0.0.1:1/db?sslmode=disable&sslpassword=secret",
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    "url",
    [
        *URLS,
        "postgresql://u@h/db?sslmode=require&password=secret&application_name=x",
        "postgresql://u@h/db?PASSWORD=secret&api_key=secret&auth_token=secret",
        "postgresql+psycopg://u:secret@h:5432/db;password=secret",
    ],
)
def test_passwords_are_hidden_in_userinfo_and_query(url: str) -> None:
    assert SECRET not in safe_url(url)
    assert SECRET not in redacted(url)
    assert SECRET not in redacted(f"cannot reach {url}: refused")


def test_what_is_no_password_is_shown() -> None:
    url = "postgresql://u@h/db?sslmode=require&passfile=/home/u/.pgpass&sslkey=/k"
    assert "passfile=/home/u/.pgpass" in redacted(url) and "sslkey=/k" in redacted(url)
    assert "sslmode=require" in safe_url(url) and "passfile=%2Fhome%2Fu%2F.pgpass" in safe_url(url)
    assert safe_url("sqlite:////tmp/llmspend.sqlite") == "sqlite:////tmp/llmspend.sqlite"


@pytest.mark.parametrize("url", URLS)
def test_no_password_in_errors_logs_repr_cli_or_report(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError) as raised:
        open_store(url)
    assert "127.0.0.1" in str(raised.value) and SECRET not in str(raised.value)
    with pytest.raises(StoreError) as raised:
        llmspend.install(url)
    assert SECRET not in str(raised.value)

    store = open_store(url, migrate=False)  # made without connecting
    try:
        assert "127.0.0.1" in repr(store) and SECRET not in repr(store)
    finally:
        forget_store(url)

    assert main(["--database-url", url, "budget", "list"]) == 1
    out = capsys.readouterr()
    assert "cannot open the store" in out.err and SECRET not in out.err + out.out

    # the report notebook's heading shows the store as safe_url gives it
    block = heading_html("Spend", resolve_window("this-month"), {}, store=safe_url(url))
    assert "127.0.0.1" in block.html and SECRET not in block.html + block.text

    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_a_bad_url_is_redacted_too() -> None:
    with pytest.raises(ConfigError) as raised:
        open_store("postgresql://u:secret@127.0.0.1:notaport/db?password=secret")
    assert SECRET not in str(raised.value)


def test_data_dir_store_and_spool_are_private_under_umask_022(
    umask_022: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_sim: Any
) -> None:
    home = tmp_path / "made" / "home"  # neither exists: llmspend makes both
    monkeypatch.setenv("LLMSPEND_HOME", str(home))
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "100")
    url = resolve_database_url()
    assert mode(tmp_path / "made") == 0o700 and mode(home) == 0o700
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    msg: list[Any] = [{"role": "user", "content": "hello"}]
    other = sqlite3.connect(home / "llmspend.sqlite", isolation_level=None, timeout=0.1)
    try:
        client.chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=5)
        db = home / "llmspend.sqlite"
        assert mode(db) == 0o600
        for companion in (Path(f"{db}-wal"), Path(f"{db}-shm")):
            if companion.exists():
                assert mode(companion) == 0o600
        other.execute("BEGIN IMMEDIATE")  # the store stays locked: the next row is spooled
        with pytest.warns(llmspend.LLMSpendWarning, match="journaled"):
            client.chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=5)
        (spooled,) = tracker.spool.pending()
        assert mode(spooled) == 0o600
        assert mode(tracker.spool.dir) == 0o700 and mode(tracker.spool.dir.parent) == 0o700
        assert not list(tracker.spool.dir.glob("*.tmp"))
        other.execute("COMMIT")
    finally:
        other.close()
        llmspend.uninstall()
        forget_store(url)


def test_what_the_user_made_keeps_its_mode(
    umask_022: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "mine"
    home.mkdir(mode=0o755)
    db = tmp_path / "theirs.sqlite"
    sqlite3.connect(db).close()
    os.chmod(db, 0o640)
    monkeypatch.setenv("LLMSPEND_HOME", str(home))
    resolve_database_url()
    assert mode(home) == 0o755
    url = f"sqlite:///{db}"
    try:
        with open_store(url).begin(write=True):
            pass
        assert mode(db) == 0o640
    finally:
        forget_store(url)
