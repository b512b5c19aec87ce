"""Gateway keys as the admin handles them: ``llmspend gateway keys`` against bad input."""

from __future__ import annotations

import pytest

from llmspend.cli import main


@pytest.mark.parametrize("key_id", ["99", "-1", "0", str(2**63), "99999999999999999999999"])
def test_revoking_an_unknown_id_is_one_line_and_changes_nothing(
    store_url: str, capsys: pytest.CaptureFixture[str], key_id: str
) -> None:
    db = ["--database-url", store_url]
    assert main([*db, "gateway", "keys", "create", "--org", "acme", "--project", "churn",
                 "--user", "ana"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main([*db, "gateway", "keys", "revoke", "--", key_id]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"llmspend: error: no gateway key with id {key_id}"
    assert main([*db, "gateway", "keys", "list", "--json"]) == 0
    assert '"state": "active"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["gateway", "keys", "create", "--org", "acme", "--project", "churn", "--user", "ana"],
        ["gateway", "keys", "list"],
        ["gateway", "keys", "revoke", "1"],
        ["audit", "verify"],
        ["audit", "export"],
    ],
    ids=lambda a: " ".join(a[:3]),
)
def test_in_team_mode_an_admin_command_names_its_database_or_refuses(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv
) -> None:
    # A hub terminal: the gateway is set, no database. The default store is this machine's
    # own file, which no gateway reads: "ok: 0 entries" of it, or a key nobody knows.
    monkeypatch.setenv("LLMSPEND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LLMSPEND_DATABASE_URL", raising=False)
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", "http://127.0.0.1:9")
    assert main(argv) == 1
    out = capsys.readouterr()
    assert out.err.startswith("llmspend: error: llmspend ") and "--database-url" in out.err
    assert "lsk_" not in out.out and "ok:" not in out.out
    assert not (tmp_path / "home" / "llmspend.sqlite").exists()
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    monkeypatch.setenv("LLMSPEND_DATABASE_URL", db)  # named: it is used
    assert main(argv) in (0, 1)  # revoke 1: no such key in the new store
    assert (tmp_path / "gw.db").exists()
