"""The Lab extension's budget routes in team mode (issue 25), against a real gateway.

With ``LLMSPEND_GATEWAY_URL`` and ``LLMSPEND_GATEWAY_KEY`` in the Jupyter server's
environment, the routes read and write through the gateway's data API: an owner's key may
manage (``can_manage`` from the gateway's ``whoami``) and a budget created through the Lab
route lands in the gateway's store; a member's key gets ``can_manage`` false and the
gateway's 403 on a change.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pytest_jupyter")
from pytest_jupyter.jupyter_server import *  # noqa: F403

from llmspend.budgets import manage
from llmspend.store.engine import open_store
from tests.test_extension_server import (  # noqa: F401  (fixtures)
    Fetch,
    _no_closed_loop_left_current,
    api,
    jp_server_config,
    server_config,
)
from tests.test_gateway import Gateway, Sim

ROLES = '[roles]\nadmins = ["root"]\n[roles.owners]\n"acme/churn" = ["ana"]\n'


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sim = Sim()
    gw = Gateway(tmp_path_factory.mktemp("labteam"), sim, extra=ROLES)
    try:
        yield gw
    finally:
        gw.stop()
        sim.stop()


def _as(monkeypatch: pytest.MonkeyPatch, gw: Gateway, key: str, tmp: Path) -> None:
    monkeypatch.setenv("LLMSPEND_GATEWAY_URL", gw.url)
    monkeypatch.setenv("LLMSPEND_GATEWAY_KEY", key)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    # the server's own store is never read in team mode: point it somewhere empty
    monkeypatch.setenv("LLMSPEND_DATABASE_URL", f"sqlite:///{tmp / 'server-own.db'}")


def test_an_owner_manages_budgets_through_the_gateway(
    gateway: Gateway,
    api: Fetch,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _as(monkeypatch, gateway, gateway.new_key("acme", "churn", "ana"), tmp_path)
    code, listing = api("budgets")
    assert code == 200, listing
    assert listing["can_manage"] is True
    assert listing["context"] == {"org": "acme", "project": "churn", "user": "ana"}
    body = {"scope": "project", "name": "acme/churn", "limit": "100", "mode": "hard"}
    code, made = api("budgets", method="POST", body=body)
    assert code == 200, made
    assert made["budget"]["limit_usd"] == "100"
    (stored,) = [b for b in manage.list_budgets(open_store(gateway.db)) if b.scope == "project"]
    assert (stored.name, stored.limit_usd) == ("acme/churn", 100)
    log = manage.audit_log(open_store(gateway.db))
    assert list(log[log["budget"] == "project acme/churn"]["actor"]) == ["ana"]
    # an org budget is not ana's to set: the gateway's 403, passed on
    code, refused = api("budgets", method="POST",
                        body={"scope": "org", "name": "acme", "limit": "5"})  # fmt: skip
    assert code == 403, refused
    assert "owner of acme or admin" in refused["message"]


def test_a_member_sees_what_applies_and_cannot_change_it(
    gateway: Gateway,
    api: Fetch,  # noqa: F811  (the fixture imported above)
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    root = gateway.new_key("acme", "churn", "root")
    _as(monkeypatch, gateway, root, tmp_path)
    code, _ = api("budgets", method="POST",
                  body={"scope": "project", "name": "acme/churn", "limit": "100"})  # fmt: skip
    assert code in (200, 400)  # made here, or already made by the owner's test
    _as(monkeypatch, gateway, gateway.new_key("acme", "churn", "bob"), tmp_path)
    code, listing = api("budgets")
    assert code == 200, listing
    assert listing["can_manage"] is False
    assert listing["context"]["user"] == "bob"
    assert {(b["scope"], b["name"]) for b in listing["budgets"]} >= {("project", "acme/churn")}
    for route in ("status", "summary"):  # the meter: bob's context, through the gateway
        code, shown = api(route)
        assert code == 200, (route, shown)
    assert shown["context"] == {"org": "acme", "project": "churn", "user": "bob"}
    code, status = api("status")
    assert ("project", "acme/churn") in {(b["scope"], b["budget"]) for b in status["budgets"]}
    for method, kw in (
        ("POST", {"body": {"scope": "user", "name": "acme/churn/bob", "limit": "1000"}}),
        ("PATCH", {"body": {"scope": "project", "name": "acme/churn", "limit": "1000000"}}),
    ):
        code, refused = api("budgets", method=method, **kw)
        assert code == 403, (method, refused)
        assert "llmspend gateway: bob may not" in refused["message"]
    code, refused = api("budgets", method="DELETE",
                        params={"scope": "project", "name": "acme/churn"})  # fmt: skip
    assert code == 403, refused
    (stored,) = [b for b in manage.list_budgets(open_store(gateway.db)) if b.scope == "project"]
    assert stored.limit_usd == 100
