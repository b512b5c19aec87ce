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
