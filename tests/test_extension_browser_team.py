"""Budgets managed from the JupyterLab panel in team mode (issue 25), in a real browser.

A real gateway on PostgreSQL, whose configuration makes ana the owner of acme/churn; bob
is only a member. Each opens JupyterLab on a server of their own whose environment holds
``LLMSPEND_GATEWAY_URL`` and their own gateway key (and a local store the server must never
touch). ana creates a project budget from the panel's form and edits it: it is listed, it
lands in the gateway's store, the audit names ana; a budget she does not own is refused
with the gateway's message, and the org's budget an admin sets is listed for her without
controls. bob sees both budgets with no create/edit/delete controls, and his forced writes
to the Lab route are refused (``403``) and change nothing. Screenshots go to
``artifacts/extension/``.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmspend.budgets import manage
from llmspend.store.engine import forget_store, open_store
from tests.labserver import LabServer, chromium, require_browser
from tests.pgserver import PgServer
from tests.test_extension_browser import (
    ARTIFACTS,
    assert_read_only,
    budget_row,
    create_churn_budget,
    fill_form,
    lab_page,
    open_panel,
    require_extension,
)
from tests.test_gateway import Gateway, sim_and_gateway

if not os.environ.get("CI"):  # CI builds and installs the extension: never skip there
    pytest.importorskip("llmspend_jupyterlab", reason="the extension is not installed")
from llmspend_jupyterlab.budgets import Grants

ROLES = '[roles]\nadmins = ["root"]\n[roles.owners]\n"acme/churn" = ["ana"]\n'


@pytest.fixture
def gateway(tmp_path: Path, pg_server: PgServer) -> Iterator[Gateway]:
    """A gateway on a fresh PostgreSQL database; ana owns acme/churn, root is an admin.
    Its own environment names nobody (``LLMSPEND_USER=admin`` must grant nothing)."""
    db = pg_server.create_database()
    options: dict[str, Any] = {"db": db, "extra": ROLES, "env": {"LLMSPEND_USER": "admin"}}
    try:
        with sim_and_gateway(tmp_path, **options) as (_sim, gw):
            yield gw
    finally:
        forget_store(db)


def lab_env(gw: Gateway, key: str, own_store: str) -> dict[str, str]:
    """A Jupyter server in team mode: the gateway and one user's key. The server's own
    store (``own_store``) must stay untouched; no org/project/user of its own."""
    return {
        "LLMSPEND_GATEWAY_URL": gw.url,
        "LLMSPEND_GATEWAY_KEY": key,
        "LLMSPEND_DATABASE_URL": own_store,
    }


def project_budgets(gw: Gateway) -> list[Any]:
    return [b for b in manage.list_budgets(open_store(gw.db)) if b.scope == "project"]


def actors(gw: Gateway) -> list[tuple[str, str, str]]:
    log = manage.audit_log(open_store(gw.db))
    return [(str(r.actor), str(r.action), str(r.budget)) for r in log.itertuples()]


def test_the_budgets_one_may_change_follow_the_gateways_roles() -> None:
    """What the panel's controls follow: ``Grants`` from a ``whoami`` answer."""
    ana = Grants.from_whoami(
        {"org": "acme", "project": "churn", "user": "ana", "admin": False, "owns": ["acme/churn"]}
    )
    assert ana.any
    assert ana.allows("project", "acme/churn") and ana.allows("user", "acme/churn/bob")
    assert not ana.allows("org", "acme") and not ana.allows("project", "acme/fraud")
    assert not ana.allows("user", "acme/bob")  # an org-wide user budget is the org's
    bob = Grants.from_whoami({"org": "acme", "project": "churn", "user": "bob", "owns": []})
    assert not bob.any and not bob.allows("user", "acme/churn/bob")
    root = Grants.from_whoami({"org": "acme", "project": "churn", "user": "root", "admin": True})
    assert root.any and root.allows("org", "acme")
    olga = Grants.from_whoami({"org": "acme", "project": "x", "user": "olga", "owns": ["acme"]})
    assert olga.allows("org", "acme") and olga.allows("project", "acme/churn")
    assert Grants(everything=True).allows("org", "anything") and not Grants().any
    assert not ana.allows("org", "not a name!")


@pytest.mark.slow
@pytest.mark.postgres
def test_an_owner_sets_a_budget_from_the_panel_and_a_member_only_sees_it(
    tmp_path: Path, gateway: Gateway
) -> None:
    require_browser()
    require_extension()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    own_store = tmp_path / "server-own.sqlite"
    ana_key = gateway.new_key("acme", "churn", "ana")
    bob_key = gateway.new_key("acme", "churn", "bob")
    root_key = gateway.new_key("acme", "churn", "root")

    # ana, owner of acme/churn, on her own server
    env = lab_env(gateway, ana_key, f"sqlite:///{own_store}")
    with LabServer(tmp_path / "ana", env=env) as lab, chromium() as browser:
        listing = lab.api("/llmspend/budgets")
        assert listing["can_manage"] is True
        assert listing["context"] == {"org": "acme", "project": "churn", "user": "ana"}
        with lab_page(lab, browser, "failure-team-owner") as page:
            panel = open_panel(page, lab)
            # listed, and in the status part of the panel (through the gateway)
            form, row = create_churn_budget(panel, "hard")
            page.screenshot(path=str(ARTIFACTS / "team-1-owner-created.png"))

            # on the gateway, with ana as the actor
            [budget] = project_budgets(gateway)
            assert (budget.name, budget.limit_usd, budget.period) == ("acme/churn", 12.5, "week")
            assert (budget.mode, budget.timezone) == ("hard", "Europe/Berlin")
            assert [str(t) for t in budget.thresholds] == ["0.5", "0.9"]
            assert actors(gateway) == [("ana", "create", "project acme/churn")]

            # she changes its limit from the panel too
            row.locator("[data-llmspend=edit]").click()
            form.locator("[data-field=limit]").fill("20")
            form.locator("[data-llmspend=save]").click()
            row.locator("[data-llmspend=def-limit]", has_text="$20.00 per week").wait_for()
            assert project_budgets(gateway)[0].limit_usd == 20
            assert actors(gateway)[-1] == ("ana", "update", "project acme/churn")

            # the org's budget is not ana's: the gateway's refusal, shown in the form
            fill_form(form, scope="org", name="acme", limit="5", timezone="UTC")
            form.locator("[data-llmspend=save]").click()
            failed = form.locator("[data-llmspend=form-error]")
            failed.wait_for(state="visible")
            assert "owner of acme or admin" in failed.inner_text()
            page.screenshot(path=str(ARTIFACTS / "team-2-owner-refused.png"))
            assert [b.scope for b in manage.list_budgets(open_store(gateway.db))] == ["project"]

            # the org's budget, set by an admin: listed for ana, with no controls on it
            made = httpx.post(
                f"{gateway.url}/llmspend/api/v1/budgets",
                json={"scope": "org", "name": "acme", "limit": "500"},
                headers={"authorization": f"Bearer {root_key}"},
                timeout=60,
            )
            assert made.status_code == 200, made.text
            page.evaluate("() => window.jupyterapp.commands.execute('llmspend:refresh')")
            org = budget_row(panel, "org:acme", "$500.00 per month")
            assert org.locator("[data-llmspend=edit], [data-llmspend=delete]").count() == 0
            assert row.locator("[data-llmspend=edit]").count() == 1
            page.screenshot(path=str(ARTIFACTS / "team-3-owner-org-budget.png"))

    # bob, a member of acme/churn, on a server of his own with his own key
    env = lab_env(gateway, bob_key, f"sqlite:///{own_store}")
    with LabServer(tmp_path / "bob", env=env) as lab, chromium() as browser:
        with lab_page(lab, browser, "failure-team-member") as page:
            panel = open_panel(page, lab)
            budget_row(panel, "project:acme/churn", "$20.00 per week")
            panel.locator("[data-def='org:acme']").wait_for()
            panel.locator("[data-llmspend=budget][data-budget='project:acme/churn']").wait_for()
            assert_read_only(panel)
            page.screenshot(path=str(ARTIFACTS / "team-4-member.png"))

        # and the Lab route refuses his writes, whatever the page shows
        listing = lab.api("/llmspend/budgets")
        assert listing["can_manage"] is False
        assert listing["context"]["user"] == "bob"
        for method, body in (
            ("POST", {"scope": "user", "name": "acme/churn/bob", "limit": "1000"}),
            ("PATCH", {"scope": "project", "name": "acme/churn", "limit": "1000000"}),
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                lab.api("/llmspend/budgets", method=method, body=body)
            assert refused.value.code == 403, method
        with pytest.raises(urllib.error.HTTPError) as refused:
            lab.api("/llmspend/budgets?scope=project&name=acme/churn", method="DELETE")
        assert refused.value.code == 403

    # nothing changed on the gateway, and the servers never touched a store of their own
    [budget] = project_budgets(gateway)
    assert (budget.limit_usd, budget.period, budget.mode) == (20, "week", "hard")
    every = manage.list_budgets(open_store(gateway.db))
    assert sorted((b.scope, b.name) for b in every) == [("org", "acme"), ("project", "acme/churn")]
    assert actors(gateway) == [
        ("ana", "create", "project acme/churn"),
        ("ana", "update", "project acme/churn"),
        ("root", "create", "org acme"),
    ]
    assert not own_store.exists()
