"""The JupyterLab extension in a real JupyterLab and headless Chromium.

A store with budgets for acme/churn/ana and $4 of history; JupyterLab runs with that
store and context. The meter must show the headline budget, change after a notebook cell
makes a call against the simulated provider, announce the threshold it crossed as a
notification, and open the panel, where the alert can be acknowledged. Then budgets
managed from the panel: an owner creates, edits and deletes them through its form (with
inline errors), and a member on a read-only server (``LLMSpendLab.read_only``) over the
same store sees them and cannot change them. Screenshots go to ``artifacts/extension/``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import sys
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import llmspend
from tests.labserver import LabServer, chromium, open_notebook, require_browser, run_all_cells

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "extension"
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.slow


def require_extension() -> None:
    """The extension must be built and installed (``make extension``): skip without it,
    fail under CI."""
    labext = Path(sys.prefix, "share", "jupyter", "labextensions", "llmspend-jupyterlab")
    reason = None
    if importlib.util.find_spec("llmspend_jupyterlab") is None:
        reason = "llmspend_jupyterlab is not installed (make extension)"
    elif not (labext / "package.json").is_file():
        reason = f"the labextension is not built/installed at {labext} (make extension)"
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI builds the extension before the tests: {reason}")
    pytest.skip(reason)


def notebook(sim_url: str) -> dict[str, Any]:
    """A notebook whose one cell makes a $1.0002 gpt-4o call through the simulator."""
    source = "\n".join(
        [
            "import llmspend, openai",
            "llmspend.install()  # the store and context come from the server's environment",
            f"client = openai.OpenAI(api_key='sim', base_url='{sim_url}', max_retries=0)",
            "reply = client.chat.completions.create(",
            "    model='gpt-4o', max_tokens=20,",
            "    messages=[{'role': 'user', 'content': '#sim:tokens=400000 a long prompt'}])",
            "print('cost', llmspend.records().iloc[-1]['cost_usd'])",
        ]
    )
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "spend",
                "metadata": {},
                "outputs": [],
                "source": source,
            }
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """acme (org, $100/month), acme/churn (project, $10/month), acme/ana (user, $50/month),
    all soft, and $4.00 of acme/churn/ana calls today."""
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    set_tracker(Tracker(url, org="acme", project="churn", user="ana"))
    llmspend.set_budget("org", "acme", "100", "month", mode="soft")
    llmspend.set_budget("project", "acme/churn", "10", "month", mode="soft")
    llmspend.set_budget("user", "acme/ana", "50", "month", mode="soft")
    now = dt.datetime.now(dt.UTC)
    llmspend.ingest(
        [
            {"ts": now, "provider": "openai", "model": "gpt-4o-mini", "cost_usd": cost}
            for cost in ("2.50", "1.25", "0.25")
        ]
    )
    yield url
    set_tracker(None)
    forget_store(url)


def decline_news(lab: LabServer) -> None:
    """Answer JupyterLab's "notified about official Jupyter news?" prompt ahead (no)."""
    lab.api(
        "/lab/api/settings/@jupyterlab/apputils-extension:notification",
        method="PUT",
        body={"raw": json.dumps({"fetchNews": "false", "checkForUpdates": False})},
    )


@contextmanager
def lab_page(lab: LabServer, browser: Any, failure: str, height: int = 1000) -> Iterator[Any]:
    """A new page (1400 x ``height``) for ``lab``, its news prompt declined ahead; an error
    inside leaves ``ARTIFACTS/<failure>.png`` and prints the end of the server's log."""
    decline_news(lab)
    page = browser.new_page(viewport={"width": 1400, "height": height})
    page.set_default_timeout(TIMEOUT_MS)
    try:
        yield page
    except Exception:
        page.screenshot(path=str(ARTIFACTS / f"{failure}.png"))
        print(lab.log_tail(80))
        raise


def wait_meter(page: Any, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#llmspend-meter')?.textContent || '') === t",
        arg=text,
        timeout=TIMEOUT_MS,
    )


def test_meter_panel_and_notification_in_jupyterlab(tmp_path: Path, store: str, sim: Any) -> None:
    require_browser()
    require_extension()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root"
    root.mkdir()
    (root / "spend.ipynb").write_text(json.dumps(notebook(sim.openai_base_url)))
    env = {
        "LLMSPEND_DATABASE_URL": store,
        "LLMSPEND_ORG": "acme",
        "LLMSPEND_PROJECT": "churn",
        "LLMSPEND_USER": "ana",
    }
    with LabServer(root, env=env) as lab, chromium() as browser:
        # the routes answer with the token, and the same numbers the meter will show
        status = lab.api("/llmspend/status")
        assert status["headline"]["budget"] == "acme/churn"
        assert status["headline"]["spent_usd"] == "4"

        with lab_page(lab, browser, "failure", height=900) as page:
            open_notebook(page, lab, "spend.ipynb")
            wait_meter(page, "$4.00 · 40 % of acme/churn month")
            meter = page.locator("#llmspend-meter")
            assert meter.get_attribute("data-level") == "ok"
            assert "acme/churn/ana" in (meter.get_attribute("title") or "")
            page.screenshot(path=str(ARTIFACTS / "1-meter.png"))

            # a call in the notebook: the meter follows and the 50 % alert is announced
            run_all_cells(page)
            outputs = page.locator(".jp-OutputArea-output").all_text_contents()
            assert any(o.startswith("cost ") for o in outputs), outputs
            project = llmspend.budget_status("project", "acme/churn")[0]
            assert 50 <= project.percent_used < 51
            spent = f"${project.spent_usd:,.2f}"
            wait_meter(page, f"{spent} · 50 % of acme/churn month")
            toast = page.locator(".Toastify__toast", has_text="acme/churn reached 50 %")
            toast.first.wait_for(state="visible")
            assert "$10.00" in toast.first.inner_text()
            assert page.locator(".Toastify__toast", has_text="reached").count() == 1
            page.wait_for_function(  # slid in completely: the screenshot shows all of it
                """() => [...document.querySelectorAll('.Toastify__toast')].every(
                    t => t.getBoundingClientRect().right <= window.innerWidth)"""
            )
            page.screenshot(path=str(ARTIFACTS / "2-notification.png"))
            alerts = llmspend.alerts()
            assert list(alerts["threshold"]) == [0.5] and not alerts["acknowledged"].any()

            # the meter opens the panel: budgets per level, spend, and the alert
            meter.click()
            panel = page.locator("#llmspend-panel")
            panel.wait_for(state="visible")
            budgets = panel.locator("[data-llmspend=budget]")
            budgets.nth(2).wait_for()
            assert [budgets.nth(i).get_attribute("data-budget") for i in range(3)] == [
                "org:acme",
                "project:acme/churn",
                "user:acme/ana",
            ]
            churn = panel.locator("[data-budget='project:acme/churn']")
            assert f"{spent} of $10.00" in churn.inner_text()
            panel.locator("[data-llmspend=period]", has_text=spent).wait_for()
            panel.locator("[data-llmspend=top-model]", has_text="gpt-4o-mini · $4.00").wait_for()
            ack = panel.locator("[data-llmspend=ack]")
            ack.wait_for()
            page.screenshot(path=str(ARTIFACTS / "3-panel.png"))

            ack.click()  # the only write: through the authenticated, XSRF-checked POST
            panel.locator(".jp-LLMSpendPanel-acked").wait_for()
            assert llmspend.alerts()["acknowledged"].all()
            toast.first.wait_for(state="detached")  # its notification is closed too
            page.screenshot(path=str(ARTIFACTS / "4-acknowledged.png"))

            # past the warning threshold (80 %) the meter turns amber
            llmspend.ingest(
                [{"ts": dt.datetime.now(dt.UTC), "provider": "openai", "model": "gpt-4o",
                  "cost_usd": "3.50"}]
            )  # fmt: skip
            page.evaluate("() => window.jupyterapp.commands.execute('llmspend:refresh')")
            wait_meter(page, "$8.50 · 85 % of acme/churn month")
            assert meter.get_attribute("data-level") == "warning"
            page.screenshot(path=str(ARTIFACTS / "5-warning.png"))


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[str]:
    """A SQLite store with no budget yet (this process's tracker uses it too)."""
    from llmspend.store.engine import forget_store
    from llmspend.tracker import Tracker, set_tracker

    url = f"sqlite:///{tmp_path / 'budgets.sqlite'}"
    set_tracker(Tracker(url, org="acme", project="churn", user="ana"))
    yield url
    set_tracker(None)
    forget_store(url)


def fill_form(form: Any, **fields: str) -> None:
    """Fill the panel's budget form in the order given: a choice for scope, period and mode,
    text for the rest."""
    for field, value in fields.items():
        box = form.locator(f"[data-field={field}]")
        if field in ("scope", "period", "mode"):
            box.select_option(value)
        else:
            box.fill(value)


def budget_row(panel: Any, budget: str, limit: str) -> Any:
    """The panel's row for ``budget`` (``scope:name``), once it shows ``limit``."""
    row = panel.locator(f"[data-def='{budget}']")
    row.locator("[data-llmspend=def-limit]", has_text=limit).wait_for()
    return row


def create_churn_budget(panel: Any, mode: str) -> tuple[Any, Any]:
    """Through the panel's form, a ``mode`` budget of $12.50 a week for project acme/churn
    (thresholds 50 and 90 %, Europe/Berlin): listed with its mode and time zone, and in the
    status part of the panel (it applies to the user). Returns the form and the row."""
    form = panel.locator("[data-llmspend=budget-form]")
    form.wait_for()
    fill_form(
        form,
        scope="project",
        name="acme/churn",
        limit="12.50",
        period="week",
        mode=mode,
        thresholds="50, 90",
        timezone="Europe/Berlin",
    )
    form.locator("[data-llmspend=save]").click()
    row = budget_row(panel, "project:acme/churn", "$12.50 per week")
    assert mode in row.inner_text() and "Europe/Berlin" in row.inner_text()
    panel.locator("[data-llmspend=budget][data-budget='project:acme/churn']").wait_for()
    return form, row


def assert_read_only(panel: Any) -> None:
    """The panel says it is read-only and has no form, edit, delete or save control."""
    panel.locator("[data-llmspend=read-only]").wait_for()
    for control in ("budget-form", "edit", "delete", "save"):
        assert panel.locator(f"[data-llmspend={control}]").count() == 0, control


def open_panel(page: Any, lab: LabServer) -> Any:
    """Open JupyterLab and the llmspend panel; returns the panel's locator."""
    page.goto(lab.lab_url(), timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => !!window.jupyterapp && !!document.querySelector('#llmspend-meter')"
    )
    page.evaluate("() => window.jupyterapp.commands.execute('llmspend:open-panel')")
    panel = page.locator("#llmspend-panel")
    panel.wait_for(state="visible")
    panel.locator("[data-llmspend=manage] h3").wait_for()
    return panel


def test_an_owner_manages_budgets_from_the_panel_and_a_member_only_sees_them(
    tmp_path: Path, empty_store: str
) -> None:
    require_browser()
    require_extension()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    env = {
        "LLMSPEND_DATABASE_URL": empty_store,
        "LLMSPEND_ORG": "acme",
        "LLMSPEND_PROJECT": "churn",
        "LLMSPEND_USER": "ana",
    }
    # the owner: a single-user server as it comes
    with (
        LabServer(tmp_path / "owner", env=env) as lab,
        chromium() as browser,
        lab_page(lab, browser, "failure-owner") as page,
    ):
        panel = open_panel(page, lab)
        form, row = create_churn_budget(panel, "soft")
        [budget] = llmspend.list_budgets()
        assert (budget.scope, budget.name, budget.limit_usd) == ("project", "acme/churn", 12.5)
        assert (budget.period, budget.mode, budget.timezone) == (
            "week",
            "soft",
            "Europe/Berlin",
        )
        assert [str(t) for t in budget.thresholds] == ["0.5", "0.9"]
        page.screenshot(path=str(ARTIFACTS / "6-budget-created.png"))

        # edit its limit
        row.locator("[data-llmspend=edit]").click()
        assert form.locator("[data-field=name]").is_disabled()
        form.locator("[data-field=limit]").fill("20")
        form.locator("[data-llmspend=save]").click()
        row.locator("[data-llmspend=def-limit]", has_text="$20.00 per week").wait_for()
        assert llmspend.list_budgets()[0].limit_usd == 20

        # a bad value: a clear inline error next to the field, nothing sent
        row.locator("[data-llmspend=edit]").click()
        form.locator("[data-field=limit]").fill("-5")
        form.locator("[data-llmspend=save]").click()
        error = form.locator("[data-error-for=limit]")
        error.wait_for(state="visible")
        assert "greater than $0" in error.inner_text()
        assert form.locator("[data-field=limit]").get_attribute("aria-invalid") == "true"
        page.screenshot(path=str(ARTIFACTS / "7-budget-bad-limit.png"))
        form.locator("[data-llmspend=cancel]").click()
        assert llmspend.list_budgets()[0].limit_usd == 20

        # what only the library can judge comes back as its own message
        fill_form(form, scope="user", name="acme/ana", limit="5", timezone="Mars/Olympus")
        form.locator("[data-llmspend=save]").click()
        failed = form.locator("[data-llmspend=form-error]")
        failed.wait_for(state="visible")
        assert "IANA" in failed.inner_text() and "Mars/Olympus" in failed.inner_text()
        assert [b.name for b in llmspend.list_budgets()] == ["acme/churn"]

        # delete takes a second click, then the budget is gone
        form.locator("[data-field=timezone]").fill("UTC")
        form.locator("[data-llmspend=save]").click()
        temp = panel.locator("[data-def='user:acme/ana']")
        temp.wait_for()
        temp.locator("[data-llmspend=delete]").click()
        temp.locator("[data-llmspend=delete-confirm]").click()
        temp.wait_for(state="detached")
        assert [b.name for b in llmspend.list_budgets()] == ["acme/churn"]

    # a member (bob, in the same project) on a read-only server over the same store
    member_env = env | {"LLMSPEND_USER": "bob"}
    with (
        LabServer(
            tmp_path / "member", env=member_env, extra_args=["--LLMSpendLab.read_only=True"]
        ) as lab,
        chromium() as browser,
    ):
        with lab_page(lab, browser, "failure-member") as page:
            panel = open_panel(page, lab)
            budget_row(panel, "project:acme/churn", "$20.00 per week")
            assert_read_only(panel)
            page.screenshot(path=str(ARTIFACTS / "8-budget-member.png"))
        # and the server refuses the change itself, whatever the page shows
        with pytest.raises(urllib.error.HTTPError) as refused:
            lab.api(
                "/llmspend/budgets",
                method="POST",
                body={"scope": "project", "name": "acme/churn", "limit": "1000"},
            )
        assert refused.value.code == 403
        assert lab.api("/llmspend/budgets")["can_manage"] is False
    assert llmspend.list_budgets()[0].limit_usd == 20
