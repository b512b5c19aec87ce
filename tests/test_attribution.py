"""Attribution: nesting, threads, asyncio tasks and defaults."""

from __future__ import annotations

import asyncio
import threading

import pytest

import llmspend
from llmspend.attribution import current_overrides
from llmspend.call import Usage
from llmspend.pipeline import begin_call


def who() -> tuple[str, str, str, dict]:
    c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1, max_output_tokens=1)
    assert c is not None
    row = c.finish(Usage(1, 0, 0, 1, 0))
    assert row is not None
    import json

    return row["org_name"], row["project_name"], row["user_name"], json.loads(row["tags"] or "{}")


def test_nesting_innermost_wins_per_field(installed) -> None:  # type: ignore[no-untyped-def]
    assert who() == ("acme", "churn", "ana", {})
    with llmspend.attribute(project="p1", tags={"a": 1}):
        assert who() == ("acme", "p1", "ana", {"a": 1})
        with llmspend.attribute(user="bob", tags={"b": "x"}):
            assert who() == ("acme", "p1", "bob", {"a": 1, "b": "x"})
            with llmspend.attribute(tags={"a": 2}):
                assert who()[3] == {"a": 2, "b": "x"}
        assert who() == ("acme", "p1", "ana", {"a": 1})
    assert who() == ("acme", "churn", "ana", {})
    rows = llmspend.records()
    assert list(rows.user) == ["ana", "ana", "bob", "bob", "ana", "ana"]
    assert rows.iloc[2].tags == {"a": 1, "b": "x"}


def test_a_new_thread_starts_from_the_defaults(installed) -> None:  # type: ignore[no-untyped-def]
    seen: dict[str, tuple] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        with llmspend.attribute(user=name):
            barrier.wait()  # both threads are inside their own block at once
            seen[name] = who()
        seen[name + "-after"] = who()

    with llmspend.attribute(project="outer"):
        threads = [threading.Thread(target=worker, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert seen["t1"][:3] == ("acme", "churn", "t1")  # not "outer": threads start from defaults
    assert seen["t2"][:3] == ("acme", "churn", "t2")
    assert seen["t1-after"][:3] == ("acme", "churn", "ana")


def test_asyncio_tasks_are_isolated(installed) -> None:  # type: ignore[no-untyped-def]
    async def task(name: str, gate: asyncio.Event) -> tuple:
        with llmspend.attribute(user=name):
            await gate.wait()
            return who()

    async def main() -> list:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(task(n, gate)) for n in ("x", "y", "z")]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [r[2] for r in results] == ["x", "y", "z"]
    assert current_overrides().user is None


def test_defaults_from_install_and_env(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMSPEND_ORG", "envorg")
    monkeypatch.setenv("LLMSPEND_PROJECT", "envproj")
    monkeypatch.delenv("LLMSPEND_USER")
    monkeypatch.setenv("JUPYTERHUB_USER", "hubuser")
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    t = llmspend.install(url)
    try:
        assert t.defaults == ("envorg", "envproj", "hubuser")
        assert who()[:3] == ("envorg", "envproj", "hubuser")
        t2 = llmspend.install(org="other")  # idempotent: same store, new default
        assert t2 is t and t.defaults == ("other", "envproj", "hubuser")
    finally:
        llmspend.uninstall()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"org": "a/b"},
        {"user": ""},
        {"project": 5},
        {"tags": ["x"]},
        {"tags": {"k": object()}},
        {"tags": {"": 1}},
        {"tags": {"lr": float("nan")}},  # stored as NaN: not JSON
        {"tags": {"lr": float("inf")}},
    ],
)
def test_bad_attribution_is_a_clear_error(kwargs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(llmspend.ValidationError), llmspend.attribute(**kwargs):
        pass


def test_not_installed_records_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert begin_call("openai", "chat.completions", "gpt-4o-mini") is None


def test_a_name_with_a_letter_outside_ascii_is_told_why() -> None:
    with (
        pytest.raises(llmspend.ValidationError, match="ASCII letters"),
        llmspend.attribute(user="bób"),
    ):
        pass
