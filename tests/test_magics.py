"""``%load_ext llmspend``, ``%budget`` and ``%spend`` in one IPython shell per session.

Every subcommand is run as a user types it; every bad input must be a one-line
``UsageError`` (no traceback) and leave the store unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import llmspend
from llmspend.sim import SimServer
from tests.shells import plain_shell


@pytest.fixture(scope="session")
def shell() -> InteractiveShell:
    """The one plain InteractiveShell of the test session (no history database)."""
    return plain_shell()


@pytest.fixture
def ip(shell: InteractiveShell, installed: Any, fresh_sim: SimServer) -> Iterator[InteractiveShell]:
    """The shell with llmspend loaded (on the ``installed`` store) and a client in ``client``."""
    from llmspend.notebook import commands
    from llmspend.notebook.cellcost import cell_cost

    ok(shell, "%load_ext llmspend")
    shell.user_ns["client"] = openai.OpenAI(
        api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0
    )
    shell.user_ns["chat"] = chat_source
    shell.user_ns["llmspend"] = llmspend
    enabled, minimum = cell_cost.enabled, cell_cost.min_usd
    cell_cost.enabled, cell_cost.min_usd = True, Decimal(0)
    yield shell
    cell_cost.enabled, cell_cost.min_usd = enabled, minimum
    commands.default_tags.clear()
    shell.run_cell("%unload_ext llmspend")


def chat_source(client: openai.OpenAI, text: str = "hello there", **kw: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw
    )


def ok(ip: InteractiveShell, cell: str) -> Any:
    """Run ``cell``; it must succeed. Returns the cell's value."""
    result = ip.run_cell(cell, store_history=False)
    assert result.error_before_exec is None, (cell, result.error_before_exec)
    assert result.error_in_exec is None, (cell, result.error_in_exec)
    return result.result


def usage_error(ip: InteractiveShell, cell: str) -> str:
    """Run ``cell``; it must fail with a one-line UsageError and no traceback."""
    with capture_output() as cap:
        result = ip.run_cell(cell, store_history=False)
    err = result.error_in_exec
    assert isinstance(err, UsageError), (cell, err)
    message = str(err)
    assert message and "\n" not in message, message
    assert "Traceback" not in cap.stdout + cap.stderr
    return message


def cell_lines(cap: Any) -> list[str]:
    """The per-cell cost lines displayed while ``cap`` captured."""
    return [
        o.data["text/plain"]
        for o in cap.outputs
        if "llmspend · this cell" in o.data.get("text/plain", "")
    ]


def snapshot() -> tuple[Any, ...]:
    """Everything a bad magic could change."""
    from llmspend.budgets.manage import audit_log
    from llmspend.tracker import get_tracker

    alerts = llmspend.alerts()
    return (
        [(b.scope, b.name, b.limit_usd, b.period, b.mode, b.thresholds, b.timezone)
         for b in llmspend.list_budgets()],
        len(audit_log(get_tracker().store)),
        list(zip(alerts["id"], alerts["acknowledged"], strict=True)),
        len(llmspend.records()),
    )  # fmt: skip


def budgets() -> dict[tuple[str, str], Any]:
    return {(b.scope, b.name): b for b in llmspend.list_budgets()}


# -- loading ---------------------------------------------------------------------------------------


def test_load_twice_is_harmless_and_unload_removes_the_hooks(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    from llmspend.notebook import extension
    from llmspend.tracker import installed_tracker

    llmspend.install(f"sqlite:///{tmp_path / 's.sqlite'}")
    post = shell.events.callbacks["post_run_cell"]
    before = len(post)
    ok(shell, "%load_ext llmspend")
    llmspend.load_ipython_extension(shell)  # a second load, directly
    assert len(post) == before + 1
    assert shell.find_line_magic("budget") is not None
    assert shell.find_line_magic("spend") is not None
    assert installed_tracker() is not None and extension.is_loaded(shell)
    ok(shell, "%unload_ext llmspend")
    assert len(post) == before
    assert installed_tracker() is None and not extension.is_loaded(shell)
    llmspend.unload_ipython_extension(shell)  # unloading twice is harmless too
    ok(shell, "%load_ext llmspend")
    assert installed_tracker() is not None
    ok(shell, "%unload_ext llmspend")


def test_help_shows_the_grammar(ip: InteractiveShell) -> None:
    for magic, words in (
        ("budget", ["set SCOPE NAME LIMIT[/PERIOD]", "--alert", "--tz", "acme/*", "ack"]),
        ("spend", ["context", "last [N]", "cell", "report", "export", "quiet"]),
    ):
        doc = ip.find_line_magic(magic).__doc__
        for word in words:
            assert word in doc, (magic, word)
        with capture_output() as cap:
            ip.run_cell(f"%{magic}?", store_history=False)
        assert "Examples" in cap.stdout


# -- %budget ---------------------------------------------------------------------------------


def test_budget_set_compact_forms(ip: InteractiveShell) -> None:
    with capture_output() as cap:
        ok(ip, "%budget set org acme 500/month")
        ok(ip, "%budget set project acme/churn 100/month --hard --alert 50,80,100")
        ok(ip, "%budget set user acme/ana 5/day --soft")
        ok(ip, "%budget set user acme/* 2/week --tz Europe/Paris --week-start sun --alert none")
        ok(ip, "%budget set project acme/* $1,000 --unpriced allow")
    assert "budget set: project acme/churn: $100.00/month, hard" in cap.stdout
    got = budgets()
    assert got["org", "acme"].limit_usd == 500 and got["org", "acme"].mode == "hard"
    churn = got["project", "acme/churn"]
    assert churn.thresholds == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
    ana = got["user", "acme/ana"]
    assert (ana.limit_usd, ana.period, ana.mode) == (5, "day", "soft")
    default = got["user", "acme/*"]
    assert default.is_default and default.timezone == "Europe/Paris"
    assert default.week_start == 6 and default.thresholds == () and default.period == "week"
    proj_default = got["project", "acme/*"]
    assert proj_default.limit_usd == 1000 and proj_default.period == "month"
    assert proj_default.unpriced_policy == "allow"


def test_budget_update_keeps_other_fields(ip: InteractiveShell) -> None:
    ok(ip, "%budget set project acme/churn 100/month --hard --alert 50,80")
    with capture_output() as cap:
        ok(ip, "%budget update project acme/churn 150")
        ok(ip, "%budget update project acme/churn --soft")
    assert "budget updated" in cap.stdout
    churn = budgets()["project", "acme/churn"]
    assert (churn.limit_usd, churn.period, churn.mode) == (150, "month", "soft")
    assert churn.thresholds == (Decimal("0.5"), Decimal("0.8"))


def test_budget_status_list_history_delete(ip: InteractiveShell) -> None:
    ok(ip, "%budget set org acme 500/month")
    ok(ip, "%budget set project acme/churn 100/month --hard")
    ok(ip, "%budget set user acme/ana 5/day --soft")
    ok(ip, "r = chat(client); r2 = chat(client)")
    spent = sum(r["cost_nanos"] for r in llmspend.tracker.get_tracker().recent)
    table = ok(ip, "%budget status")
    text, page = repr(table), table._repr_html_()
    columns = ("budget", "scope", "mode", "spent", "reserved", "limit", "%", "state", "period end")
    for col in columns:
        assert col in text.splitlines()[1]
        assert f">{col}<" in page
    assert "acme/churn" in text and "$100.00" in text and "$500.00" in text
    frame = table.to_frame()
    assert set(frame["budget"]) == {"acme", "acme/churn", "acme/ana"}
    assert (frame["spent_usd"] == Decimal(spent) / 10**9).all()
    assert len(ok(ip, "%budget status project")) == 1
    one = ok(ip, "%budget status user acme/ana")
    assert one.to_frame()["mode"].tolist() == ["soft"]
    assert "2026" in repr(one) or "20" in repr(one)  # a period end is shown

    listing = ok(ip, "%budget list")
    assert len(listing) == 3 and "acme/ana" in listing._repr_html_()
    assert len(ok(ip, "%budget list user")) == 1

    history = ok(ip, "%budget history project acme/churn")
    assert len(history) == 1 and "$100.00" in repr(history)
    assert history.to_frame()["calls"].tolist() == [2]

    with capture_output() as cap:
        ok(ip, "%budget delete user acme/ana")
    assert "budget deleted: user acme/ana" in cap.stdout
    assert ("user", "acme/ana") not in budgets()
    assert "acme/ana" not in repr(ok(ip, "%budget"))  # bare %budget is status


def test_alerts_and_ack(ip: InteractiveShell) -> None:
    ok(ip, "%budget set project acme/churn 0.00003 --soft --alert 50")
    ok(ip, "chat(client); chat(client)")
    table = ok(ip, "%budget alerts")
    frame = table.to_frame()
    assert len(frame) >= 1 and not frame["acknowledged"].any()
    assert "acme/churn" in repr(table) and "reached 50 %" in repr(table)
    first = int(frame["id"].iloc[0])
    with capture_output() as cap:
        ok(ip, f"%budget ack {first}")
    assert "acknowledged 1 alert" in cap.stdout
    remaining = ok(ip, "%budget alerts").to_frame()
    assert first not in set(remaining["id"])
    with capture_output():
        ok(ip, "%budget ack --all")
    assert len(ok(ip, "%budget alerts")) == 0
    everything = ok(ip, "%budget alerts --all --since 1h")
    assert len(everything) == len(frame) and everything.to_frame()["acknowledged"].all()
    assert len(ok(ip, "%budget alerts --all project acme/churn")) == len(frame)


BAD_BUDGET_INPUTS = [
    ("%budget set project acme/churn -5/month", "greater than 0"),
    ("%budget set project acme/churn 0/month", "greater than 0"),
    ("%budget set project acme/churn nan", "finite"),
    ("%budget set project acme/churn abc/month", "amount of USD"),
    ("%budget set project acme/churn /month", "LIMIT"),
    ("%budget set project acme/churn 5/fortnight", "unknown period"),
    ("%budget set projects acme/churn 5", "unknown budget scope"),
    ("%budget set project acme 5", "org/project"),
    ("%budget set user a/b/c/d 5", "org/user"),
    ("%budget set org acme 5 --tz Mars/Olympus", "time zone"),
    ("%budget set org acme 5 --alert 50,150", "(0, 100]"),
    ("%budget set org acme 5 --alert lots", "percentages"),
    ("%budget set org acme 5 --hard --soft", "not both"),
    ("%budget set org acme 5 --week-start someday", "--week-start"),
    ("%budget set org acme 5 --unpriced maybe", "invalid choice"),
    ("%budget set org acme 5 --webhook ftp://x", "got a URL of scheme 'ftp'"),
    ("%budget set org acme 5 --webhook notaurl", "got text that is not a URL"),  # was ':///***'
    ("%budget set org acme", "usage: %budget set"),
    ("%budget set org acme 5 extra", "usage: %budget set"),
    ("%budget set org acme 5 --bogus", "unrecognized arguments"),
    ("%budget update org nobody 5", "no org nobody budget"),
    ("%budget update org acme", "nothing to change"),
    ("%budget status --hard", "does not take --hard"),
    ("%budget status planet", "unknown budget scope"),
    ("%budget status project acme/nothing", "no project budget"),
    ("%budget list everything", "unknown budget scope"),
    ("%budget history project", "usage: %budget history"),
    ("%budget history project acme/nothing", "no project acme/nothing budget"),
    ("%budget delete org nobody", "no org nobody budget"),
    ("%budget delete org", "usage: %budget delete"),
    ("%budget alerts --since yesterdayish", "cannot parse"),
    ("%budget ack", "usage: %budget ack"),
    ("%budget ack x", "whole numbers"),
    ("%budget ack 999999", "no alert with id 999999"),
    ("%budget ack 1 --all", "not both"),
    ("%budget frobnicate", "unknown %budget command"),
]


@pytest.mark.parametrize(("cell", "expected"), BAD_BUDGET_INPUTS)
def test_bad_budget_input_is_a_usage_error_and_changes_nothing(
    ip: InteractiveShell, cell: str, expected: str
) -> None:
    ok(ip, "%budget set org acme 500/month --alert 50,80")
    ok(ip, "%budget set project acme/churn 0.00003 --soft --alert 50")
    ok(ip, "chat(client)")  # an unacknowledged alert exists
    before = snapshot()
    message = usage_error(ip, cell)
    assert expected in message, message
    assert snapshot() == before


def test_hard_budget_refusal_is_the_cells_error(ip: InteractiveShell) -> None:
    ok(ip, "%budget set project acme/churn 0.00001/month --hard")
    with capture_output() as cap:
        result = ip.run_cell("resp = chat(client)", store_history=False)
    err = result.error_in_exec
    assert isinstance(err, llmspend.BudgetExceeded)
    assert "acme/churn" in str(err) and "Nothing was sent" in str(err)
    assert "resp" not in ip.user_ns
    (line,) = cell_lines(cap)  # the cell line still says what happened
    assert "1 call (1 refused), $0" in line
    rows = llmspend.records()
    assert rows["status"].tolist() == ["refused"]


# -- %spend ----------------------------------------------------------------------------------


def test_spend_context_sets_defaults_and_tags(ip: InteractiveShell) -> None:
    with capture_output() as cap:
        ok(ip, "%spend context --org globex --project 'Q4 plan' --user bo --tag exp=42 --tag t=x")
    assert "org=globex project=Q4 plan user=bo" in cap.stdout and "exp=42" in cap.stdout
    ok(ip, "chat(client)")
    ok(ip, "with llmspend.attribute(tags={'exp': 'inner'}): chat(client)")
    rows = llmspend.records()
    assert set(rows["org"]) == {"globex"} and set(rows["project"]) == {"Q4 plan"}
    assert rows["tags"].tolist() == [{"exp": "42", "t": "x"}, {"exp": "inner", "t": "x"}]
    with capture_output() as cap:
        ok(ip, "%spend context --clear-tags")
        ok(ip, "%spend")  # bare %spend shows the context
    assert "tags" not in cap.stdout.splitlines()[-1]
    ok(ip, "chat(client)")
    assert llmspend.records()["tags"].tolist()[-1] == {}


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("%spend context --user a/b", "user must be a name"),
        ("%spend context --tag novalue", "KEY=VALUE"),
        ("%spend context extra", "usage: %spend context"),
        ("%spend context --by model", "does not take --by"),
        ("%spend last -3", "whole number"),
        ("%spend last 0", "at least 1"),
        ("%spend last 1 2", "usage: %spend last"),
        ("%spend cell now", "usage: %spend cell"),
        ("%spend report --since yesterdayish", "cannot parse"),
        ("%spend report --by ,", "--by takes"),
        ("%spend export", "usage: %spend export"),
        ("%spend export out.txt", ".csv or .parquet"),
        ("%spend export /no/such/dir/out.csv", "no such directory"),
        ("%spend export out.csv --since later", "cannot parse"),
        ("%spend quiet maybe", "on|off"),
        ("%spend quiet --min lots", "amount of USD"),
        ("%spend launch", "unknown %spend command"),
    ],
)
def test_bad_spend_input_is_a_usage_error(ip: InteractiveShell, cell: str, expected: str) -> None:
    from llmspend.tracker import get_tracker

    defaults = get_tracker().defaults
    before = snapshot()
    message = usage_error(ip, cell)
    assert expected in message, message
    assert snapshot() == before and get_tracker().defaults == defaults


def test_spend_last_and_cell(ip: InteractiveShell) -> None:
    assert len(ok(ip, "%spend last")) == 0
    ok(ip, "for i in range(3): chat(client, f'question {i}')")
    with capture_output() as cap:
        ok(ip, "%spend cell")
    assert "3 calls" in cap.stdout and "gpt-4o-mini × 3" in cap.stdout
    table = ok(ip, "%spend last 2")
    assert len(table) == 2
    text = repr(table)
    for col in ("time", "model", "input", "output", "cost", "latency", "status"):
        assert col in text
    recent = list(llmspend.tracker.get_tracker().recent)[-2:]
    frame = table.to_frame()
    assert frame["cost_usd"].tolist() == [Decimal(r["cost_nanos"]) / 10**9 for r in recent]
    assert frame["input_tokens"].tolist() == [r["input_tokens"] for r in recent]
    assert "gpt-4o-mini" in table._repr_html_() and " ms" in text
    assert len(ok(ip, "%spend last")) == 3


def test_cell_cost_line(ip: InteractiveShell) -> None:
    ok(ip, "%budget set project acme/churn 100/month --hard")
    with capture_output() as cap:
        ok(ip, "chat(client); chat(client)")
    lines = [o for o in cap.outputs if "llmspend · this cell" in o.data.get("text/plain", "")]
    assert len(lines) == 1
    text = lines[0].data["text/plain"]
    total = Decimal(sum(r["cost_nanos"] for r in llmspend.tracker.get_tracker().recent)) / 10**9
    assert text.startswith(f"llmspend · this cell: 2 calls, ${total:.2g}".replace("e-05", ""))
    assert "acme/churn: <0.1 % of $100/month" in text
    assert "llmspend-cell-cost" in lines[0].data["text/html"]
    with capture_output() as cap:
        ok(ip, "x = 1")  # no calls: no line
    assert not cap.outputs and "llmspend" not in cap.stdout

    with capture_output() as cap:
        ok(ip, "%spend quiet on")
        ok(ip, "chat(client)")
    assert "off (quiet)" in cap.stdout
    assert not cell_lines(cap)
    with capture_output() as cap:
        ok(ip, "%spend quiet off --min 1")
        ok(ip, "chat(client)")  # cheaper than $1: hidden
    assert not cell_lines(cap)
    with capture_output() as cap:
        ok(ip, "%spend quiet --min 0")
        ok(ip, "chat(client)")
    assert cell_lines(cap)


def test_cell_cost_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmspend.notebook.cellcost import CellCost

    monkeypatch.setenv("LLMSPEND_CELL_COST", "off")
    monkeypatch.setenv("LLMSPEND_CELL_COST_MIN", "0.5")
    c = CellCost()
    assert not c.enabled and c.min_usd == Decimal("0.5")
    monkeypatch.setenv("LLMSPEND_CELL_COST", "on")
    monkeypatch.setenv("LLMSPEND_CELL_COST_MIN", "junk")
    c = CellCost()
    assert c.enabled and c.min_usd == 0


def test_spend_report(ip: InteractiveShell) -> None:
    ok(ip, "chat(client); chat(client)")
    ok(
        ip,
        "client.chat.completions.create(model='gpt-4o', messages=[{'role':'user','content':'x'}])",
    )
    with capture_output() as cap:
        frame = ok(ip, "%spend report --by model --since 7d")
    assert isinstance(frame, pd.DataFrame)
    by_model = dict(zip(frame["model"], frame["cost_usd"], strict=True))
    rec = llmspend.records()
    for model, cost in rec.groupby("model")["cost_usd"].sum().items():
        assert by_model[model] == cost
    charts = [o for o in cap.outputs if "image/svg+xml" in o.data]
    assert len(charts) == 1
    assert "<svg" in charts[0].data["image/svg+xml"] and "gpt-4o" in charts[0].data["image/svg+xml"]
    assert "image/png" in charts[0].data
    assert not any("vnd.vegalite" in k for o in cap.outputs for k in o.data)  # offline only
    users = ok(ip, "%spend report --by user --since 1d --model gpt-4o")
    assert users["user"].tolist() == ["ana"] and users["calls"].tolist() == [1]
    with capture_output() as cap:
        none = ok(ip, "%spend report --since 1d --user nobody")
    assert len(none) == 0 and "no calls since 1d match" in cap.outputs[0].data["text/plain"]


def test_spend_report_by_tag(ip: InteractiveShell) -> None:
    ok(ip, "%spend context --tag team=ml")
    ok(ip, "chat(client)")
    ok(ip, "%spend context --clear-tags")
    ok(ip, "chat(client)")
    with capture_output() as cap:
        frame = ok(ip, "%spend report --by tag:team --since 1h")
    assert dict(zip(frame["tag:team"], frame["calls"], strict=True)) == {"ml": 1, None: 1}
    svg = next(o.data["image/svg+xml"] for o in cap.outputs if "image/svg+xml" in o.data)
    assert "Spend by tag:team" in svg and "(none)" in svg


def test_a_new_store_mid_session_keeps_the_cell_line(ip: InteractiveShell, tmp_path: Path) -> None:
    from llmspend.store.engine import forget_store

    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    ok(ip, f"llmspend.install({url!r})")
    try:
        with capture_output() as cap:
            ok(ip, "chat(client)")
        (line,) = cell_lines(cap)
        assert line.startswith("llmspend · this cell: 1 call")
        assert len(llmspend.records()) == 1  # recorded in the new store
    finally:
        forget_store(url)


def test_spend_export_csv_and_parquet(ip: InteractiveShell, tmp_path: Path) -> None:
    ok(ip, "%spend context --tag run=7")
    ok(ip, "chat(client); chat(client)")
    expected = llmspend.records()
    csv, parquet = tmp_path / "spend.csv", tmp_path / "spend.parquet"
    with capture_output() as cap:
        ok(ip, f"%spend export {csv}")
        ok(ip, f"%spend export {parquet} --since 1h --user ana")
    assert "exported 2 calls" in cap.stdout and str(csv) in cap.stdout
    back = pd.read_csv(csv, dtype={"cost_usd": str})
    assert [Decimal(c) for c in back["cost_usd"]] == expected["cost_usd"].tolist()
    assert back["tags"].tolist() == ['{"run": "7"}'] * 2
    pq = pd.read_parquet(parquet)
    assert [Decimal(c) for c in pq["cost_usd"]] == expected["cost_usd"].tolist()
    with capture_output() as cap:
        ok(ip, f"%spend export {tmp_path / 'none.csv'} --user nobody")
    assert "exported 0 calls" in cap.stdout
    assert not list(tmp_path.glob(".*.tmp"))


def test_magic_commands_are_plain_functions(installed: Any) -> None:
    """The functions behind the magics work without IPython's parsing."""
    from llmspend.notebook import commands

    note = commands.budget_set("project", "acme/churn", "10", "week", mode="soft")
    assert "acme/churn: $10.00/week, soft" in note.text
    assert len(commands.budget_status()) == 1
    assert "no LLM calls" in commands.spend_cell().text or "no cell" in commands.spend_cell().text
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    assert len(commands.budget_alerts(past, include_acknowledged=True)) == 0


def test_spend_export_writes_through_a_symlink_and_into_a_pipe(
    ip: InteractiveShell, tmp_path: Path
) -> None:
    import os
    import threading

    ok(ip, "chat(client)")
    real = tmp_path / "2026-12.csv"
    real.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(real.name)
    ok(ip, f"%spend export {link}")
    assert link.is_symlink() and os.readlink(link) == real.name  # still a link
    assert real.read_text().startswith("id,ts,")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    ok(ip, f"%spend export {fifo}")
    reader.join(timeout=120)
    assert got and got[0] == real.read_bytes()
    assert fifo.is_fifo()  # not replaced by a regular file


def test_spend_export_keeps_a_files_mode_and_appends_to_a_stdout_file(
    ip: InteractiveShell, installed: Any, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    ok(ip, "chat(client)")
    report = tmp_path / "private.csv"
    report.write_text("old\n")
    report.chmod(0o600)
    ok(ip, f"%spend export {report}")
    assert report.read_text().startswith("id,ts,")
    assert report.stat().st_mode & 0o777 == 0o600  # was 0644 (the umask's) after export
    # a process whose stdout is a file opened to append: /dev/stdout is written into it
    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    code = (
        "import sys, llmspend; from llmspend.exchange import write_records; "
        "write_records(llmspend.records(), '/dev/stdout', 'csv')"
    )
    env = {**os.environ, "LLMSPEND_DATABASE_URL": installed.store.url}
    with open(log, "ab") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, env=env, check=True, timeout=120)
    text = log.read_text()
    assert text.startswith("earlier line\nid,ts,"), text[:200]
    assert text.count("\n") == 3  # the earlier line, the header, one call
