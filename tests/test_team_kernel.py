"""A kernel in team mode: ``llmspend.sim`` and a gateway (SQLite store) as child processes,
and an IPython shell in this process with ``%load_ext llmspend``, ``LLMSPEND_GATEWAY_URL``
set and a local store of its own. Gateway-bound calls are the gateway's: recorded once,
there; the cell line and ``BudgetExceeded`` come from the gateway's answer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import llmspend
from llmspend.money import nanos_to_usd
from llmspend.notebook.cellcost import _money, cell_cost
from tests.shells import plain_shell
from tests.test_gateway import Gateway, Sim, sim_and_gateway

MESSAGES = [{"role": "user", "content": "hello there"}]
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Gateway]]:
    with sim_and_gateway(tmp_path_factory.mktemp("team")) as pair:
        yield pair


@pytest.fixture
def kernel(
    stack: tuple[Sim, Gateway], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[InteractiveShell]:
    """An IPython shell with ``%load_ext llmspend`` in team mode, on a local store."""
    from llmspend.store.engine import forget_store

    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", stack[1].url)
    url = f"sqlite:///{tmp_path / 'kernel.sqlite'}"
    monkeypatch.setenv("LLMSPEND_DATABASE_URL", url)
    shell = plain_shell()
    with capture_output() as cap:
        shell.run_cell("%load_ext llmspend", store_history=False)
    shell.user_ns["load_ext_said"] = cap.stdout
    enabled, minimum = cell_cost.enabled, cell_cost.min_usd
    cell_cost.enabled, cell_cost.min_usd = True, Decimal(0)
    yield shell
    cell_cost.enabled, cell_cost.min_usd = enabled, minimum
    shell.run_cell("%unload_ext llmspend")
    forget_store(url)


def eventually(check: Any, what: str, limit: float = 60.0) -> None:
    """Poll ``check`` until true (generous limit: a loaded machine is slow, not wrong)."""
    end = time.monotonic() + limit
    while not check():
        if time.monotonic() > end:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def run(shell: InteractiveShell, cell: str) -> tuple[Any, list[str]]:
    """Run ``cell``: its result and the cost lines it displayed."""
    with capture_output() as cap:
        result = shell.run_cell(cell, store_history=False)
    assert result.error_before_exec is None, result.error_before_exec
    lines = [
        o.data["text/plain"]
        for o in cap.outputs
        if "llmspend · this cell" in o.data.get("text/plain", "")
    ]
    return result, lines


def _client(shell: InteractiveShell, gateway: Gateway, key: str) -> None:
    import openai

    shell.user_ns["client"] = openai.OpenAI(
        base_url=gateway.url + "/openai/v1", api_key=key, max_retries=2
    )


def _chat(shell: InteractiveShell, gateway: Gateway, key: str) -> list[str]:
    """A chat completion in a cell through the gateway with ``key``, which must succeed:
    the cost lines the cell displayed."""
    _client(shell, gateway, key)
    result, lines = run(
        shell,
        f"r = client.chat.completions.create(model='gpt-4o-mini', messages={MESSAGES!r},"
        " max_tokens=20)",
    )
    assert result.error_in_exec is None, result.error_in_exec
    return lines


def test_a_call_through_the_gateway_is_recorded_once_there_and_its_cost_shown(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell
) -> None:
    _sim, gateway = stack
    lines = _chat(kernel, gateway, gateway.new_key("acme", "churn", "tina"))
    rows = gateway.rows("user_name = :u", u="tina")
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].cost_nanos > 0
    assert llmspend.records().empty  # nothing recorded (or reserved) in the kernel's store
    cost = _money(nanos_to_usd(rows[0].cost_nanos))
    assert lines == [f"llmspend · this cell: 1 call, {cost}"]

    # A stream: its cost is not in its headers (it is in the gateway's store).
    result, lines = run(
        kernel,
        f"s = client.chat.completions.create(model='gpt-4o-mini', messages={MESSAGES!r},"
        " max_tokens=20, stream=True)\nchunks = list(s)",
    )
    assert result.error_in_exec is None, result.error_in_exec
    assert kernel.user_ns["chunks"]
    # the SDK closes a stream at its [DONE] event: the gateway settles it as the client goes
    eventually(lambda: len(gateway.rows("user_name = :u", u="tina")) == 2, "the stream's row")
    assert llmspend.records().empty
    assert lines == ["llmspend · this cell: 1 call (1 costed at the gateway), $0"]


def test_a_refusal_at_the_gateway_raises_budget_exceeded_and_nothing_is_sent(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell
) -> None:
    import openai

    sim, gateway = stack
    key = gateway.capped_key("tight", "tom")
    _client(kernel, gateway, key)
    sent = sim.count()
    result, lines = run(
        kernel,
        f"client.chat.completions.create(model='gpt-4o-mini', messages={MESSAGES!r},"
        " max_tokens=50)",
    )
    error = result.error_in_exec
    assert type(error) is llmspend.BudgetExceeded, error
    assert (error.budget, error.scope, error.period) == ("acme/tight", "project", "day")
    assert error.limit == Decimal("0.000001") and error.estimate is not None

    # The same message as the gateway's (solo mode's message for the same refusal).
    raw = openai.OpenAI(base_url=gateway.url + "/openai/v1", api_key=key, max_retries=2)
    llmspend.uninstall()
    try:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            raw.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    finally:
        llmspend.install()
    assert str(error) == denied.value.body["message"]  # type: ignore[index]

    assert sim.count() == sent  # the simulator saw nothing
    refused = gateway.rows("user_name = :u", u="tom")
    assert [(r.status, r.cost_nanos) for r in refused] == [("refused", 0), ("refused", 0)]
    assert llmspend.records().empty
    assert lines == ["llmspend · this cell: 1 call (1 refused), $0"]


def test_a_bare_http_client_gets_budget_exceeded_too(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell
) -> None:
    sim, gateway = stack
    key = gateway.capped_key("bare", "bo")
    sent = sim.count()
    with pytest.raises(llmspend.BudgetExceeded) as refused:
        httpx.post(
            gateway.url + "/openai/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50},
        )
    assert refused.value.budget == "acme/bare" and refused.value.scope == "project"
    assert sim.count() == sent
    assert llmspend.records().empty


def test_load_ext_in_team_mode_prints_the_hint(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell
) -> None:
    said = kernel.user_ns["load_ext_said"]
    assert said.strip() == llmspend.team_hint()
    assert f"OPENAI_BASE_URL={stack[1].url}/openai/v1" in said


def test_team_hint_names_the_gateway(
    stack: tuple[Sim, Gateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMSPEND_GATEWAY_URL", raising=False)
    assert llmspend.team_hint() == ""
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", stack[1].url)
    hint = llmspend.team_hint()
    assert f"OPENAI_BASE_URL={stack[1].url}/openai/v1" in hint and "\n" not in hint


def test_gemini_calls_through_the_gateway_are_the_gateways_too(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell
) -> None:
    from tests.test_gateway import _genai

    sim, gateway = stack
    key = gateway.new_key("acme", "churn", "gina")
    kernel.user_ns["gclient"] = _genai(gateway, key)
    result, lines = run(
        kernel, "r = gclient.models.generate_content(model='gemini-2.5-flash', contents='hi')"
    )
    assert result.error_in_exec is None, result.error_in_exec
    rows = gateway.rows("user_name = :u", u="gina")
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].cost_nanos > 0
    assert llmspend.records().empty  # recorded once: at the gateway, not in the kernel
    assert lines == [f"llmspend · this cell: 1 call, {_money(nanos_to_usd(rows[0].cost_nanos))}"]

    result, _ = run(
        kernel,
        "chunks = list(gclient.models.generate_content_stream("
        "model='gemini-2.5-flash', contents='hi'))",
    )
    assert result.error_in_exec is None, result.error_in_exec
    assert kernel.user_ns["chunks"]
    eventually(lambda: len(gateway.rows("user_name = :u", u="gina")) == 2, "the stream's row")
    assert llmspend.records().empty

    tight = gateway.capped_key("gtight", "gus")
    kernel.user_ns["gclient"] = _genai(gateway, tight)
    sent = sim.count()
    for cell in (
        "gclient.models.generate_content(model='gemini-2.5-flash', contents='hi')",
        "list(gclient.models.generate_content_stream(model='gemini-2.5-flash', contents='hi'))",
    ):
        result, _ = run(kernel, cell)
        error = result.error_in_exec
        assert type(error) is llmspend.BudgetExceeded, error
        assert error.budget == "acme/gtight"
    assert sim.count() == sent  # nothing reached the provider
    assert llmspend.records().empty


def test_with_a_gateway_key_the_kernel_opens_no_store_and_the_magics_ask_the_gateway(
    stack: tuple[Sim, Gateway],
    kernel: InteractiveShell,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from llmspend.tracker import current_tracker

    _sim, gateway = stack
    key = gateway.new_key("acme", "nostore", "nora")
    gateway.cli("budget", "set", "user", "acme/nostore/nora", "5/day", "--soft")
    monkeypatch.setenv("LLMSPEND_GATEWAY_KEY", key)
    tracker = current_tracker()
    assert tracker is not None and tracker.opened_store() is None  # %load_ext opened none
    lines = _chat(kernel, gateway, key)
    (row,) = gateway.rows("user_name = :u", u="nora")
    cost = _money(nanos_to_usd(row.cost_nanos))
    assert lines == [f"llmspend · this cell: 1 call, {cost}"]

    def said(line: str) -> str:
        with capture_output() as cap:
            kernel.run_cell(line, store_history=False)
        shown = "".join(o.data.get("text/plain", "") for o in cap.outputs)
        return cap.stdout + cap.stderr + shown

    last = said("%spend last 3")
    assert "(gateway)" in last and "gpt-4o-mini" in last and "acme/nostore/nora" in last, last
    status = said("%budget status")
    assert "acme/nostore/nora" in status and "$5" in status, status
    assert "acme/nostore/nora" in said("%budget list")
    context = said("%spend context")
    assert "charged to org=acme project=nostore user=nora" in context, context
    assert "exported 1 calls" in said(f"%spend export {tmp_path / 'nora.csv'}")
    assert tracker.opened_store() is None  # still none: every answer was the gateway's
    assert not (tmp_path / "kernel.sqlite").exists()  # the configured store was never made


def test_the_gateway_is_recognised_by_any_name_of_the_loopback(
    stack: tuple[Sim, Gateway], kernel: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LLMSPEND_GATEWAY_URL says localhost, the SDK's base URL 127.0.0.1: the same gateway,
    so the call is still recorded once, there, and not in the kernel's store as well."""
    _sim, gateway = stack
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", gateway.url.replace("127.0.0.1", "localhost"))
    _chat(kernel, gateway, gateway.new_key("acme", "churn", "lou"))
    assert len(gateway.rows("user_name = :u", u="lou")) == 1
    assert llmspend.records().empty


def test_install_takes_the_gateway_url_as_docs_team_md_shows(tmp_path: Path) -> None:
    """``llmspend.install(gateway_url=...)`` (documented; it was a TypeError) sets team mode
    like LLMSPEND_GATEWAY_URL; ``set_gateway(None)`` goes back to the environment's."""
    from llmspend.dialects import hosts

    try:
        llmspend.install(f"sqlite:///{tmp_path / 'k.sqlite'}", gateway_url="http://localhost:8780")
        assert hosts.gateway_bound_url("http://127.0.0.1:8780/openai/v1/chat/completions")
        assert not hosts.gateway_bound_url("http://127.0.0.1:8781/openai/v1/chat/completions")
    finally:
        hosts.set_gateway(None)
        llmspend.uninstall()
