"""A store's life cycle as a demanding user meets it: the ``llmspend db`` commands on a
store that is not there, killed kernels, an upgrade from an old schema."""

from __future__ import annotations

import json

import pytest

from llmspend.cli import main


@pytest.mark.parametrize("action", ["check", "current"])
def test_looking_at_a_store_file_that_is_not_there_makes_none(tmp_path, capsys, action) -> None:  # type: ignore[no-untyped-def]
    """``db check`` and ``db current`` on a path with no store (a typo, a fresh machine) say
    so and leave no file behind (both made an empty store there, ``check`` world-readable
    and reported it healthy with every table "unreadable")."""
    path = tmp_path / "typo.sqlite"
    url = f"sqlite:///{path}"
    assert main(["db", action, "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert str(path) in out and ("none yet" in out or "no store file yet" in out)
    assert "unreadable" not in out
    assert main(["db", action, "--database-url", url, "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said.get("file_missing") or said.get("missing_file") == str(path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action", ["check", "current"])
def test_looking_through_a_dangling_symlink_makes_no_store(tmp_path, capsys, action) -> None:  # type: ignore[no-untyped-def]
    """``store.sqlite -> data/store.sqlite`` with no file there yet: said so, and nothing
    made (``db check`` made an empty store at the link's target, world-readable)."""
    link = tmp_path / "store.sqlite"
    link.symlink_to(tmp_path / "elsewhere.sqlite")
    assert main(["db", action, "--database-url", f"sqlite:///{link}"]) == 0
    out = capsys.readouterr().out
    assert "none yet" in out or "no store file yet" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]


def _a_store(path) -> str:  # type: ignore[no-untyped-def]
    import llmspend

    url = f"sqlite:///{path}"
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("org", "acme", "5")
        row = dict(ts="2026-12-01T00:00:00", provider="openai", model="gpt-4o")
        llmspend.ingest([dict(row, api="chat.completions", input_tokens=10, output_tokens=1)])
    finally:
        llmspend.uninstall()
    from llmspend.store.engine import forget_store

    forget_store(url)
    return url


def test_recover_leaves_a_sound_store_alone_unless_forced(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``db recover`` on a store with no damage (run "just in case") changed it: renamed the
    sound file ``.corrupt-…``, said "the damaged file is kept", dropped the holds in
    flight. Now it says there is nothing to recover and changes nothing; ``--force`` does it."""
    path = tmp_path / "store.sqlite"
    url = _a_store(path)

    def files() -> list[str]:  # (SQLite may fold its -wal file in when a connection closes)
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))

    before = files()
    assert main(["db", "recover", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "no damage to recover" in err and "--force" in err and "Traceback" not in err
    assert files() == before
    assert main(["db", "recover", "--force", "--database-url", url]) == 0
    assert "kept     llmspend_usage: 1 row(s)" in capsys.readouterr().out
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())


def test_recover_takes_damage_only_integrity_check_finds(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """An index that no longer matches its table (quick_check does not look: its
    ``(ts, record_uid)`` index lets a replayed call in twice) is damage: ``db check --full``
    said "run llmspend db recover", and recover refused, saying there was none."""
    import sqlite3

    path = tmp_path / "store.sqlite"
    url = _a_store(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE scratch (a, b)")
    conn.execute("CREATE INDEX scratch_a ON scratch (a)")
    conn.executemany("INSERT INTO scratch VALUES (?, ?)", [(i, -i) for i in range(50)])
    conn.commit()
    conn.execute("PRAGMA writable_schema = ON")  # the index now claims another column
    conn.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX scratch_a ON scratch (b)' "
                 "WHERE name = 'scratch_a'")  # fmt: skip
    conn.commit()
    conn.close()
    assert main(["db", "check", "--full", "--database-url", url]) == 1
    assert "llmspend db recover" in capsys.readouterr().out
    assert main(["db", "recover", "--database-url", url]) == 0
    assert "kept     llmspend_usage: 1 row(s)" in capsys.readouterr().out
    assert main(["db", "check", "--full", "--database-url", url]) == 0


@pytest.mark.parametrize("force", [False, True])
def test_recover_refuses_a_store_another_process_holds_locked(tmp_path, capsys, force) -> None:  # type: ignore[no-untyped-def]
    """A sound store that is only locked (a kernel writing, in rollback-journal mode) is no
    damaged one: recover read every table as "lost (database is locked)", renamed the
    sound file ``.corrupt-…`` and put an empty store in its place (budgets gone)."""
    import sqlite3

    path = tmp_path / "store.sqlite"
    url = _a_store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode = DELETE").fetchall()
        holder.execute("BEGIN EXCLUSIVE")
        argv = ["db", "recover", "--database-url", url] + (["--force"] if force else [])
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "locked by another process" in err and "Traceback" not in err
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]
    assert main(["db", "check", "--database-url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"]["llmspend_budgets"] == 1


def test_recover_refuses_a_store_of_a_newer_llmspend(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A store migrated by a newer llmspend is never rebuilt by this one, not even forced (it
    rebuilt it at this llmspend's schema: what the newer one added was dropped)."""
    import sqlite3

    path = tmp_path / "store.sqlite"
    url = _a_store(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE llmspend_alembic_version SET version_num = '9999'")
    conn.close()
    before = path.read_bytes()
    assert main(["db", "recover", "--force", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "9999" in err and "newer llmspend" in err and "Traceback" not in err
    assert path.read_bytes() == before
    assert not any(".corrupt-" in p.name for p in tmp_path.iterdir())


def test_a_store_url_naming_a_directory_says_so(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """Not "the store file is corrupted: run llmspend db recover" (nothing is damaged)."""
    import llmspend
    from llmspend.errors import StoreError

    url = f"sqlite:///{tmp_path}"
    with pytest.raises(StoreError, match="names a directory") as raised:
        llmspend.install(url)
    assert "corrupted" not in str(raised.value)
    assert main(["budget", "list", "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert "names a directory" in err and "recover" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made inside
