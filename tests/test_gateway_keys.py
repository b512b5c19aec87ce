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
