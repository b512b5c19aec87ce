"""A team-mode stack for the tests: ``llmspend.sim`` and a gateway as child processes, keys
for ana (owner of acme/churn), bob (member) and root (admin), and this process as a kernel
in team mode that may open no store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from llmspend.store.engine import open_store
from llmspend.tracker import current_tracker
from tests.test_gateway import MESSAGES, _openai, sim_and_gateway

__all__ = ["ROLES_TOML", "Stack", "module_stack", "team_kernel"]

ROLES_TOML = """
[roles]
admins = ["root"]
[roles.owners]
"acme/churn" = ["ana"]
"""


class Stack:
    """A simulator and a gateway (SQLite unless ``db`` names another store) with ``keys``
    for ana, bob and root in acme/churn; ``store`` is the gateway's, read by the test."""

    def __init__(self, tmp: Path, db: str | None = None) -> None:
        with ExitStack() as running:  # stopped here if the keys cannot be made
            self.sim, self.gw = running.enter_context(sim_and_gateway(tmp, db=db, extra=ROLES_TOML))
            self.keys = {u: self.gw.new_key("acme", "churn", u) for u in ("ana", "bob", "root")}
            self.store = open_store(self.gw.db)
            self._running = running.pop_all()

    def chat(self, user: str) -> None:
        _openai(self.gw, self.keys[user]).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )

    def stop(self) -> None:
        self._running.close()


def module_stack(name: str, chats: tuple[str, ...] = ("ana", "ana", "bob")) -> Any:
    """A module-scoped ``stack`` fixture: a :class:`Stack` after ``chats`` (one per user)."""

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        s = Stack(tmp_path_factory.mktemp(name))
        try:
            for user in chats:
                s.chat(user)
            yield s
        finally:
            s.stop()

    return stack


def team_kernel(
    url: str, keys: dict[str, str], home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """This process as a team-mode kernel of the gateway at ``url`` — no database URL,
    ``LLMSPEND_HOME`` at ``home``, and any store opened is an error. Yields ``be(user)``,
    which switches the gateway key; checks at the end that no tracker was made."""
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", url)
    monkeypatch.setenv("LLMSPEND_HOME", str(home))
    monkeypatch.delenv("LLMSPEND_DATABASE_URL", raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)

    def no_store(*args: Any, **kw: Any) -> Any:
        raise AssertionError(f"the kernel opened a store: {args!r}")

    for module in ("llmspend.store.engine", "llmspend.tracker"):
        monkeypatch.setattr(f"{module}.open_store", no_store)

    def be(user: str) -> None:
        monkeypatch.setenv("LLMSPEND_GATEWAY_KEY", keys[user])

    assert current_tracker() is None
    yield be
    assert current_tracker() is None  # nothing made a tracker (and so no store)
